namespace Metering.Storage.Postgres.Entities;

#pragma warning disable CA2227 // EF collections are set by the materializer.

/// <summary>A usage type of the catalog.</summary>
public sealed class UsageTypeRow
{
    public required string Name { get; set; }

    public required string Unit { get; set; }

    /// <summary>"day" or "month".</summary>
    public required string ResetPeriod { get; set; }

    /// <summary>"ledger", "allow" or "deny": what a check without a hold does while the counters are unavailable.</summary>
    public string DegradedPolicy { get; set; } = "ledger";
}

/// <summary>A plan of the catalog.</summary>
public sealed class PlanRow
{
    public required string Id { get; set; }

    public required string DisplayName { get; set; }

    public int Rank { get; set; }

    /// <summary>The catalog version of the plan's last change.</summary>
    public long Version { get; set; }

    public List<PlanLimitRow> Limits { get; set; } = [];
}

/// <summary>
/// The one row that identifies the catalog and versions it: every catalog change bumps <see cref="Version"/> in its
/// transaction, which also serializes catalog writers.
/// </summary>
public sealed class CatalogStateRow
{
    public int Id { get; set; }

    /// <summary>Random per database: names the catalog's version key in Redis, so databases sharing a Redis stay apart.</summary>
    public Guid CatalogId { get; set; }

    public long Version { get; set; }
}

/// <summary>An audit record of one catalog change (a plan or usage type written or deleted).</summary>
public sealed class CatalogChangeRow
{
    public long Id { get; set; }

    public long Version { get; set; }

    public DateTime ChangedAt { get; set; }

    /// <summary>"plan_upserted", "plan_deleted" or "usage_type_upserted".</summary>
    public required string Kind { get; set; }

    /// <summary>The plan id or usage type name.</summary>
    public required string Target { get; set; }

    /// <summary>The new state as JSON; empty for a deletion.</summary>
    public required string Payload { get; set; }
}

/// <summary>A plan's limit for one usage type; a missing row means "not in the plan".</summary>
public sealed class PlanLimitRow
{
    public required string PlanId { get; set; }

    public required string UsageType { get; set; }

    public long Limit { get; set; }
}

/// <summary>A subject's subscription.</summary>
public sealed class SubscriptionRow
{
    public required string SubjectId { get; set; }

    public required string PlanId { get; set; }

    public int BillingAnchorDay { get; set; }

    public required string TimeZone { get; set; }

    public DateTime CreatedAt { get; set; }

    public DateTime UpdatedAt { get; set; }

    /// <summary>Grows with every change; caches keep the highest.</summary>
    public long Version { get; set; }
}

/// <summary>An audit record of one subscription change, written in the change's transaction.</summary>
public sealed class SubscriptionChangeRow
{
    public long Id { get; set; }

    public required string SubjectId { get; set; }

    /// <summary>The subscription's version after the change.</summary>
    public long Version { get; set; }

    public DateTime ChangedAt { get; set; }

    /// <summary>"enrolled" or "changed".</summary>
    public required string Kind { get; set; }

    public required string PlanId { get; set; }

    public string? PreviousPlanId { get; set; }

    public int BillingAnchorDay { get; set; }

    public required string TimeZone { get; set; }

    public int? PreviousBillingAnchorDay { get; set; }

    public string? PreviousTimeZone { get; set; }
}

/// <summary>One recorded usage event, unique per (subject, idempotency key).</summary>
public sealed class UsageEventRow
{
    public long Id { get; set; }

    public required string SubjectId { get; set; }

    public required string IdempotencyKey { get; set; }

    /// <summary>SHA-256 of the request payload: tells a retry from a reuse of the key.</summary>
    public required string Fingerprint { get; set; }

    public DateTime OccurredAt { get; set; }

    public DateTime RecordedAt { get; set; }

    public string? ReservationId { get; set; }

    /// <summary>Name of the API key or client certificate that recorded the event; null for events recorded before callers were authenticated.</summary>
    public string? RecordedBy { get; set; }
    /// <summary>"usage", "adjustment" or "reset".</summary>
    public string Kind { get; set; } = "usage";

    /// <summary>Why an adjustment or reset was made; null for usage.</summary>
    public string? Reason { get; set; }

    public Dictionary<string, string> Attributes { get; set; } = [];

    public List<UsageEventLineRow> Lines { get; set; } = [];
}

/// <summary>One usage type's amount within an event, with the period it counts in.</summary>
public sealed class UsageEventLineRow
{
    public long EventId { get; set; }

    public required string UsageType { get; set; }

    public long Amount { get; set; }

    /// <summary>Copied from the event so that period sums need no join.</summary>
    public required string SubjectId { get; set; }

    /// <summary>Copied from the event so that period sums need no join.</summary>
    public DateTime OccurredAt { get; set; }

    public DateTime PeriodStart { get; set; }
}

/// <summary>
/// The running total of one (subject, usage type, period), updated in the event's transaction.
/// <see cref="Version"/> comes from one sequence, so it grows on every change, even across a rebuilt row.
/// </summary>
public sealed class UsageTotalRow
{
    public required string SubjectId { get; set; }

    public required string UsageType { get; set; }

    public DateTime PeriodStart { get; set; }

    public DateTime PeriodEnd { get; set; }

    public long Total { get; set; }

    /// <summary>What live holds held in the period when the row last changed (the cache shows it as reserved).</summary>
    public long Held { get; set; }

    public long Version { get; set; }
}

/// <summary>
/// A hold: amounts a session may use, counted against the limits until it is settled, released or expires. Decided
/// and stored in the subject's lock, so every instance sees every acknowledged hold.
/// </summary>
public sealed class HoldRow
{
    public required string SubjectId { get; set; }

    public required string ReservationId { get; set; }

    /// <summary>The caller's request id: a retried reserve finds its hold by it.</summary>
    public string? RequestId { get; set; }

    /// <summary>The instant whose periods the hold counts in (the deciding instance's clock).</summary>
    public DateTime PlacedAt { get; set; }

    /// <summary>When it stops counting, on the ledger's clock.</summary>
    public DateTime ExpiresAt { get; set; }

    public DateTime? EndedAt { get; set; }

    /// <summary>"settled", "released" or "expired" once ended.</summary>
    public string? EndReason { get; set; }

    public List<HoldLineRow> Lines { get; set; } = [];
}

/// <summary>One usage type's held amount, with the period it counts in.</summary>
public sealed class HoldLineRow
{
    public required string SubjectId { get; set; }

    public required string ReservationId { get; set; }

    public required string UsageType { get; set; }

    public DateTime PeriodStart { get; set; }

    public DateTime PeriodEnd { get; set; }

    /// <summary>What is still held (a partial settle lowers it).</summary>
    public long Amount { get; set; }
}

/// <summary>
/// Something a committed transaction changed that the shared cache must follow, written in that transaction: the
/// cache is brought up to date from it even when the instance that committed dies before it could.
/// </summary>
public sealed class CounterOutboxRow
{
    public const string CounterKind = "counter";
    public const string SubscriptionKind = "subscription";
    public const string CatalogKind = "catalog";

    public long Id { get; set; }

    /// <summary>"counter" (subject, usage type, period), "subscription" (subject) or "catalog".</summary>
    public required string Kind { get; set; }

    public string? SubjectId { get; set; }

    public string? UsageType { get; set; }

    public DateTime? PeriodStart { get; set; }

    public DateTime CreatedAt { get; set; }
}
