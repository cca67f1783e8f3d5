using Metering.Core.Usage;
using NodaTime;

namespace Metering.Core.Ports;

/// <summary>The ledger of record (PostgreSQL): usage events and the per-period totals kept beside them.</summary>
public interface IUsageLedger
{
    /// <summary>
    /// Records the event and adds its lines to their period totals in one transaction, or reports that its
    /// idempotency key is already taken, or that the subscription's calendar changed. Returns after commit.
    /// </summary>
    Task<RecordOutcome> RecordAsync(UsageEvent usageEvent, CancellationToken cancellationToken);

    /// <summary>The payload fingerprint recorded under this idempotency key, or null.</summary>
    Task<string?> FindFingerprintAsync(string subjectId, string idempotencyKey, CancellationToken cancellationToken);

    /// <summary>The ledger total and version of each counter, creating a total row from the events where none exists yet.</summary>
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
}
