using Metering.Core.Usage;

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
}
