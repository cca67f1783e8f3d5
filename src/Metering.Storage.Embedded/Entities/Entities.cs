namespace Metering.Storage.Embedded.Entities;

#pragma warning disable CA2227 // EF collections are set by the materializer.

// Instants are stored as Unix ticks (100 ns since 1970-01-01 UTC): SQLite has no timestamp type, and integers
// compare and sum exactly in SQL.

/// <summary>A usage type of the catalog.</summary>
public sealed class UsageTypeRow
{
    public required string Name { get; set; }

    public required string Unit { get; set; }

    /// <summary>"day" or "month".</summary>
    public required string ResetPeriod { get; set; }

    /// <summary>"ledger", "allow" or "deny".</summary>
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

/// <summary>A plan's limit for one usage type; a missing row means "not in the plan".</summary>
public sealed class PlanLimitRow
{
    public required string PlanId { get; set; }

    public required string UsageType { get; set; }

    public long Limit { get; set; }
}

/// <summary>The one row that identifies the catalog and versions it.</summary>
public sealed class CatalogStateRow
{
    public int Id { get; set; }

    public required string CatalogId { get; set; }

    public long Version { get; set; }
}

/// <summary>An audit record of one catalog change.</summary>
public sealed class CatalogChangeRow
{
    public long Id { get; set; }

    public long Version { get; set; }

    public long ChangedAt { get; set; }

    public required string Kind { get; set; }

    public required string Target { get; set; }

    public required string Payload { get; set; }
}

/// <summary>The one row of the sequence every counter version and fence is drawn from.</summary>
public sealed class VersionSequenceRow
{
    public int Id { get; set; }

    /// <summary>The last value drawn.</summary>
    public long Value { get; set; }
}

/// <summary>A subject's subscription.</summary>
public sealed class SubscriptionRow
{
    public required string SubjectId { get; set; }

    public required string PlanId { get; set; }

    public int BillingAnchorDay { get; set; }

    public required string TimeZone { get; set; }

    public long CreatedAt { get; set; }

    public long UpdatedAt { get; set; }

    public long Version { get; set; }
}

/// <summary>An audit record of one subscription change.</summary>
public sealed class SubscriptionChangeRow
{
    public long Id { get; set; }

    public required string SubjectId { get; set; }

    public long Version { get; set; }

    public long ChangedAt { get; set; }

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

    public required string Fingerprint { get; set; }

    public long OccurredAt { get; set; }

    public long RecordedAt { get; set; }

    public string? ReservationId { get; set; }

    public string? RecordedBy { get; set; }

    /// <summary>"usage", "adjustment" or "reset".</summary>
    public required string Kind { get; set; }

    public string? Reason { get; set; }

    /// <summary>The attributes as a JSON object.</summary>
    public required string Attributes { get; set; }

    public List<UsageEventLineRow> Lines { get; set; } = [];
}

/// <summary>One usage type's amount within an event, with the period it counts in.</summary>
public sealed class UsageEventLineRow
{
    public long EventId { get; set; }

    public required string UsageType { get; set; }

    public long Amount { get; set; }

    public required string SubjectId { get; set; }

    public long OccurredAt { get; set; }

    public long PeriodStart { get; set; }
}

/// <summary>The running total of one (subject, usage type, period), with the held amount and version of its counter.</summary>
public sealed class UsageTotalRow
{
    public required string SubjectId { get; set; }

    public required string UsageType { get; set; }

    public long PeriodStart { get; set; }

    public long PeriodEnd { get; set; }

    public long Total { get; set; }

    public long Held { get; set; }

    public long Version { get; set; }
}

/// <summary>A hold: amounts counted against the limits until it is settled, released or expires.</summary>
public sealed class HoldRow
{
    public required string SubjectId { get; set; }

    public required string ReservationId { get; set; }

    public string? RequestId { get; set; }

    /// <summary>The instant whose periods the hold counts in.</summary>
    public long PlacedAt { get; set; }

    /// <summary>When it stops counting, on the ledger's clock.</summary>
    public long ExpiresAt { get; set; }

    public long? EndedAt { get; set; }

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

    public long PeriodStart { get; set; }

    public long PeriodEnd { get; set; }

    /// <summary>What is still held (a partial settle lowers it).</summary>
    public long Amount { get; set; }
}

/// <summary>Something a committed transaction changed that the counters and caches must follow.</summary>
public sealed class OutboxRow
{
    public const string CounterKind = "counter";
    public const string SubscriptionKind = "subscription";
    public const string CatalogKind = "catalog";

    public long Id { get; set; }

    public required string Kind { get; set; }

    public string? SubjectId { get; set; }

    public string? UsageType { get; set; }

    public long? PeriodStart { get; set; }

    public long CreatedAt { get; set; }
}
