using Metering.Core.Periods;

namespace Metering.Core.Usage;

/// <summary>Identifies one counter: a subject's total of one usage type in one period.</summary>
public readonly record struct CounterKey(string SubjectId, string UsageType, Period Period);

/// <summary>
/// A ledger total with its version. Versions only grow, so any two values of one counter
/// can be ordered, and a cache that keeps the newer one converges to the ledger.
/// </summary>
public readonly record struct CounterValue(CounterKey Key, long Total, long Version);

/// <summary>One line of a counter check: the amount asked against the plan's limit.</summary>
public readonly record struct CounterLine(CounterKey Key, long Amount, long Limit);

/// <summary>A hold to place when every line fits.</summary>
public sealed record HoldSpec(string ReservationId, NodaTime.Instant ExpiresAt);

/// <summary>
/// One atomic look at a subject's counters: read every line's used and reserved amounts and,
/// when <see cref="Hold"/> is set and every line fits, hold all of them.
/// </summary>
public sealed record CounterCheck(
    string SubjectId,
    IReadOnlyList<CounterLine> Lines,
    NodaTime.Instant Now,
    HoldSpec? Hold = null,
    string? ExcludeReservationId = null);

/// <summary>What a line's counter showed: ledger total and live holds in its period.</summary>
public readonly record struct CounterReading(long Used, long Reserved);

/// <summary>
/// Either <see cref="Missing"/> names counters the cache does not have (nothing was read or held),
/// or <see cref="Readings"/> has one reading per line and <see cref="Held"/> tells whether the hold was placed.
/// <see cref="OverCeiling"/>: a line's used + reserved + amount is above <see cref="Validation.RequestValidator.MaxPeriodTotal"/>,
/// so nothing was held whatever the limit.
/// </summary>
public sealed record CounterCheckResult(IReadOnlyList<CounterKey> Missing, IReadOnlyList<CounterReading> Readings, bool Held, bool OverCeiling = false)
{
    public static CounterCheckResult MissingCounters(IReadOnlyList<CounterKey> missing) => new(missing, [], false);
}
