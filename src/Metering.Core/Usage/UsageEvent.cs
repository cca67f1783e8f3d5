using Metering.Core.Subscriptions;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>One line of a usage event: an amount counted in one counter's period.</summary>
public readonly record struct UsageLine(CounterKey Key, long Amount);

/// <summary>What a ledger event is.</summary>
public enum UsageEventKind
{
    /// <summary>Recorded by TrackUsage.</summary>
    Usage = 1,

    /// <summary>A signed correction recorded by AdjustUsage.</summary>
    Adjustment = 2,

    /// <summary>Recorded by ResetUsage: the ledger sets its amount to minus the period total, inside its transaction.</summary>
    Reset = 3,
}

/// <summary>
/// A usage event as the ledger records it. <see cref="Calendar"/> is the calendar its periods were computed with;
/// the ledger refuses the event if the subscription's calendar changed meanwhile. <see cref="RecordedBy"/> names the caller.
/// </summary>
public sealed record UsageEvent(
    string SubjectId,
    string IdempotencyKey,
    string Fingerprint,
    Instant OccurredAt,
    Instant RecordedAt,
    BillingCalendar Calendar,
    IReadOnlyList<UsageLine> Lines,
    string? ReservationId,
    IReadOnlyDictionary<string, string> Attributes,
    string RecordedBy,
    UsageEventKind Kind = UsageEventKind.Usage,
    string? Reason = null);

/// <summary>What the ledger did with an event.</summary>
public abstract record RecordOutcome
{
    /// <summary>Committed; the new totals of every counter the event touched, and the lines as recorded
    /// (a reset's amount is only known here).</summary>
    public sealed record Recorded(IReadOnlyList<CounterValue> Totals, IReadOnlyList<UsageLine> Lines) : RecordOutcome;

    /// <summary>The idempotency key was recorded before, with this payload fingerprint; nothing changed.</summary>
    public sealed record AlreadyRecorded(string Fingerprint) : RecordOutcome;

    /// <summary>The subscription's calendar is no longer the event's; nothing changed, recompute the periods.</summary>
    public sealed record CalendarChanged : RecordOutcome;

    /// <summary>A line would take its period total above <see cref="Validation.RequestValidator.MaxPeriodTotal"/>; nothing changed.</summary>
    public sealed record TotalCeilingReached(string UsageType) : RecordOutcome;
}
