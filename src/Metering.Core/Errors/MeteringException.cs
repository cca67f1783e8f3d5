using System.Globalization;
using System.Text.Json;
using Metering.Core.Limits;

namespace Metering.Core.Errors;

/// <summary>A failure the caller can act on. The gRPC layer maps each subclass to one status code in one place.</summary>
public abstract class MeteringException(string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>Machine-readable reason, UPPER_SNAKE_CASE (google.rpc.ErrorInfo.reason).</summary>
    public abstract string Reason { get; }

    /// <summary>Extra machine-readable facts (google.rpc.ErrorInfo.metadata).</summary>
    public virtual IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>();
}

/// <summary>One invalid request field and why.</summary>
public sealed record FieldViolation(string Field, string Description);

/// <summary>The request is malformed; nothing was changed.</summary>
public sealed class InvalidRequestException(IReadOnlyList<FieldViolation> violations)
    : MeteringException(string.Join("; ", violations.Select(v => $"{v.Field}: {v.Description}")))
{
    public IReadOnlyList<FieldViolation> Violations { get; } = violations;

    public override string Reason => "INVALID_ARGUMENT";
}

/// <summary>An enforced amount does not fit what is left of the limit; nothing was recorded.</summary>
public sealed class LimitExceededException(string usageType, long limit, long remaining, IReadOnlyList<UpgradeOption>? upgradeOptions = null)
    : MeteringException($"Usage type '{usageType}' is over its limit: limit {limit}, remaining {remaining}.")
{
    public string UsageType { get; } = usageType;

    /// <summary>The plans that would have allowed the whole request, in rank order.</summary>
    public IReadOnlyList<UpgradeOption> UpgradeOptions { get; } = upgradeOptions ?? [];

    public override string Reason => "LIMIT_EXCEEDED";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = UpgradeMetadata.With(
        new Dictionary<string, string>
        {
            ["usage_type"] = usageType,
            ["limit"] = limit.ToString(CultureInfo.InvariantCulture),
            ["remaining"] = remaining.ToString(CultureInfo.InvariantCulture),
        },
        upgradeOptions ?? []);
}

/// <summary>An enforced usage type is not in the subject's plan; nothing was recorded.</summary>
public sealed class NotInPlanException(string usageType, string planId, IReadOnlyList<UpgradeOption>? upgradeOptions = null)
    : MeteringException($"Usage type '{usageType}' is not included in plan '{planId}'.")
{
    public string UsageType { get; } = usageType;

    /// <summary>The plans that would have allowed the whole request, in rank order.</summary>
    public IReadOnlyList<UpgradeOption> UpgradeOptions { get; } = upgradeOptions ?? [];

    public override string Reason => "NOT_IN_PLAN";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = UpgradeMetadata.With(
        new Dictionary<string, string>
        {
            ["usage_type"] = usageType,
            ["plan_id"] = planId,
            ["limit"] = "0",
            ["remaining"] = "0",
        },
        upgradeOptions ?? []);
}

/// <summary>
/// How upgrade options travel in <c>google.rpc.ErrorInfo.metadata</c> (a string map): <c>upgrade_options</c> is the
/// plan ids in rank order, comma-separated; <c>upgrade_options_json</c> the full list
/// (<c>[{"plan_id","display_name","rank","limits":{"usage_type":limit}}]</c>). Both are present, possibly empty.
/// </summary>
internal static class UpgradeMetadata
{
    public static Dictionary<string, string> With(Dictionary<string, string> metadata, IReadOnlyList<UpgradeOption> options)
    {
        metadata["upgrade_options"] = string.Join(",", options.Select(o => o.PlanId));
        metadata["upgrade_options_json"] = JsonSerializer.Serialize(options.Select(o => new Dictionary<string, object>
        {
            ["plan_id"] = o.PlanId,
            ["display_name"] = o.DisplayName,
            ["rank"] = o.Rank,
            ["limits"] = o.Limits.ToDictionary(l => l.UsageType, l => l.Limit, StringComparer.Ordinal),
        }));
        return metadata;
    }
}

/// <summary>The idempotency key was already used for a different payload; nothing was recorded.</summary>
public sealed class IdempotencyConflictException(string idempotencyKey)
    : MeteringException($"Idempotency key '{idempotencyKey}' was already used with a different payload.")
{
    public override string Reason => "IDEMPOTENCY_KEY_REUSED";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>
    {
        ["idempotency_key"] = idempotencyKey,
    };
}

/// <summary>A store the call depends on did not answer in time; nothing acknowledged was lost.</summary>
public sealed class StoreUnavailableException(string store, Exception inner)
    : MeteringException($"The {store} store is unavailable: {inner.Message}", inner)
{
    /// <summary>The name of the counter store (Redis).</summary>
    public const string Counter = "counter";

    /// <summary>The name of the ledger (PostgreSQL).</summary>
    public const string Ledger = "ledger";

    public string Store { get; } = store;

    public override string Reason => "STORE_UNAVAILABLE";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>
    {
        ["store"] = store,
    };
}

/// <summary>
/// The usage would take a period total (used plus held) above <see cref="Validation.RequestValidator.MaxPeriodTotal"/>,
/// the ceiling that keeps every sum exact in 64-bit integers and in Lua's doubles; nothing was recorded or held.
/// </summary>
public sealed class TotalCeilingException(string usageType)
    : MeteringException($"Usage type '{usageType}' would exceed the largest period total the service keeps ({Validation.RequestValidator.MaxPeriodTotal.ToString(System.Globalization.CultureInfo.InvariantCulture)}).")
{
    public string UsageType { get; } = usageType;

    public override string Reason => "TOTAL_CEILING_REACHED";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>
    {
        ["usage_type"] = usageType,
        ["max_period_total"] = Validation.RequestValidator.MaxPeriodTotal.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
/// <summary>The named entity does not exist.</summary>
public sealed class NotFoundException(string kind, string id)
    : MeteringException($"There is no {kind} '{id}'.")
{
    public override string Reason => $"{kind.ToUpperInvariant().Replace(' ', '_')}_NOT_FOUND";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>
    {
        [kind.Replace(' ', '_') + "_id"] = id,
    };
}

/// <summary>The change is refused in the current state (e.g. deleting a plan that subscriptions still use).</summary>
public sealed class PreconditionFailedException(string reason, string message, IReadOnlyDictionary<string, string> metadata)
    : MeteringException(message)
{
    public override string Reason { get; } = reason;

    public override IReadOnlyDictionary<string, string> Metadata { get; } = metadata;
}

/// <summary>The subject already has the most live holds allowed; nothing was held. Settle or release one first.</summary>
public sealed class TooManyHoldsException(int live, int max)
    : MeteringException($"The subject has {live.ToString(System.Globalization.CultureInfo.InvariantCulture)} live holds, the most allowed is {max.ToString(System.Globalization.CultureInfo.InvariantCulture)}; settle or release one first.")
{
    public override string Reason => "TOO_MANY_HOLDS";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>
    {
        ["live_holds"] = live.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["max_live_holds"] = max.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}

/// <summary>A CheckLimit request id was used before for other amounts; nothing was held.</summary>
public sealed class RequestIdConflictException(string requestId)
    : MeteringException($"Request id '{requestId}' was already used for a reservation of other amounts.")
{
    public override string Reason => "REQUEST_ID_REUSED";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>
    {
        ["request_id"] = requestId,
    };
}

/// <summary>The subject's subscription kept changing while the call ran; nothing was recorded or held. Retry.</summary>
public sealed class ConcurrentChangeException(string subjectId)
    : MeteringException($"The subscription of '{subjectId}' kept changing while the call ran; nothing was recorded. Retry the call.")
{
    public override string Reason => "SUBSCRIPTION_CHANGING";

    public override IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>
    {
        ["subject_id"] = subjectId,
    };
}
