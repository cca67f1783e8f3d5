using System.Globalization;
using System.Text.RegularExpressions;
using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Periods;
using Metering.Core.Usage;
using NodaTime;

namespace Metering.Core.Validation;

/// <summary>
/// Collects every violation of a request before anything is touched, so a bad call changes nothing
/// and the caller learns about all of its mistakes at once.
/// </summary>
public sealed partial class RequestValidator(PlanCatalog catalog)
{
    public const int MaxSubjectIdLength = 128;
    public const int MaxIdempotencyKeyLength = 256;
    public const int MaxReservationIdLength = 64;
    public const int MaxUsageEntries = 16;
    public const int MaxAttributes = 16;
    public const int MaxAttributeKeyLength = 64;
    public const int MaxAttributeValueLength = 256;
    public const int MaxCatalogNameLength = 64;
    public const int MaxDisplayNameLength = 128;
    public const int MaxUnitLength = 32;
    public const int MaxPlanLimits = 64;
    public const int MaxReasonLength = 512;

    /// <summary>The largest amount one call may carry: far above any real session, far below any overflow.</summary>
    public const long MaxAmount = 1_000_000_000;

    /// <summary>
    /// The largest total (used plus held) one counter may reach in a period, 10^15. Lua numbers are doubles, exact up
    /// to 2^53 (about 9.007 * 10^15); with amounts of at most <see cref="MaxAmount"/>, 16 lines a call and a rebuilt
    /// total summing at most two old periods, every sum the service computes stays exact in Lua and far from the
    /// int64 limit. A TrackUsage or reserving CheckLimit that would pass it is refused (RESOURCE_EXHAUSTED).
    /// </summary>
    public const long MaxPeriodTotal = 1_000_000_000_000_000;

    public static readonly Duration MaxReservationTtl = Duration.FromHours(24);
    public static readonly Duration MaxEventAge = Duration.FromDays(35);
    public static readonly Duration MaxEventSkew = Duration.FromMinutes(5);

    private readonly List<FieldViolation> _violations = [];

    public RequestValidator SubjectId(string field, string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return Add(field, "is required");
        }

        if (value.Length > MaxSubjectIdLength)
        {
            return Add(field, $"must be at most {MaxSubjectIdLength} characters");
        }

        return SubjectIdPattern().IsMatch(value)
            ? this
            : Add(field, "may contain only letters, digits and . _ - : @ + / =");
    }

    public RequestValidator Token(string field, string? value, int maxLength, bool required = true)
    {
        if (string.IsNullOrEmpty(value))
        {
            return required ? Add(field, "is required") : this;
        }

        if (value.Length > maxLength)
        {
            return Add(field, $"must be at most {maxLength} characters");
        }

        return value.Any(c => char.IsControl(c) || char.IsWhiteSpace(c))
            ? Add(field, "must not contain white space or control characters")
            : this;
    }

    public RequestValidator Usage(string field, IReadOnlyList<UsageRequest> usage)
    {
        if (usage.Count == 0)
        {
            return Add(field, "must name at least one usage type");
        }

        if (usage.Count > MaxUsageEntries)
        {
            return Add(field, $"must have at most {MaxUsageEntries} entries");
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < usage.Count; i++)
        {
            var entry = usage[i];
            var entryField = $"{field}[{i}]";
            UsageType($"{entryField}.usage_type", entry.UsageType);
            if (!string.IsNullOrEmpty(entry.UsageType) && !seen.Add(entry.UsageType))
            {
                Add($"{entryField}.usage_type", $"'{entry.UsageType}' appears more than once");
            }

            if (entry.Amount <= 0)
            {
                Add($"{entryField}.amount", "must be positive");
            }
            else if (entry.Amount > MaxAmount)
            {
                Add($"{entryField}.amount", $"must be at most {MaxAmount.ToString(CultureInfo.InvariantCulture)}");
            }
        }

        return this;
    }

    public RequestValidator UsageType(string field, string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return Add(field, "is required");
        }

        return catalog.TryGetUsageType(name, out _)
            ? this
            : Add(field, $"unknown usage type '{Shorten(name)}'; known: {string.Join(", ", catalog.UsageTypes.Select(t => t.Name))}");
    }

    public RequestValidator PlanId(string field, string? planId)
    {
        if (string.IsNullOrEmpty(planId))
        {
            return Add(field, "is required");
        }

        return catalog.TryGetPlan(planId, out _)
            ? this
            : Add(field, $"unknown plan '{Shorten(planId)}'; known: {string.Join(", ", catalog.Plans.Select(p => p.Id))}");
    }

    /// <summary>A plan id or usage type name: lower case letters, digits, _ and -, starting with a letter or digit.</summary>
    public RequestValidator CatalogName(string field, string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return Add(field, "is required");
        }

        return CatalogNamePattern().IsMatch(name)
            ? this
            : Add(field, $"must be 1 to {MaxCatalogNameLength} lower case letters, digits, _ or -, starting with a letter or digit");
    }

    public RequestValidator Text(string field, string? value, int maxLength)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            return Add(field, "is required");
        }

        return value.Length > maxLength || value.Any(char.IsControl)
            ? Add(field, $"must be at most {maxLength} characters, without control characters")
            : this;
    }

    /// <summary>A plan's limits: known usage types, each at most once, each -1 (unlimited) or more.</summary>
    public RequestValidator PlanLimits(string field, IReadOnlyList<LimitRequest> limits)
    {
        if (limits.Count > MaxPlanLimits)
        {
            return Add(field, $"must have at most {MaxPlanLimits} entries");
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < limits.Count; i++)
        {
            UsageType($"{field}[{i}].usage_type", limits[i].UsageType);
            if (!string.IsNullOrEmpty(limits[i].UsageType) && !seen.Add(limits[i].UsageType))
            {
                Add($"{field}[{i}].usage_type", $"'{Shorten(limits[i].UsageType)}' appears more than once");
            }

            if (limits[i].Limit < Limit.Unlimited)
            {
                Add($"{field}[{i}].limit", "must be -1 (unlimited), 0 (not in the plan) or a positive cap");
            }
        }

        return this;
    }

    /// <summary>A signed correction: not zero, and within the amount one call may carry either way.</summary>
    public RequestValidator AdjustmentAmount(string field, long amount)
    {
        if (amount == 0)
        {
            return Add(field, "must not be zero");
        }

        return amount is < -MaxAmount or > MaxAmount
            ? Add(field, $"must be between -{MaxAmount.ToString(CultureInfo.InvariantCulture)} and {MaxAmount.ToString(CultureInfo.InvariantCulture)}")
            : this;
    }

    public RequestValidator BillingAnchorDay(string field, int day) =>
        day is >= 1 and <= 31 ? this : Add(field, "must be between 1 and 31");

    public RequestValidator TimeZone(string field, string timeZone) =>
        TimeZones.TryGet(timeZone, out _) ? this : Add(field, $"unknown IANA time zone '{Shorten(timeZone)}'");

    public RequestValidator ReservationTtl(string field, Duration? ttl)
    {
        if (ttl is not { } value)
        {
            return this;
        }

        return value <= Duration.Zero || value > MaxReservationTtl
            ? Add(field, "must be more than 0 and at most 24h")
            : this;
    }

    /// <summary>Whether an event may occur at <paramref name="occurredAt"/>: at most <see cref="MaxEventAge"/> before <paramref name="now"/> and <see cref="MaxEventSkew"/> after it.</summary>
    public static bool InEventWindow(Instant occurredAt, Instant now) =>
        occurredAt >= now - MaxEventAge && occurredAt <= now + MaxEventSkew;

    public RequestValidator OccurredAt(string field, Instant? occurredAt, Instant now)
    {
        if (occurredAt is not { } value)
        {
            return this;
        }

        if (value < now - MaxEventAge)
        {
            return Add(field, "must be at most 35 days in the past");
        }

        return value > now + MaxEventSkew ? Add(field, "must be at most 5 minutes in the future") : this;
    }

    public RequestValidator Attributes(string field, IReadOnlyDictionary<string, string> attributes)
    {
        if (attributes.Count > MaxAttributes)
        {
            return Add(field, $"must have at most {MaxAttributes} entries");
        }

        foreach (var (key, value) in attributes)
        {
            if (key.Length is 0 or > MaxAttributeKeyLength || !AttributeKeyPattern().IsMatch(key))
            {
                Add(field, $"keys must have 1 to {MaxAttributeKeyLength} characters among letters, digits and . _ -");
                continue;
            }

            if (value.Length > MaxAttributeValueLength)
            {
                Add($"{field}[{key}]", $"must be at most {MaxAttributeValueLength} characters");
            }
            else if (value.Any(char.IsControl) || HasLoneSurrogate(value))
            {
                Add($"{field}[{key}]", "must not contain control characters");
            }
        }

        return this;
    }

    /// <summary>Whether no rule was broken so far.</summary>
    public bool IsValid => _violations.Count == 0;

    /// <summary>Throws <see cref="InvalidRequestException"/> with every violation collected so far.</summary>
    public void ThrowIfInvalid()
    {
        if (_violations.Count > 0)
        {
            throw new InvalidRequestException([.. _violations]);
        }
    }

    /// <summary>Records a violation found outside the checks above.</summary>
    public RequestValidator Add(string field, string description)
    {
        _violations.Add(new FieldViolation(field, description));
        return this;
    }

    private static bool HasLoneSurrogate(string value)
    {
        for (var i = 0; i < value.Length; i++)
        {
            if (char.IsHighSurrogate(value[i]) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(value[i]))
            {
                return true;
            }
        }

        return false;
    }

    private static string Shorten(string value) => value.Length <= 64 ? value : string.Concat(value.AsSpan(0, 64), "…");

    [GeneratedRegex(@"^[A-Za-z0-9._:@+/=\-]+\z", RegexOptions.CultureInvariant)]
    private static partial Regex SubjectIdPattern();

    [GeneratedRegex(@"^[A-Za-z0-9._\-]+\z", RegexOptions.CultureInvariant)]
    private static partial Regex AttributeKeyPattern();
    [GeneratedRegex(@"^[a-z0-9][a-z0-9_\-]{0,63}\z", RegexOptions.CultureInvariant)]
    private static partial Regex CatalogNamePattern();
}
