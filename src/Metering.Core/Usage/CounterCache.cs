using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Ports;
using Metering.Core.Telemetry;
using Microsoft.Extensions.Logging;

namespace Metering.Core.Usage;

/// <summary>
/// The policy of the counter cache: reads rebuild what the cache lacks from the ledger; values the ledger committed are
/// applied after the commit whatever happens to the caller (and, should that fail, by the outbox drain); while the cache
/// is unavailable, reads follow each usage type's <see cref="DegradedPolicy"/>. The cache never decides a grant: holds
/// and enforced events are decided by the ledger.
/// </summary>
public sealed partial class CounterCache(ICounterStore counters, IUsageLedger ledger, MeteringMetrics metrics, TimeProvider time, ILogger<CounterCache> logger)
{
    /// <summary>
    /// How soon after its enrolment began a subject's counters may be created empty (<see cref="ICounterStore.CreateEmptyAsync"/>)
    /// and trusted. An event committed since the enrolment has an outbox entry that no drain takes before
    /// <see cref="CounterSync.MinAge"/> has passed, so even if its own apply was lost (a flush, a restart), the drain
    /// brings the counter up to it later. Counters created later than this may hide such an event for good: they are
    /// rebuilt from the ledger instead.
    /// </summary>
    public static readonly TimeSpan EnrolmentTrust = CounterSync.MinAge.ToTimeSpan() / 2;

    private const int MaxRebuilds = 3;

    /// <summary>Readings of every line, and whether they come from the degraded path instead of the counters.</summary>
    public sealed record Reading(IReadOnlyList<CounterReading> Readings, bool Degraded, IReadOnlySet<int> FailOpen)
    {
        /// <summary>Readings the answer can rely on: from the counters or from the ledger itself, none failing open.</summary>
        public static Reading Exact(IReadOnlyList<CounterReading> readings) => new(readings, false, new HashSet<int>());
    }

    /// <summary>
    /// Reads every line of a call, each following its usage type's degraded policy (see the overload below). A call on
    /// unconfirmed copies is read only if the counter store confirms them in the same look; null when it does not (a
    /// copy is stale, or the counters are unavailable): the caller begins again from the stores of record.
    /// </summary>
    public async Task<Reading?> ReadAsync(SubjectCall call, IReadOnlyList<CounterLine> lines, CancellationToken cancellationToken)
    {
        if (call.Unconfirmed is not { } expected)
        {
            return await ReadAsync(call.SubjectId, lines, call.Policies(lines), call.Subject.EnrolledAt, cancellationToken);
        }

        try
        {
            return await ReadCountersAsync(call.SubjectId, lines, expected, null, cancellationToken) is { } readings ? Reading.Exact(readings) : null;
        }
        catch (StoreUnavailableException ex) when (ex.Store == StoreUnavailableException.Counter)
        {
            return null;
        }
    }

    /// <summary>
    /// Reads every line from the counters, rebuilding missing ones from the ledger; when the counters are unavailable,
    /// from the ledger (<see cref="DegradedPolicy.Ledger"/>), failing open (<see cref="DegradedPolicy.Allow"/>) or
    /// failing the call (<see cref="DegradedPolicy.Deny"/>), per line.
    /// </summary>
    public Task<Reading> ReadAsync(string subjectId, IReadOnlyList<CounterLine> lines, IReadOnlyList<DegradedPolicy> policies, CancellationToken cancellationToken) =>
        ReadAsync(subjectId, lines, policies, null, cancellationToken);

    /// <summary>
    /// As the overload above. With <paramref name="enrolledAt"/> (the subject was enrolled by this call, see
    /// <see cref="Subscriptions.SubjectPlan.EnrolledAt"/>), counters the store has in no form are created empty in the
    /// same round trip as the first read, instead of being rebuilt from the ledger.
    /// </summary>
    private async Task<Reading> ReadAsync(
        string subjectId, IReadOnlyList<CounterLine> lines, IReadOnlyList<DegradedPolicy> policies, long? enrolledAt, CancellationToken cancellationToken)
    {
        StoreUnavailableException unavailable;
        try
        {
            return Reading.Exact((await ReadCountersAsync(subjectId, lines, null, enrolledAt, cancellationToken))!);
        }
        catch (StoreUnavailableException ex) when (ex.Store == StoreUnavailableException.Counter)
        {
            unavailable = ex;
        }

        if (policies.Contains(DegradedPolicy.Deny))
        {
            throw unavailable;
        }

        var failOpen = Enumerable.Range(0, lines.Count).Where(i => policies[i] == DegradedPolicy.Allow).ToHashSet();
        try
        {
            var totals = await ledger.GetTotalsAsync([.. lines.Select(l => l.Key)], cancellationToken);
            return new Reading([.. totals.Select(t => new CounterReading(t.Total, t.Held))], true, failOpen);
        }
        catch (StoreUnavailableException) when (failOpen.Count == lines.Count)
        {
            // Every line fails open: no figures, but an answer.
            return new Reading([.. lines.Select(_ => new CounterReading(0, 0))], true, failOpen);
        }
    }

    /// <summary>
    /// Brings the cache up to the values a ledger transaction committed. Runs to its end even when the caller has gone
    /// (the usage is committed; the counters must follow), bounded by the counter store's own time budget; a failure
    /// is left to the outbox drain, which applies the same values within a second of the cache coming back.
    /// </summary>
    public async Task ApplyAsync(CounterChanges changes)
    {
        if (changes.Values.Count == 0)
        {
            return;
        }

        try
        {
            await counters.ApplyAsync(changes.Values, CancellationToken.None);
        }
#pragma warning disable CA1031 // The change is committed: no failure of the cache may fail the call; the outbox retries.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogApplyDeferred(changes.Values.Count, ex.Message);
        }
    }

    /// <summary>
    /// The ledger's current values of these lines' counters, applied to the cache first (as every answer that reports
    /// them must be: the call that committed them may have died before it could).
    /// </summary>
    public async Task<Reading> RefreshAsync(IReadOnlyList<CounterLine> lines, CancellationToken cancellationToken)
    {
        var values = await ledger.GetTotalsAsync([.. lines.Select(l => l.Key)], cancellationToken);
        await ApplyAsync(new CounterChanges(values));
        return Reading.Exact([.. values.Select(v => new CounterReading(v.Total, v.Held))]);
    }

    /// <summary>The counters' readings, rebuilding missing ones; null when <paramref name="expected"/> is not confirmed.</summary>
    private async Task<IReadOnlyList<CounterReading>?> ReadCountersAsync(
        string subjectId, IReadOnlyList<CounterLine> lines, CacheVersions? expected, long? enrolledAt, CancellationToken cancellationToken)
    {
        var check = new CounterCheck(subjectId, lines, expected);
        for (var rebuild = 0; ; rebuild++)
        {
            var result = rebuild == 0 && enrolledAt is { } started
                ? await CheckEnrolledAsync(check, started, cancellationToken)
                : await counters.CheckAsync(check, cancellationToken);
            if (result.Stale)
            {
                return null;
            }

            if (result.Missing.Count == 0)
            {
                return result.Readings;
            }

            if (rebuild == MaxRebuilds)
            {
                // Something keeps dropping them (a tiny maxmemory, a flush loop): the ledger has the answer.
                throw new StoreUnavailableException(StoreUnavailableException.Counter, new InvalidOperationException(
                    $"Counters of '{subjectId}' vanished {rebuild} times in a row while being rebuilt."));
            }

            var totals = await ledger.GetTotalsAsync(result.Missing, cancellationToken);
            await counters.ApplyAsync(totals, cancellationToken);
            metrics.CountersRebuilt(totals.Count, "missing");
        }
    }

    /// <summary>
    /// The first read of a subject enrolled by this call: its counters that the store has in no form are created empty
    /// (the subject had no events and no holds), sent in the same flight as the read, so the read finds them. When the
    /// creation came later than <see cref="EnrolmentTrust"/> after the enrolment began, every line is read as missing,
    /// so it is rebuilt from the ledger (whose versions replace the empty ones).
    /// </summary>
    private async Task<CounterCheckResult> CheckEnrolledAsync(CounterCheck check, long enrolledAt, CancellationToken cancellationToken)
    {
        var keys = check.Lines.Select(l => l.Key).Distinct().ToList();
        var creating = counters.CreateEmptyAsync(keys, cancellationToken);
        var checking = counters.CheckAsync(check, cancellationToken);
        await Task.WhenAll(creating, checking);
        if (await creating > 0 && time.GetElapsedTime(enrolledAt) > EnrolmentTrust)
        {
            metrics.CountersRebuilt(keys.Count, "late_enrolment");
            return CounterCheckResult.MissingCounters(keys);
        }

        return await checking;
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Count} committed counter values not applied to the cache yet (the outbox drain will): {Reason}")]
    private partial void LogApplyDeferred(int count, string reason);
}
