using Metering.Core.Periods;

namespace Metering.Core.Usage;

/// <summary>Identifies one counter: a subject's total of one usage type in one period.</summary>
public readonly record struct CounterKey(string SubjectId, string UsageType, Period Period);

/// <summary>
/// A ledger total and the amount held by live holds in its period, with their version. Versions only grow, so any
/// two values of one counter can be ordered, and a cache that keeps the newer one converges to the ledger.
/// </summary>
public readonly record struct CounterValue(CounterKey Key, long Total, long Held, long Version);

/// <summary>One line of a counter check: the amount asked against the plan's limit.</summary>
public readonly record struct CounterLine(CounterKey Key, long Amount, long Limit);

/// <summary>
/// One look at a subject's cached counters: read every line's used and reserved amounts. With <see cref="Expected"/>,
/// the same look first confirms that the caller decided with the current subscription and catalog.
/// </summary>
public sealed record CounterCheck(string SubjectId, IReadOnlyList<CounterLine> Lines, CacheVersions? Expected = null);

/// <summary>
/// The versions of the subject's subscription and of the catalog (named by its id) that a caller decided with, from
/// copies it keeps in process; the shared cache holds the current ones.
/// </summary>
public sealed record CacheVersions(long Subscription, string CatalogId, long Catalog);

/// <summary>What a line's counter showed: ledger total and live holds in its period.</summary>
public readonly record struct CounterReading(long Used, long Reserved);

/// <summary>
/// Either <see cref="Stale"/> (the check's <see cref="CounterCheck.Expected"/> versions are not the current ones), or
/// <see cref="Missing"/> names counters the cache does not have (or has from another Redis server's life, which may
/// have lost writes), or <see cref="Readings"/> has one reading per line.
/// </summary>
public sealed record CounterCheckResult(IReadOnlyList<CounterKey> Missing, IReadOnlyList<CounterReading> Readings, bool Stale = false)
{
    /// <summary>The expected subscription or catalog version is not the shared one: reload them and check again.</summary>
    public static readonly CounterCheckResult StaleVersions = new([], [], Stale: true);

    public static CounterCheckResult MissingCounters(IReadOnlyList<CounterKey> missing) => new(missing, []);
}
