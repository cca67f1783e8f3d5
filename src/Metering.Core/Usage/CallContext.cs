using Metering.Core.Errors;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Validation;

namespace Metering.Core.Usage;

/// <summary>
/// The first step of every use case on a subject: the catalog brought up to the version every instance shares, the
/// request validated against it, and the subject's subscription and plan (enrolling it the first time). Also the one
/// place that decides what happens when the subscription's calendar changes under a ledger write.
/// </summary>
public sealed class CallContext(ICatalogProvider catalog, SubscriptionDirectory subscriptions)
{
    /// <summary>How often a write is recomputed for a calendar that changed under it before the call gives up (ABORTED).</summary>
    public const int MaxCalendarRetries = 8;

    /// <summary>
    /// Refreshes the catalog, validates the request with <paramref name="validate"/> (throwing
    /// <see cref="InvalidRequestException"/> with every violation) and resolves the subject. The cached subscription is
    /// read together with the catalog version, so both cost one round trip.
    /// </summary>
    public async Task<SubjectCall> BeginAsync(string subjectId, Action<RequestValidator> validate, CancellationToken cancellationToken)
    {
        var (call, cached) = await BeginSendingAsync(subjectId, validate, cancellationToken);
        await cached;
        return call;
    }

    /// <summary>
    /// For a read answered from the counters alone: when this instance has a copy of the subject's subscription and the
    /// request is valid against the loaded catalog, the call begins from them without a round trip, and
    /// <paramref name="read"/> has the counter store confirm their versions in the same round trip as the counters.
    /// When it cannot confirm them (<paramref name="read"/> returns null: a copy is stale, or the counters are
    /// unavailable and the answer must come from the stores of record), the call begins again as
    /// <see cref="BeginAsync"/> does.
    /// </summary>
    public async Task<T> ReadAsync<T>(string subjectId, Action<RequestValidator> validate, Func<SubjectCall, Task<T?>> read, CancellationToken cancellationToken)
        where T : class
    {
        if (FromCopies(subjectId, validate) is { } warm && await read(warm) is { } answer)
        {
            return answer;
        }

        // A subscription read from the store of record is on its way to the shared cache while the counters are read:
        // both share one round trip.
        var (call, cached) = await BeginSendingAsync(subjectId, validate, cancellationToken);
        try
        {
            return await read(call) ?? throw new InvalidOperationException("A call begun from the stores of record has nothing to confirm.");
        }
        finally
        {
            await cached;
        }
    }

    /// <summary>
    /// Runs a ledger write computed for the subject's calendar; when the ledger answers that the calendar changed
    /// under it (<paramref name="attempt"/> returns null), resolves the subscription of record and recomputes, up to
    /// <see cref="MaxCalendarRetries"/> times, then fails with <see cref="ConcurrentChangeException"/>.
    /// </summary>
    public async Task<T> OnCurrentCalendarAsync<T>(SubjectCall call, Func<SubjectCall, Task<T?>> attempt, CancellationToken cancellationToken)
        where T : class
    {
        for (var tries = 1; ; tries++)
        {
            if (await attempt(call) is { } result)
            {
                return result;
            }

            if (tries == MaxCalendarRetries)
            {
                throw new ConcurrentChangeException(call.SubjectId);
            }

            var fresh = await subscriptions.ResolveFreshAsync(call.SubjectId, cancellationToken);
            call = new SubjectCall(catalog.Current, fresh);
        }
    }

    /// <summary>As <see cref="BeginAsync"/>, with the subscription's way to the shared cache still under way (<c>Cached</c>).</summary>
    private async Task<(SubjectCall Call, Task Cached)> BeginSendingAsync(string subjectId, Action<RequestValidator> validate, CancellationToken cancellationToken)
    {
        var peeked = subscriptions.PeekAsync(subjectId, cancellationToken);
        var current = await catalog.RefreshAsync(cancellationToken);
        var validator = new RequestValidator(current);
        validate(validator);
        validator.ThrowIfInvalid();
        var (subject, cached) = await subscriptions.ResolveSendingAsync(subjectId, peeked, cancellationToken);
        return (new SubjectCall(current, subject), cached);
    }

    /// <summary>A call on this instance's copies of the subscription and catalog; null when it has none, or the request needs the current catalog to judge.</summary>
    private SubjectCall? FromCopies(string subjectId, Action<RequestValidator> validate)
    {
        if (subscriptions.Known(subjectId) is not { } subscription)
        {
            return null;
        }

        var current = catalog.Current;
        var validator = new RequestValidator(current);
        validate(validator);
        return validator.IsValid && current.TryGetPlan(subscription.PlanId, out var plan)
            ? new SubjectCall(current, new SubjectPlan(subscription, plan), new CacheVersions(subscription.Version, catalog.CatalogId, current.Version))
            : null;
    }
}
