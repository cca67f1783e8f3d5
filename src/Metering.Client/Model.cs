namespace Metering.Client;

/// <summary>An amount of one usage type, e.g. 23 of <c>minutes_per_month</c>.</summary>
/// <param name="UsageType">The usage type's name in the catalog.</param>
/// <param name="Amount">From 1 to 10^9.</param>
public sealed record Usage(string UsageType, long Amount);

/// <summary>The verdict on one requested amount.</summary>
public enum Decision
{
    /// <summary>No verdict (a status read without a request, or a newer server value).</summary>
    Unspecified = 0,

    /// <summary>The amount fits, or the limit is unlimited.</summary>
    Allowed = 1,

    /// <summary>The plan includes the usage type, but the amount does not fit what is left in the period.</summary>
    LimitExceeded = 2,

    /// <summary>The plan does not include the usage type (limit 0).</summary>
    NotInPlan = 3,
}

/// <summary>How close a usage type is to its limit, so every screen colours the same usage the same way.</summary>
public enum UsageLevel
{
    /// <summary>Unknown.</summary>
    Unspecified = 0,

    /// <summary>Below 80 % of the limit, or unlimited.</summary>
    Ok = 1,

    /// <summary>From 80 %.</summary>
    Warning = 2,

    /// <summary>From 95 %.</summary>
    Critical = 3,

    /// <summary>Nothing left.</summary>
    Exhausted = 4,
}

/// <summary>What the client does with a check when Metering cannot answer it.</summary>
public enum FailPolicy
{
    /// <summary>Fail open: the check is allowed (and marked degraded).</summary>
    Allow = 0,

    /// <summary>Fail closed: the check is denied (and marked degraded).</summary>
    Deny = 1,
}

/// <summary>One usage type's state in the subject's current period.</summary>
public sealed record LimitStatus
{
    /// <summary>The usage type's name.</summary>
    public required string UsageType { get; init; }

    /// <summary>-1 unlimited, 0 not in the plan.</summary>
    public long Limit { get; init; }

    /// <summary>Recorded in the current period.</summary>
    public long Used { get; init; }

    /// <summary>Held by open reservations.</summary>
    public long Reserved { get; init; }

    /// <summary>What is left; -1 when unlimited.</summary>
    public long Remaining { get; init; }

    /// <summary>Verdict for the amount asked (checks) or for one more unit (reads, tracking).</summary>
    public Decision Decision { get; init; }

    /// <summary>First instant of the current period.</summary>
    public DateTimeOffset? PeriodStart { get; init; }

    /// <summary>First instant of the next period.</summary>
    public DateTimeOffset? ResetsAt { get; init; }

    /// <summary>100 × (used + reserved) / limit.</summary>
    public double PercentUsed { get; init; }

    /// <summary>OK, warning, critical or exhausted.</summary>
    public UsageLevel Level { get; init; }

    /// <summary>True when the plan sets no limit.</summary>
    public bool IsUnlimited => Limit < 0;
}

/// <summary>A plan's limit for one usage type: -1 unlimited, 0 not in the plan.</summary>
public sealed record PlanLimit(string UsageType, long Limit);

/// <summary>A plan that would have allowed the whole denied request, given the current usage.</summary>
public sealed record UpgradeOption(string PlanId, string DisplayName, int Rank, IReadOnlyList<PlanLimit> Limits);

/// <summary>Whether amounts fit a subject's plan, and optionally hold them.</summary>
public sealed record CheckRequest
{
    /// <summary>Creates a check of <paramref name="usage"/> for <paramref name="subjectId"/>.</summary>
    public CheckRequest(string subjectId, params IReadOnlyList<Usage> usage)
    {
        SubjectId = subjectId;
        Usage = usage;
    }

    /// <summary>The subject (user) asked about.</summary>
    public string SubjectId { get; init; }

    /// <summary>The amounts; all must fit.</summary>
    public IReadOnlyList<Usage> Usage { get; init; }

    /// <summary>Hold every amount (all or nothing) when all fit.</summary>
    public bool Reserve { get; init; }

    /// <summary>How long the hold lasts; the server's default (2 h) when null.</summary>
    public TimeSpan? ReservationTtl { get; init; }

    /// <summary>
    /// Identifies a reserve across retries: the same id returns the hold the first call placed. A new one is drawn for
    /// each reserve when null.
    /// </summary>
    public string? RequestId { get; init; }
}

/// <summary>The answer to a check.</summary>
public sealed record CheckResult
{
    /// <summary>True only if every requested amount fits (or, when degraded, the fail policy allowed it).</summary>
    public bool Allowed { get; init; }

    /// <summary>One status per requested usage type; empty when the client answered by its fail policy.</summary>
    public IReadOnlyList<LimitStatus> Limits { get; init; } = [];

    /// <summary>The hold, when one was placed; pass it to tracking or release it.</summary>
    public string? ReservationId { get; init; }

    /// <summary>When the hold stops counting.</summary>
    public DateTimeOffset? ReservationExpiresAt { get; init; }

    /// <summary>The subject's plan; null when the client answered by its fail policy.</summary>
    public string? PlanId { get; init; }

    /// <summary>The catalog version of the plan's last change.</summary>
    public long PlanVersion { get; init; }

    /// <summary>When denied: the plans, in rank order, that would have allowed the request.</summary>
    public IReadOnlyList<UpgradeOption> UpgradeOptions { get; init; } = [];

    /// <summary>
    /// True when the answer is not a full decision of the service: the client could not reach Metering and applied
    /// its fail policy, or the service answered in degraded mode.
    /// </summary>
    public bool Degraded { get; init; }

    /// <summary>Why the answer is degraded (e.g. "Unavailable: …"); null otherwise.</summary>
    public string? DegradedReason { get; init; }
}

/// <summary>What a session used, to record.</summary>
public sealed record TrackRequest
{
    /// <summary>Creates a record of <paramref name="usage"/> for <paramref name="subjectId"/> under <paramref name="idempotencyKey"/>.</summary>
    public TrackRequest(string subjectId, string idempotencyKey, params IReadOnlyList<Usage> usage)
    {
        SubjectId = subjectId;
        IdempotencyKey = idempotencyKey;
        Usage = usage;
    }

    /// <summary>The subject (user).</summary>
    public string SubjectId { get; init; }

    /// <summary>Unique per subject: the same usage tracked twice under one key counts once.</summary>
    public string IdempotencyKey { get; init; }

    /// <summary>The amounts used.</summary>
    public IReadOnlyList<Usage> Usage { get; init; }

    /// <summary>When the usage happened; the time of the call when null (fixed then, so retries carry the same instant).</summary>
    public DateTimeOffset? OccurredAt { get; init; }

    /// <summary>The hold this usage settles, if any.</summary>
    public string? ReservationId { get; init; }

    /// <summary>All or nothing: refused when an amount does not fit. Only for <see cref="IMeteringClient.TrackNowAsync"/>.</summary>
    public bool Enforce { get; init; }

    /// <summary>Free-form context kept with the ledger event.</summary>
    public IReadOnlyDictionary<string, string>? Attributes { get; init; }
}

/// <summary>What <see cref="IMeteringClient.TrackAsync"/> did with a usage record.</summary>
/// <param name="IdempotencyKey">The key the record is delivered under.</param>
/// <param name="Spooled">True when the record is safely in the local spool and will be delivered; false when nothing was spooled: the spool was full (logged and counted), or a session ended with nothing used (its hold was released instead).</param>
public sealed record TrackReceipt(string IdempotencyKey, bool Spooled);

/// <summary>The service's answer to a usage record sent at once.</summary>
/// <param name="Duplicate">True when the key was already recorded with the same payload; nothing counted again.</param>
/// <param name="Limits">Current-period status of each usage type of the record.</param>
public sealed record TrackResult(bool Duplicate, IReadOnlyList<LimitStatus> Limits);

/// <summary>A subject's current standing.</summary>
public sealed record RemainingResult
{
    /// <summary>The subject.</summary>
    public required string SubjectId { get; init; }

    /// <summary>The subject's plan.</summary>
    public required string PlanId { get; init; }

    /// <summary>The catalog version of the plan's last change.</summary>
    public long PlanVersion { get; init; }

    /// <summary>One status per usage type.</summary>
    public IReadOnlyList<LimitStatus> Limits { get; init; } = [];

    /// <summary>True when the service answered in degraded mode (e.g. from its ledger without its cache).</summary>
    public bool Degraded { get; init; }
}
