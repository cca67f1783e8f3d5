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
/// <see cref="ReservationId"/> names the hold it settles: all of it when <see cref="FinalSettle"/>, else only the amounts
/// recorded (the rest stays held). <see cref="EnforcedLimits"/>, when set (one limit per line), makes the event all or
/// nothing: the ledger records it only if every line fits under the subject's lock.
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
    string? Reason = null,
    bool FinalSettle = true,
    IReadOnlyList<long>? EnforcedLimits = null);

/// <summary>What the ledger did with an event.</summary>
public abstract record RecordOutcome
{
    /// <summary>Committed; the new values of every counter the event (and the hold it settled) changed, and the lines
    /// as recorded (a reset's amount is only known here).</summary>
    public sealed record Recorded(CounterChanges Changes, IReadOnlyList<UsageLine> Lines) : RecordOutcome;

    /// <summary>Enforced, and a line did not fit: the used and held amounts of each line under the lock; nothing changed.</summary>
    public sealed record Refused(IReadOnlyList<CounterReading> Readings) : RecordOutcome;

    /// <summary>The idempotency key was recorded before, with this payload fingerprint; nothing changed.</summary>
    public sealed record AlreadyRecorded(string Fingerprint) : RecordOutcome;

    /// <summary>The subscription's calendar is no longer the event's; nothing changed, recompute the periods.</summary>
    public sealed record CalendarChanged : RecordOutcome;

    /// <summary>A line would take its period total above <see cref="Validation.RequestValidator.MaxPeriodTotal"/>; nothing changed.</summary>
    public sealed record TotalCeilingReached(string UsageType) : RecordOutcome;
}
