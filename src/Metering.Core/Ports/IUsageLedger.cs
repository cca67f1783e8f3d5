using Metering.Core.Usage;
using NodaTime;

namespace Metering.Core.Ports;

/// <summary>
/// The ledger of record (PostgreSQL): usage events, the per-period totals kept beside them, and the holds. Every grant
/// (a hold, an enforced event) is decided here, under a per-subject lock, so no cache state can over-grant. Every
/// transaction that changes a total or a hold also queues the changed counters in an outbox, in the same commit, so
/// the cache catches up with every commit even when the caller never hears back (<see cref="DrainOutboxAsync"/>).
/// </summary>
public interface IUsageLedger
{
    /// <summary>
    /// Records the event and adds its lines to their period totals in one transaction (settling the hold it names and,
    /// when enforced, only if every line fits), or reports that its idempotency key is already taken, that the
    /// subscription's calendar changed, or that an enforced line does not fit. Returns after commit.
    /// </summary>
    Task<RecordOutcome> RecordAsync(UsageEvent usageEvent, CancellationToken cancellationToken);

    /// <summary>Holds every line of the request or none, deciding under the subject's lock against totals and live holds.</summary>
    Task<HoldOutcome> HoldAsync(HoldRequest request, CancellationToken cancellationToken);

    /// <summary>Ends a live hold; null when it is unknown, expired or already settled or released.</summary>
    Task<CounterChanges?> ReleaseHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken);

    /// <summary>A hold of the subject, live or not: when it was placed (whose periods it counts in); null when unknown.</summary>
    Task<PlacedHold?> FindHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken);

    /// <summary>The live holds that count in the counter's period.</summary>
    Task<IReadOnlyList<HoldInfo>> ListLiveHoldsAsync(CounterKey key, CancellationToken cancellationToken);

    /// <summary>The payload fingerprint recorded under this idempotency key, or null.</summary>
    Task<string?> FindFingerprintAsync(string subjectId, string idempotencyKey, CancellationToken cancellationToken);

    /// <summary>The ledger total, held amount and version of each counter, creating a total row from the events where none exists yet.</summary>
    Task<IReadOnlyList<CounterValue>> GetTotalsAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken);

    /// <summary>The events' sum and count in the counter's period and its running total row, changing nothing.</summary>
    Task<LedgerSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken);

    /// <summary>
    /// Recomputes the counter's running total from its events under the row's lock (so no concurrent event is lost)
    /// and gives it a new version, so that the cache takes it over whatever it holds. Returns the value and whether
    /// the row's total was wrong.
    /// </summary>
    Task<(CounterValue Value, bool RowFixed)> ReconcileAsync(CounterKey key, CancellationToken cancellationToken);

    /// <summary>Subjects with a running total in a period that contains <paramref name="now"/>, in id order.</summary>
    Task<IReadOnlyList<string>> ListActiveSubjectsAsync(Instant now, CancellationToken cancellationToken);

    /// <summary>
    /// Takes up to <paramref name="max"/> outbox entries older than <paramref name="minAge"/> (skipping those another
    /// instance is draining), passes the current values of their counters and the subjects whose subscription changed
    /// to <paramref name="apply"/>, and removes the entries only when it returns. Returns how many entries it took.
    /// </summary>
    Task<int> DrainOutboxAsync(Func<OutboxBatch, Task> apply, Duration minAge, int max, CancellationToken cancellationToken);

    /// <summary>Ends up to <paramref name="max"/> holds whose time is up (ledger clock) and queues their counters; returns how many.</summary>
    Task<int> ExpireHoldsAsync(int max, CancellationToken cancellationToken);
}
