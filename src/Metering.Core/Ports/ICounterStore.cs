using Metering.Core.Usage;
using NodaTime;

namespace Metering.Core.Ports;

/// <summary>
/// The hot-path counters (Redis): a cache of ledger totals plus the live holds, which exist only here.
/// Every method is atomic per subject.
/// </summary>
public interface ICounterStore
{
    /// <summary>Reads every line and, if asked and every line fits, holds them all; or names the counters it lacks.</summary>
    Task<CounterCheckResult> CheckAsync(CounterCheck check, CancellationToken cancellationToken);

    /// <summary>Stores ledger values that are newer than the cached ones and releases the named holds, in one step.</summary>
    Task ApplyAsync(string subjectId, IReadOnlyList<CounterValue> values, IReadOnlyList<string> releaseReservations, CancellationToken cancellationToken);

    /// <summary>Releases a live hold; false when it is unknown, expired or already settled.</summary>
    Task<bool> ReleaseAsync(string subjectId, string reservationId, Instant now, CancellationToken cancellationToken);

    /// <summary>
    /// Empties cached counters so that the next read rebuilds them from the ledger, and keeps <paramref name="fence"/>
    /// as their version so that a rebuild computed before the fence, landing after it, is refused.
    /// </summary>
    Task FenceAsync(IReadOnlyList<CounterKey> keys, long fence, CancellationToken cancellationToken);

    /// <summary>Reads one counter and the live holds in its period, changing nothing.</summary>
    Task<CounterSnapshot> InspectAsync(CounterKey key, Instant now, CancellationToken cancellationToken);

    /// <summary>
    /// Drops cached counters so that the next read rebuilds them from the ledger: the same as an eviction, for a counter
    /// whose version is ahead of the ledger (it can only have been written by hand).
    /// </summary>
    Task EvictAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken);
}
