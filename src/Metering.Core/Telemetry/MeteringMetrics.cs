using System.Diagnostics;
using System.Diagnostics.Metrics;
using Metering.Core.Limits;

namespace Metering.Core.Telemetry;

/// <summary>
/// Every instrument of the service, on the meter <see cref="MeterName"/>: RPC calls and latency (OpenTelemetry RPC
/// semantic conventions), store calls (database client conventions), and the domain's own counters under the
/// <c>metering.</c> prefix. Each layer records through the methods here, so names, units and tags live in one place.
/// Exported to Prometheus with dots as underscores and the unit as suffix (e.g. <c>rpc_server_duration_seconds</c>,
/// <c>metering_decisions_total</c>).
/// </summary>
public sealed class MeteringMetrics
{
    /// <summary>The meter's name, as the exporters are told.</summary>
    public const string MeterName = "Metering";

    private readonly Histogram<double> _rpcDuration;
    private readonly Counter<long> _decisions;
    private readonly Counter<long> _usageRecorded;
    private readonly Counter<long> _holdsPlaced;
    private readonly Counter<long> _holdsSettled;
    private readonly Counter<long> _holdsReleased;
    private readonly Counter<long> _holdsExpired;
    private readonly Counter<long> _counterRebuilds;
    private readonly Counter<long> _reconcileRepairs;
    private readonly Histogram<double> _storeDuration;
    private readonly Counter<long> _storeErrors;
    private readonly Histogram<double> _ledgerCommitDuration;
    private readonly Histogram<long> _ledgerBatchSize;
    private readonly Counter<long> _rateLimited;
    private readonly Counter<long> _unauthenticated;
    private long _liveHolds;
    private long _outboxBacklog;
    private int _degraded;

    public MeteringMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        var meter = meterFactory.Create(MeterName);
        _rpcDuration = meter.CreateHistogram(
            "rpc.server.duration",
            unit: "s",
            description: "Duration of gRPC calls served, by rpc.service, rpc.method and rpc.grpc.status_code.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _decisions = meter.CreateCounter<long>(
            "metering.decisions", unit: "{decision}", description: "CheckLimit verdicts per requested amount, by usage type and decision.");
        _usageRecorded = meter.CreateCounter<long>(
            "metering.usage.recorded", unit: "{unit}", description: "Amounts recorded by TrackUsage (not duplicates), by usage type, in the usage type's unit.");
        _holdsPlaced = meter.CreateCounter<long>("metering.holds.placed", unit: "{hold}", description: "Holds placed by CheckLimit with reserve.");
        _holdsSettled = meter.CreateCounter<long>("metering.holds.settled", unit: "{hold}", description: "Holds settled by TrackUsage.");
        _holdsReleased = meter.CreateCounter<long>("metering.holds.released", unit: "{hold}", description: "Holds given back by ReleaseReservation.");
        _holdsExpired = meter.CreateCounter<long>("metering.holds.expired", unit: "{hold}", description: "Holds that expired unsettled.");
        meter.CreateObservableGauge("metering.holds.live", () => Volatile.Read(ref _liveHolds), unit: "{hold}", description: "Holds open now.");
        _counterRebuilds = meter.CreateCounter<long>(
            "metering.counter.rebuilds", unit: "{counter}", description: "Redis counters rebuilt from the ledger (missing or stale).");
        _reconcileRepairs = meter.CreateCounter<long>(
            "metering.reconcile.repairs", unit: "{counter}", description: "Counters changed by ReconcileCounters.");
        _storeDuration = meter.CreateHistogram(
            "db.client.operation.duration",
            unit: "s",
            description: "Duration of Redis and PostgreSQL calls, by db.system.name and db.operation.name; failed ones carry error.type.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _storeErrors = meter.CreateCounter<long>(
            "metering.store.errors", unit: "{error}", description: "Failed Redis and PostgreSQL calls, by db.system.name, db.operation.name and error.type.");
        _ledgerCommitDuration = meter.CreateHistogram(
            "metering.ledger.commit.duration",
            unit: "s",
            description: "Duration of ledger group commits (usage events and holds committed together).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _ledgerBatchSize = meter.CreateHistogram(
            "metering.ledger.batch.size",
            unit: "{event}",
            description: "Writes (usage events and holds) committed together in one ledger transaction.",
            advice: new InstrumentAdvice<long> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256] });
        meter.CreateObservableGauge(
            "metering.outbox.backlog", () => Volatile.Read(ref _outboxBacklog), unit: "{change}", description: "Ledger changes not yet applied to the Redis counters.");
        meter.CreateObservableGauge(
            "metering.degraded", () => Volatile.Read(ref _degraded), description: "1 while the service answers without Redis (degraded mode), else 0.");
        _rateLimited = meter.CreateCounter<long>(
            "metering.calls.rate_limited", unit: "{call}", description: "Calls refused because the caller was over its request rate, by caller.");
        _unauthenticated = meter.CreateCounter<long>(
            "metering.calls.unauthenticated", unit: "{call}", description: "Calls refused for missing or unknown credentials, by reason.");
    }

    /// <summary>Bucket bounds in seconds, from 0.5 ms to 10 s: the hot path lives in the first few.</summary>
    private static IReadOnlyList<double> LatencyBuckets { get; } =
        [0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    /// <summary>One gRPC call served, whatever answered it (the service or a refusal before it).</summary>
    public void RecordRpc(string service, string method, int statusCode, TimeSpan elapsed) =>
        _rpcDuration.Record(
            elapsed.TotalSeconds,
            new("rpc.system", "grpc"),
            new("rpc.service", service),
            new("rpc.method", method),
            new("rpc.grpc.status_code", statusCode));

    /// <summary>The verdict on each requested amount of a CheckLimit.</summary>
    public void RecordDecisions(IEnumerable<LimitStatus> limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        foreach (var limit in limits)
        {
            _decisions.Add(1, new("metering.usage_type", limit.UsageType), new("metering.decision", DecisionName(limit.Decision)));
        }
    }

    /// <summary>Amounts recorded by one TrackUsage, per usage type.</summary>
    public void RecordUsage(IEnumerable<(string UsageType, long Amount)> amounts)
    {
        ArgumentNullException.ThrowIfNull(amounts);
        foreach (var (usageType, amount) in amounts)
        {
            _usageRecorded.Add(amount, new KeyValuePair<string, object?>("metering.usage_type", usageType));
        }
    }

    public void HoldPlaced() => _holdsPlaced.Add(1);

    public void HoldSettled() => _holdsSettled.Add(1);

    public void HoldReleased() => _holdsReleased.Add(1);

    public void HoldsExpired(long count) => _holdsExpired.Add(count);

    /// <summary>The number of holds open now (reported by whoever counts them).</summary>
    public void SetLiveHolds(long count) => Volatile.Write(ref _liveHolds, count);

    /// <summary>Counters rebuilt from the ledger; <paramref name="reason"/> e.g. "missing", "stale".</summary>
    public void CountersRebuilt(long count, string reason) =>
        _counterRebuilds.Add(count, new KeyValuePair<string, object?>("metering.reason", reason));

    public void ReconcileRepaired(long count) => _reconcileRepairs.Add(count);

    /// <summary>One Redis call; <paramref name="errorType"/> names the failure (exception type or status), null when it worked.</summary>
    public void RecordRedisCall(string operation, TimeSpan elapsed, string? errorType = null) =>
        RecordStoreCall("redis", operation, elapsed, errorType);

    /// <summary>One PostgreSQL call; <paramref name="errorType"/> names the failure, null when it worked.</summary>
    public void RecordPostgresCall(string operation, TimeSpan elapsed, string? errorType = null) =>
        RecordStoreCall("postgresql", operation, elapsed, errorType);

    /// <summary>One ledger group commit of <paramref name="batchSize"/> writes (usage events and holds).</summary>
    public void RecordLedgerCommit(TimeSpan elapsed, int batchSize)
    {
        _ledgerCommitDuration.Record(elapsed.TotalSeconds);
        _ledgerBatchSize.Record(batchSize);
    }

    public void SetOutboxBacklog(long count) => Volatile.Write(ref _outboxBacklog, count);

    public void SetDegraded(bool degraded) => Volatile.Write(ref _degraded, degraded ? 1 : 0);

    public void CallRateLimited(string caller) =>
        _rateLimited.Add(1, new KeyValuePair<string, object?>("metering.caller", caller));

    /// <summary>A call refused for its credentials; <paramref name="reason"/> e.g. "no_credentials", "unknown_api_key".</summary>
    public void CallUnauthenticated(string reason) =>
        _unauthenticated.Add(1, new KeyValuePair<string, object?>("metering.reason", reason));

    public static string DecisionName(Decision decision) => decision switch
    {
        Decision.Allowed => "allowed",
        Decision.LimitExceeded => "limit_exceeded",
        Decision.NotInPlan => "not_in_plan",
        _ => "unknown",
    };

    private void RecordStoreCall(string system, string operation, TimeSpan elapsed, string? errorType)
    {
        var tags = new TagList { { "db.system.name", system }, { "db.operation.name", operation } };
        if (errorType is not null)
        {
            tags.Add("error.type", errorType);
            _storeErrors.Add(1, tags);
        }

        _storeDuration.Record(elapsed.TotalSeconds, tags);
    }
}
