using Metering.Core.Errors;
using Metering.Core.Telemetry;
using Metering.Core.Usage;
using Metering.Storage.Redis;

namespace Metering.Server.Hosting;

/// <summary>
/// Runs <see cref="CounterSync"/> on every instance: the outbox drained every <c>Metering:OutboxDrainInterval</c>
/// (so counters follow every commit within a second), holds past their time ended every second. Also reports whether
/// this instance serves without Redis (the degraded gauge; postgres-redis only).
/// </summary>
internal sealed partial class CounterSyncService(
    CounterSync sync,
    MeteringMetrics metrics,
    IConfiguration configuration,
    ILogger<CounterSyncService> logger,
    RedisGuard? guard = null) : BackgroundService
{
    public override Task StartAsync(CancellationToken cancellationToken)
    {
        // The embedded backend has no Redis: it is never degraded.
        if (guard is not null)
        {
            guard.Degraded += (_, _) => metrics.SetDegraded(true);
            guard.Recovered += (_, _) => metrics.SetDegraded(false);
        }

        return base.StartAsync(cancellationToken);
    }

    private static readonly TimeSpan ExpiryInterval = TimeSpan.FromSeconds(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = configuration.GetValue("Metering:OutboxDrainInterval", TimeSpan.FromMilliseconds(200));
        var lastExpiry = DateTimeOffset.MinValue;
        using var timer = new PeriodicTimer(interval);
        do
        {
            await RunAsync(() => sync.DrainAsync(stoppingToken), "drain the counter outbox", stoppingToken);
            if (DateTimeOffset.UtcNow - lastExpiry >= ExpiryInterval)
            {
                lastExpiry = DateTimeOffset.UtcNow;
                await RunAsync(
                    async () =>
                    {
                        var expired = await sync.ExpireHoldsAsync(stoppingToken);
                        metrics.HoldsExpired(expired);
                        return expired;
                    },
                    "end expired holds",
                    stoppingToken);
            }
        }
        while (await WaitAsync(timer, stoppingToken));
    }

    private async Task RunAsync(Func<Task<int>> work, string what, CancellationToken stoppingToken)
    {
        try
        {
            await work();
        }
        catch (StoreUnavailableException)
        {
            // The store's own guard reports outages; the work is retried on the next tick.
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
#pragma warning disable CA1031 // A background loop must outlive any one failure; it is logged and retried.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogFailed(ex, what);
        }
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken stoppingToken)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stoppingToken);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not {What}; retrying on the next tick")]
    private partial void LogFailed(Exception exception, string what);
}
