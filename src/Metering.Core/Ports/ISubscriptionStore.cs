using Metering.Core.Catalog;
using Metering.Core.Subscriptions;
using NodaTime;

namespace Metering.Core.Ports;

/// <summary>Subscriptions of record (PostgreSQL).</summary>
public interface ISubscriptionStore
{
    /// <summary>
    /// The subject's subscription, enrolling it on <paramref name="defaultPlanId"/> with the default calendar the first
    /// time. <see cref="SubscriptionOfRecord.Enrolled"/> says that this very call enrolled it: of any number of
    /// concurrent first calls exactly one does, and the subject it enrolled has no events and no holds (they need the
    /// subscription, which did not exist until this call committed it).
    /// </summary>
    Task<SubscriptionOfRecord> GetOrEnrollAsync(string subjectId, string defaultPlanId, Instant now, CancellationToken cancellationToken);

    /// <summary>
    /// Stores the subscription with a higher version and queues it for the cache in the same transaction (so every
    /// instance sees it even if the caller never hears back). When the calendar changes, the totals of recent periods
    /// are dropped in the same transaction so that they are rebuilt from the events under the new calendar. Every save
    /// draws a counter version that every total written after it will exceed.
    /// </summary>
    Task<SubscriptionChange> SaveAsync(string subjectId, string planId, BillingCalendar calendar, Instant now, CancellationToken cancellationToken);
}

/// <summary>A subscription as the store of record has it, and whether the call that read it also enrolled the subject.</summary>
public sealed record SubscriptionOfRecord(Subscription Subscription, bool Enrolled);

/// <summary>The stored subscription and the counter version that fences off totals computed before it.</summary>
public sealed record SubscriptionChange(Subscription Subscription, long CounterFence);

/// <summary>A cache of subscriptions (Redis), shared by every instance. Keeps the highest version it is given.</summary>
public interface ISubscriptionCache
{
    Task<Subscription?> GetAsync(string subjectId, CancellationToken cancellationToken);

    Task PutAsync(Subscription subscription, CancellationToken cancellationToken);
}

/// <summary>The catalog of usage types and plans the service decides with.</summary>
public interface ICatalogProvider
{
    /// <summary>The newest catalog this instance has loaded; it only moves forward.</summary>
    PlanCatalog Current { get; }

    /// <summary>The id that names the catalog in shared caches (see <see cref="ICatalogVersionCache"/>).</summary>
    string CatalogId { get; }

    /// <summary>
    /// Makes <see cref="Current"/> at least as new as the catalog version shared by every instance, reloading it
    /// when another instance changed it, and returns it. Call once at the start of every use case.
    /// </summary>
    Task<PlanCatalog> RefreshAsync(CancellationToken cancellationToken);
}
