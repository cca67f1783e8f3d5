using Metering.Core.History;

namespace Metering.Core.Ports;

/// <summary>Read access to the ledger's history and the subscription audit (PostgreSQL).</summary>
public interface IHistoryStore
{
    /// <summary>Up to <see cref="EventQuery.Limit"/> events, newest first by (occurred_at, id).</summary>
    Task<IReadOnlyList<LedgerEvent>> ListEventsAsync(EventQuery query, CancellationToken cancellationToken);

    /// <summary>A subject's subscription changes, newest first, at most <paramref name="limit"/>.</summary>
    Task<IReadOnlyList<SubscriptionChangeRecord>> ListSubscriptionChangesAsync(string subjectId, int limit, CancellationToken cancellationToken);
}
