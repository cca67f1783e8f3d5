namespace Metering.LoadBench;

/// <summary>Samples PostgreSQL connections and a process's RSS every 200 ms while a scenario runs, keeping the peaks.</summary>
internal sealed class Sampler : IAsyncDisposable
{
    private readonly CancellationTokenSource stop = new();
    private readonly Task loop;
    private int? maxConnections;
    private long? maxResident;

    private Sampler(Func<Task<int>>? connections, Func<long?>? resident)
    {
        loop = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                if (connections is not null)
                {
                    var now = await connections().ConfigureAwait(false);
                    maxConnections = Math.Max(maxConnections ?? 0, now);
                }

                if (resident?.Invoke() is { } bytes)
                {
                    maxResident = Math.Max(maxResident ?? 0, bytes);
                }

                try
                {
                    await Task.Delay(200, stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        });
    }

    public static Sampler Start(Func<Task<int>>? connections, Func<long?>? resident) => new(connections, resident);

    /// <summary>Stops sampling; the peaks seen (null for what was not sampled).</summary>
    public async Task<(int? Connections, long? Resident)> StopAsync()
    {
        await stop.CancelAsync().ConfigureAwait(false);
        await loop.ConfigureAwait(false);
        return (maxConnections, maxResident);
    }

    public async ValueTask DisposeAsync()
    {
        if (!stop.IsCancellationRequested)
        {
            await stop.CancelAsync().ConfigureAwait(false);
        }

        try
        {
            await loop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }

        stop.Dispose();
    }
}
