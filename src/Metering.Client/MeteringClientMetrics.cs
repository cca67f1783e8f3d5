using System.Diagnostics.Metrics;

namespace Metering.Client;

/// <summary>The client's instruments (meter <c>Metering.Client</c>).</summary>
internal sealed class MeteringClientMetrics : IDisposable
{
    public const string MeterName = "Metering.Client";

    private readonly Meter _meter;

    public MeteringClientMetrics(Spool.UsageSpool spool, TimeProvider clock, IMeterFactory? meterFactory = null)
    {
        _meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _meter.CreateObservableGauge("metering.client.spool.records", spool.Count, "{record}", "Records waiting in the spool to be delivered.");
        _meter.CreateObservableGauge(
            "metering.client.spool.oldest_age",
            () => spool.OldestCreatedAtMs() is { } oldest ? (clock.GetUtcNow().ToUnixTimeMilliseconds() - oldest) / 1000.0 : 0.0,
            "s",
            "Age of the oldest record waiting in the spool.");
        Delivered = _meter.CreateCounter<long>("metering.client.spool.delivered", "{record}", "Records the service acknowledged.");
        DeadLettered = _meter.CreateCounter<long>("metering.client.spool.dead_lettered", "{record}", "Records given up on (refused by the service or too old).");
        Refused = _meter.CreateCounter<long>("metering.client.spool.refused", "{record}", "Records not spooled because the spool was full.");
        DegradedChecks = _meter.CreateCounter<long>("metering.client.checks.degraded", "{check}", "Checks answered by the fail policy because the service could not answer.");
    }

    public Counter<long> Delivered { get; }

    public Counter<long> DeadLettered { get; }

    public Counter<long> Refused { get; }

    public Counter<long> DegradedChecks { get; }

    public void Dispose() => _meter.Dispose();
}
