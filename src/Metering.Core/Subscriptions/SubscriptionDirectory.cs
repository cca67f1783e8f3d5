using System.Collections.Concurrent;
using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Ports;
using Metering.Core.Usage;
using Metering.Core.Validation;
using Microsoft.Extensions.Logging;

namespace Metering.Core.Subscriptions;

/// <summary>
/// A subject's subscription together with its plan. <see cref="EnrolledAt"/>: this very call enrolled the subject, and
/// began to at this <see cref="TimeProvider.GetTimestamp"/>; it had no events and no holds then.
/// </summary>
public sealed record SubjectPlan(Subscription Subscription, Plan Plan, long? EnrolledAt = null);

/// <summary>Finds, enrolls and changes subscriptions: the cache first, the store of record behind it.</summary>
public sealed partial class SubscriptionDirectory(
    ISubscriptionStore store,
    ISubscriptionCache cache,
    ICounterStore counters,
    ICatalogProvider catalog,
    MeteringSettings settings,
    TimeProvider time,
    ILogger<SubscriptionDirectory> logger)
{
    /// <summary>The most subscriptions kept in process; past it the copies start over (each subject then pays one read).</summary>
    public const int MaxKnown = 100_000;

    private readonly ConcurrentDictionary<string, Subscription> _known = new(StringComparer.Ordinal);

    /// <summary>
    /// The subject's subscription as this instance last resolved it, or null. A copy: it decides nothing until the
    /// shared cache confirms its version (see <see cref="CounterCheck.Expected"/>).
    /// </summary>
    public Subscription? Known(string subjectId) => _known.GetValueOrDefault(subjectId);

    /// <summary>The subject's subscription and plan, enrolling the subject on the default plan the first time.</summary>
    public Task<SubjectPlan> ResolveAsync(string subjectId, CancellationToken cancellationToken) =>
        ResolveAsync(subjectId, PeekAsync(subjectId, cancellationToken), cancellationToken);

    /// <summary>
    /// Starts reading the subject's cached subscription, changing nothing, so that a call can send it together with
    /// its other first read (the catalog version) and pay one round trip for both. A cache failure reads as a miss.
    /// </summary>
    public async Task<Subscription?> PeekAsync(string subjectId, CancellationToken cancellationToken)
    {
        try
        {
            return await cache.GetAsync(subjectId, cancellationToken);
        }
        catch (StoreUnavailableException ex)
        {
            LogCacheUnavailable(ex.Message);
            return null;
        }
    }

    /// <summary>As <see cref="ResolveAsync(string, CancellationToken)"/>, from a <see cref="PeekAsync"/> already under way.</summary>
    public async Task<SubjectPlan> ResolveAsync(string subjectId, Task<Subscription?> peeked, CancellationToken cancellationToken)
    {
        var (subject, cached) = await ResolveSendingAsync(subjectId, peeked, cancellationToken);
        await cached;
        return subject;
    }

    /// <summary>
    /// As <see cref="ResolveAsync(string, Task{Subscription?}, CancellationToken)"/>, except that a subscription read
    /// from the store of record is only sent to the shared cache: <c>Cached</c> completes once the cache has it (a
    /// failure is logged, not thrown). A caller that sends its next cache command before awaiting it pays one round trip
    /// for both. A subject enrolled by this call comes with <see cref="SubjectPlan.EnrolledAt"/>.
    /// </summary>
    public async Task<(SubjectPlan Subject, Task Cached)> ResolveSendingAsync(string subjectId, Task<Subscription?> peeked, CancellationToken cancellationToken)
    {
        if (await peeked is { } subscription)
        {
            return (WithPlan(subscription), Task.CompletedTask);
        }

        var started = time.GetTimestamp();
        var loaded = await LoadAsync(subjectId, cancellationToken);
        var cached = PutInCacheAsync(loaded.Subscription, cancellationToken);
        return (WithPlan(loaded.Subscription, loaded.Enrolled ? started : null), cached);
    }

    /// <summary>GetSubscription: validates, then resolves as every call does.</summary>
    public async Task<SubjectPlan> GetAsync(string subjectId, CancellationToken cancellationToken)
    {
        new RequestValidator(await catalog.RefreshAsync(cancellationToken)).SubjectId("subject_id", subjectId).ThrowIfInvalid();
        return await ResolveAsync(subjectId, cancellationToken);
    }

    /// <summary>The subscription as the store of record has it now, bypassing the cache.</summary>
    public async Task<SubjectPlan> ResolveFreshAsync(string subjectId, CancellationToken cancellationToken)
    {
        var subscription = (await LoadAsync(subjectId, cancellationToken)).Subscription;
        await PutInCacheAsync(subscription, cancellationToken);
        return WithPlan(subscription);
    }

    /// <summary>Validates and stores a subscription change; it applies to the very next call.</summary>
    public async Task<Subscription> SetAsync(SetSubscriptionCommand command, CancellationToken cancellationToken)
    {
        var anchorDay = command.BillingAnchorDay == 0 ? Subscription.DefaultBillingAnchorDay : command.BillingAnchorDay;
        var timeZone = string.IsNullOrEmpty(command.TimeZone) ? Subscription.DefaultTimeZone : command.TimeZone;
        new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .PlanId("plan_id", command.PlanId)
            .BillingAnchorDay("billing_anchor_day", anchorDay)
            .TimeZone("time_zone", timeZone)
            .ThrowIfInvalid();

        var now = time.GetUtcNow().ToInstant();
        var change = await store.SaveAsync(command.SubjectId, command.PlanId, new BillingCalendar(timeZone, anchorDay), now, cancellationToken);

        // Answered OK only once every instance will decide with the change: the shared cache has it and the cached
        // counters are fenced. If the cache cannot be written the call fails (UNAVAILABLE) and the retry writes it;
        // instances that cannot reach the cache read the store of record, and the outbox entry written with the
        // change brings the cache up to date as soon as it is back.
        await cache.PutAsync(change.Subscription, cancellationToken);
        var calendar = change.Subscription.Calendar;
        var keys = catalog.Current.UsageTypes
            .Select(t => new CounterKey(command.SubjectId, t.Name, calendar.PeriodContaining(t.ResetPeriod, now)))
            .ToList();
        await counters.FenceAsync(keys, change.CounterFence, cancellationToken);
        return Remember(change.Subscription);
    }

    /// <summary>Puts the subscription of record into the shared cache; fails when the cache does (the outbox drain retries).</summary>
    public async Task RefreshCacheAsync(string subjectId, CancellationToken cancellationToken) =>
        await cache.PutAsync((await LoadAsync(subjectId, cancellationToken)).Subscription, cancellationToken);

    private Task<SubscriptionOfRecord> LoadAsync(string subjectId, CancellationToken cancellationToken) =>
        store.GetOrEnrollAsync(subjectId, settings.DefaultPlanId, time.GetUtcNow().ToInstant(), cancellationToken);

    private async Task PutInCacheAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        try
        {
            await cache.PutAsync(subscription, cancellationToken);
        }
        catch (StoreUnavailableException ex)
        {
            LogCacheUnavailable(ex.Message);
        }
    }

    private SubjectPlan WithPlan(Subscription subscription, long? enrolledAt = null) =>
        new(Remember(subscription), catalog.Current.GetPlan(subscription.PlanId), enrolledAt);

    /// <summary>Keeps the newest copy of each subscription resolved here.</summary>
    private Subscription Remember(Subscription subscription)
    {
        if (_known.Count >= MaxKnown)
        {
            _known.Clear();
        }

        return _known.AddOrUpdate(subscription.SubjectId, subscription, (_, known) => known.Version >= subscription.Version ? known : subscription);
    }

    /// <summary>Per call, so Debug: the outage itself is logged once by the cache's adapter (a line per call would flood the log just when the service is under stress).</summary>
    [LoggerMessage(Level = LogLevel.Debug, Message = "Subscription cache unavailable, using the store of record: {Reason}")]
    private partial void LogCacheUnavailable(string reason);
}
