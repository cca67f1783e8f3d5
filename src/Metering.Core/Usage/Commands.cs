using NodaTime;

namespace Metering.Core.Usage;

/// <summary>An amount of one usage type, as a caller sent it (not yet validated).</summary>
public sealed record UsageRequest(string UsageType, long Amount);

/// <summary>
/// CheckLimit: do these amounts fit, and should they be held? A reserve sent again with the same
/// <paramref name="RequestId"/> returns the hold the first one placed.
/// </summary>
public sealed record CheckLimitCommand(
    string SubjectId,
    IReadOnlyList<UsageRequest> Usage,
    bool Reserve,
    Duration? ReservationTtl,
    string? RequestId = null);

/// <summary>
/// TrackUsage: record what was used, once per idempotency key. <paramref name="RecordedBy"/> names the authenticated
/// caller (its API key or client certificate name); it is stored with the event and is not part of the payload.
/// With a reservation, <paramref name="Final"/> false settles only the amounts recorded and keeps the rest of the hold.
/// </summary>
public sealed record TrackUsageCommand(
    string SubjectId,
    string IdempotencyKey,
    IReadOnlyList<UsageRequest> Usage,
    Instant? OccurredAt,
    string? ReservationId,
    bool Enforce,
    IReadOnlyDictionary<string, string> Attributes,
    string RecordedBy,
    bool Final = true);

/// <summary>SetSubscription: zero values take the defaults (anchor day 1, time zone UTC).</summary>
public sealed record SetSubscriptionCommand(string SubjectId, string PlanId, int BillingAnchorDay, string? TimeZone);

/// <summary>AdjustUsage: a signed correction of one usage type, recorded as its own ledger event.</summary>
public sealed record AdjustUsageCommand(
    string SubjectId,
    string UsageType,
    long Amount,
    string Reason,
    string IdempotencyKey,
    Instant? OccurredAt,
    string RecordedBy);

/// <summary>ResetUsage: zero the current period of one usage type, as a recorded adjustment.</summary>
public sealed record ResetUsageCommand(string SubjectId, string UsageType, string Reason, string IdempotencyKey, string RecordedBy);
