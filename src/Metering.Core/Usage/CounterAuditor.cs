using Metering.Core.Limits;
using Metering.Core.Periods;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Validation;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// The ops use cases over cache and ledger: ExplainUsage shows everything that decided an answer without changing it;
/// ReconcileCounters rebuilds counters from the ledger through the same versioned apply path as every write.
/// </summary>
public sealed class CounterAuditor(
    SubscriptionDirectory subscriptions,
    IUsageLedger ledger,
    ICounterStore counters,
    ICatalogProvider catalog,
    TimeProvider time)
{
    public async Task<UsageExplanation> ExplainAsync(string subjectId, string usageType, CancellationToken cancellationToken)
    {
        var current = await catalog.RefreshAsync(cancellationToken);
        new RequestValidator(current)
            .SubjectId("subject_id", subjectId)
            .UsageType("usage_type", usageType)
            .ThrowIfInvalid();

        var subject = await subscriptions.ResolveAsync(subjectId, cancellationToken);
        var now = Now();
        var type = current.GetUsageType(usageType);
        var key = new CounterKey(subjectId, usageType, subject.Subscription.Calendar.PeriodContaining(type.ResetPeriod, now));
        var ledgerSnapshot = await ledger.InspectAsync(key, cancellationToken);
        var holds = await ledger.ListLiveHoldsAsync(key, cancellationToken);
        var counterSnapshot = await counters.InspectAsync(key, cancellationToken);
        var zone = TimeZones.Get(subject.Subscription.TimeZone);
        var limit = subject.Plan.LimitFor(usageType);
        var held = holds.Sum(h => h.Amount);
        return new UsageExplanation(
            subject.Subscription,
            subject.Plan,
            current.Version,
            type,
            key.Period,
            key.Period.Start.InZone(zone).LocalDateTime,
            key.Period.End.InZone(zone).LocalDateTime,
            ledgerSnapshot,
            counterSnapshot,
            holds,
            CounterAudit.Compare(ledgerSnapshot.EventTotal, counterSnapshot.Total),
            LimitRules.Evaluate(usageType, limit, ledgerSnapshot.EventTotal, held, 1, key.Period));
    }

    /// <summary>Rebuilds the current-period counters of one subject, or of every subject with activity in them.</summary>
    public async Task<ReconcileResult> ReconcileAsync(string? subjectId, CancellationToken cancellationToken)
    {
        var current = await catalog.RefreshAsync(cancellationToken);
        if (!string.IsNullOrEmpty(subjectId))
        {
            new RequestValidator(current).SubjectId("subject_id", subjectId).ThrowIfInvalid();
        }

        var now = Now();
        var subjects = string.IsNullOrEmpty(subjectId)
            ? await ledger.ListActiveSubjectsAsync(now, cancellationToken)
            : [subjectId];
        var repairs = new List<CounterRepair>();
        var checkedCounters = 0;
        foreach (var subjectIdToCheck in subjects)
        {
            var subject = await subscriptions.ResolveAsync(subjectIdToCheck, cancellationToken);
            foreach (var type in current.UsageTypes)
            {
                checkedCounters++;
                var key = new CounterKey(subjectIdToCheck, type.Name, subject.Subscription.Calendar.PeriodContaining(type.ResetPeriod, now));
                if (await RepairAsync(key, cancellationToken) is { } repair)
                {
                    repairs.Add(repair);
                }
            }
        }

        return new ReconcileResult(subjects.Count, checkedCounters, repairs);
    }

    private async Task<CounterRepair?> RepairAsync(CounterKey key, CancellationToken cancellationToken)
    {
        var ledgerBefore = await ledger.InspectAsync(key, cancellationToken);
        var counterBefore = await counters.InspectAsync(key, cancellationToken);
        if (!CounterAudit.NeedsRepair(ledgerBefore, counterBefore))
        {
            return null;
        }

        // A fresh version from the ledger, applied like every write: the cache takes it unless it is newer still.
        var (value, rowFixed) = await ledger.ReconcileAsync(key, cancellationToken);
        await counters.ApplyAsync([value], cancellationToken);
        var counterAfter = await counters.InspectAsync(key, cancellationToken);
        var evicted = false;
        if (counterAfter.Version > value.Version)
        {
            // Only a hand-written counter can be ahead of the ledger's sequence: drop it, the next read rebuilds it.
            await counters.EvictAsync([key], cancellationToken);
            evicted = true;
        }

        return new CounterRepair(
            key,
            CounterAudit.Compare(ledgerBefore.EventTotal, counterBefore.Total),
            counterBefore.Total,
            value.Total,
            rowFixed,
            evicted ? value.Total : counterAfter.Total ?? value.Total,
            evicted ? value.Version : counterAfter.Version ?? value.Version,
            evicted);
    }

    private Instant Now() => Instant.FromDateTimeOffset(time.GetUtcNow());
}
