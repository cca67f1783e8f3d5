using Metering.Core.Usage;

namespace Metering.Core.Ports;

/// <summary>
/// The hot-path counters (Redis): a cache of ledger values (total and held per counter, with their version). Nothing
/// here is the only copy of anything: a missing or doubtful counter is rebuilt from the ledger. Every method is atomic
/// per subject.
/// </summary>
public interface ICounterStore
{
    /// <summary>
    /// Reads every line's counter, or names the counters it lacks (or has from another server's life). With
    /// <see cref="CounterCheck.Expected"/>, first confirms, in the same atomic step, that the shared subscription of the
    /// subject and the shared catalog version are present (of this server's life) and no newer than expected; if
    /// either is not, answers <see cref="CounterCheckResult.StaleVersions"/> and reads nothing. A store that shares no
    /// cache between instances may confirm without looking.
    /// </summary>
    Task<CounterCheckResult> CheckAsync(CounterCheck check, CancellationToken cancellationToken);

    /// <summary>
    /// For a subject whose enrolment the caller has just committed (so it has no events and no holds yet): creates each
    /// of these counters that the store has in no form at all (no value, no fence, no record of another server's life)
    /// with total 0 and held 0 at version 0, below every ledger version, so that any ledger value or fence replaces it.
    /// Changes nothing that exists. Returns how many it created.
    /// </summary>
    Task<int> CreateEmptyAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken);

    /// <summary>Stores ledger values that are newer than the cached ones.</summary>
    Task ApplyAsync(IReadOnlyList<CounterValue> values, CancellationToken cancellationToken);

    /// <summary>
    /// Empties cached counters so that the next read rebuilds them from the ledger, and keeps <paramref name="fence"/>
    /// as their version so that a rebuild computed before the fence, landing after it, is refused.
    /// </summary>
    Task FenceAsync(IReadOnlyList<CounterKey> keys, long fence, CancellationToken cancellationToken);

    /// <summary>Reads one cached counter, changing nothing.</summary>
    Task<CounterSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken);

    /// <summary>
    /// Drops cached counters so that the next read rebuilds them from the ledger: the same as an eviction, for a counter
    /// whose version is ahead of the ledger (it can only have been written by hand).
    /// </summary>
    Task EvictAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken);
}
