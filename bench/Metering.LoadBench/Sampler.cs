namespace Metering.LoadBench;

/// <summary>Samples PostgreSQL connections and a process's RSS every 200 ms while a scenario runs, keeping the peaks.</summary>
internal sealed class Sampler : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int? _maxConnections;
    private long? _maxResident;

    private Sampler(Func<Task<int>>? connections, Func<long?>? resident)
    {
        _loop = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                if (connections is not null)
                {
                    var now = await connections().ConfigureAwait(false);
                    _maxConnections = Math.Max(_maxConnections ?? 0, now);
                }

                if (resident?.Invoke() is { } bytes)
                {
                    _maxResident = Math.Max(_maxResident ?? 0, bytes);
                }

                try
                {
                    await Task.Delay(200, _stop.Token).ConfigureAwait(false);
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
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        return (_maxConnections, _maxResident);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stop.IsCancellationRequested)
        {
            await _stop.CancelAsync().ConfigureAwait(false);
        }

        try
        {
            await _loop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }

        _stop.Dispose();
    }
}
