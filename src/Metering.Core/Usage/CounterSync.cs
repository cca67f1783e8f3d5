using Metering.Core.Catalog;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// Keeps the cache a faithful copy of the ledger whatever happened after a commit (the caller went away, the cache
/// refused the write, the instance died): every instance drains the outbox that each ledger transaction writes, and
/// ends holds whose time is up, so that the counters stop showing them.
/// </summary>
public sealed class CounterSync(IUsageLedger ledger, ICounterStore counters, SubscriptionDirectory subscriptions, CatalogDirectory catalog)
{
    /// <summary>How old an outbox entry must be before a drain takes it: the committing instance applies its own first.</summary>
    public static readonly Duration MinAge = Duration.FromMilliseconds(250);

    /// <summary>Entries taken per transaction.</summary>
    public const int BatchSize = 500;

    /// <summary>Applies every outbox entry old enough, batch after batch; returns how many it took.</summary>
    public async Task<int> DrainAsync(CancellationToken cancellationToken)
    {
        var total = 0;
        while (true)
        {
            var taken = await ledger.DrainOutboxAsync(batch => ApplyAsync(batch, cancellationToken), MinAge, BatchSize, cancellationToken);
            total += taken;
            if (taken < BatchSize)
            {
                return total;
            }
        }
    }

    /// <summary>Ends the holds whose time is up; returns how many.</summary>
    public Task<int> ExpireHoldsAsync(CancellationToken cancellationToken) => ledger.ExpireHoldsAsync(BatchSize, cancellationToken);

    private async Task ApplyAsync(OutboxBatch batch, CancellationToken cancellationToken)
    {
        // Either all of it reaches the cache or the entries stay for the next drain (values only move forward, so
        // applying one twice is harmless).
        await counters.ApplyAsync(batch.Counters, cancellationToken);
        foreach (var subjectId in batch.Subscriptions)
        {
            await subscriptions.RefreshCacheAsync(subjectId, cancellationToken);
        }

        if (batch.Catalog)
        {
            await catalog.RepublishAsync(cancellationToken);
        }
    }
}
