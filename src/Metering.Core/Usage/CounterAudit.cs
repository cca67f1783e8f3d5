using Metering.Core.Limits;
using Metering.Core.Subscriptions;
using NodaTime;
using Period = Metering.Core.Periods.Period;

namespace Metering.Core.Usage;

/// <summary>How a cached counter compares with the ledger.</summary>
public enum CacheState
{
    /// <summary>The counter holds the ledger total.</summary>
    InSync = 1,

    /// <summary>The counter holds another value.</summary>
    Mismatch = 2,

    /// <summary>There is no counter; the next read rebuilds it from the ledger.</summary>
    Missing = 3,
}

/// <summary>What the counter store holds for one counter: the cached total and held amount, if any, and their version.</summary>
public sealed record CounterSnapshot(long? Total, long? Held, long? Version);

/// <summary>
/// What the ledger holds for one counter: the sum of the events in its period (the truth), their number, and the
/// running total row counters are built from, if there is one.
/// </summary>
public sealed record LedgerSnapshot(long EventTotal, long EventCount, long? RowTotal, long? RowVersion);

/// <summary>ExplainUsage: everything that decided one usage type's answer, side by side.</summary>
public sealed record UsageExplanation(
    Subscription Subscription,
    Catalog.Plan Plan,
    long CatalogVersion,
    Catalog.UsageType UsageType,
    Period Period,
    LocalDateTime PeriodStartLocal,
    LocalDateTime PeriodEndLocal,
    LedgerSnapshot Ledger,
    CounterSnapshot Counter,
    IReadOnlyList<HoldInfo> Holds,
    CacheState CacheState,
    LimitStatus StatusFromLedger);

/// <summary>One counter ReconcileCounters looked at, and what it did.</summary>
public sealed record CounterRepair(
    CounterKey Key,
    CacheState Before,
    long? CounterTotalBefore,
    long LedgerTotal,
    bool LedgerRowFixed,
    long CounterTotalAfter,
    long CounterVersionAfter,
    bool Evicted);

/// <summary>The answer to ReconcileCounters: how much was checked and every counter that was changed.</summary>
public sealed record ReconcileResult(int SubjectsChecked, int CountersChecked, IReadOnlyList<CounterRepair> Repairs);

/// <summary>The one place that decides whether a cached counter agrees with the ledger.</summary>
public static class CounterAudit
{
    public static CacheState Compare(long ledgerTotal, long? counterTotal) => counterTotal switch
    {
        null => CacheState.Missing,
        var t when t == ledgerTotal => CacheState.InSync,
        _ => CacheState.Mismatch,
    };

    /// <summary>
    /// Whether a counter needs repair: the cache or the ledger's running total row disagrees with the events. A missing
    /// counter of a period without any usage needs none: it would be rebuilt as 0, which is what a missing one means.
    /// </summary>
    public static bool NeedsRepair(LedgerSnapshot ledger, CounterSnapshot counter)
    {
        if (counter.Total is null && ledger.EventTotal == 0 && (ledger.RowTotal ?? 0) == 0)
        {
            return false;
        }

        return Compare(ledger.EventTotal, counter.Total) != CacheState.InSync || (ledger.RowTotal is { } row && row != ledger.EventTotal)
            || (ledger.RowTotal is null && ledger.EventCount > 0);
    }
}
