using Metering.Core.Subscriptions;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// A request to hold amounts for a session: every line fits (under <see cref="Limits.LimitRules.Fits"/>, against the
/// ledger total and the live holds of its period) or nothing is held. <see cref="RequestId"/>, when set, makes a
/// retried request return the hold it placed the first time. <see cref="PlacedAt"/> is the instant whose periods the
/// lines were computed for; the hold lasts <see cref="Ttl"/> on the ledger's clock.
/// </summary>
public sealed record HoldRequest(
    string SubjectId,
    string ReservationId,
    string? RequestId,
    BillingCalendar Calendar,
    IReadOnlyList<CounterLine> Lines,
    Instant PlacedAt,
    Duration Ttl,
    int MaxLiveHolds);

/// <summary>What the ledger did with a <see cref="HoldRequest"/>.</summary>
public abstract record HoldOutcome
{
    /// <summary>
    /// The used and held amounts of each line, as seen under the subject's lock (the new hold not included), and the
    /// hold when it was placed (or found, for a retried request id).
    /// </summary>
    public sealed record Decided(IReadOnlyList<CounterReading> Readings, PlacedHold? Hold, CounterChanges Changes) : HoldOutcome;

    /// <summary>The subject already has the most live holds allowed; nothing held.</summary>
    public sealed record TooManyHolds(int Live) : HoldOutcome;

    /// <summary>The request id was used before for other amounts; nothing held.</summary>
    public sealed record RequestIdConflict : HoldOutcome;

    /// <summary>The subscription's calendar is no longer the request's; nothing held, recompute the periods.</summary>
    public sealed record CalendarChanged : HoldOutcome;
}

/// <summary>A hold in the ledger: its id, when it stops counting (ledger clock), and the instant its periods are of.</summary>
public sealed record PlacedHold(string ReservationId, Instant ExpiresAt, Instant PlacedAt, bool Retried);

/// <summary>Counters a ledger transaction changed, with their new values, to be applied to the cache.</summary>
public sealed record CounterChanges(IReadOnlyList<CounterValue> Values)
{
    public static readonly CounterChanges None = new([]);
}

/// <summary>A live hold on one counter.</summary>
public sealed record HoldInfo(string ReservationId, long Amount, Instant ExpiresAt);

/// <summary>
/// What an outbox drain brings the shared cache up to: counters' current values, subjects whose subscription changed,
/// and whether the catalog changed.
/// </summary>
public sealed record OutboxBatch(IReadOnlyList<CounterValue> Counters, IReadOnlyList<string> Subscriptions, bool Catalog);
