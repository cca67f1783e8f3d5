using System.Diagnostics;
using Grpc.Core;

namespace Metering.LoadBench;

/// <summary>What one closed-loop run measured: completed calls in the window, their latencies, and every failure.</summary>
internal sealed record LoopResult(long Calls, TimeSpan Window, double P50Ms, double P99Ms, IReadOnlyDictionary<string, long> Errors)
{
    public double CallsPerSecond => Window > TimeSpan.Zero ? Calls / Window.TotalSeconds : 0;
}

/// <summary>
/// A closed loop: <c>callers</c> concurrent callers, each sending its next call as soon as the previous one answers.
/// A warm-up runs first and is not recorded; then either a time window or a fixed number of calls is measured.
/// Errors are counted by gRPC status code (other exceptions by type) over warm-up and measurement alike.
/// </summary>
internal static class ClosedLoop
{
    /// <summary>Runs <paramref name="call"/> (given a run-wide unique sequence number) for <paramref name="warmup"/>, then for <paramref name="duration"/>.</summary>
    public static async Task<LoopResult> ForDurationAsync(int callers, TimeSpan warmup, TimeSpan duration, Func<long, Task> call, MeasuredWindow? window = null)
    {
        var errors = new ErrorCounts();
        long sequence = 0;
        if (warmup > TimeSpan.Zero)
        {
            var warmupEnd = Stopwatch.GetTimestamp() + Ticks(warmup);
            await Task.WhenAll(Enumerable.Range(0, callers).Select(_ => Task.Run(async () =>
            {
                while (Stopwatch.GetTimestamp() < warmupEnd)
                {
                    await errors.RunAsync(call, Interlocked.Increment(ref sequence)).ConfigureAwait(false);
                }
            }))).ConfigureAwait(false);
        }

        window?.Open();
        var start = Stopwatch.GetTimestamp();
        var end = start + Ticks(duration);
        var latencies = new List<long>[callers];
        await Task.WhenAll(Enumerable.Range(0, callers).Select(caller => Task.Run(async () =>
        {
            var mine = latencies[caller] = new List<long>(4096);
            while (true)
            {
                var sent = Stopwatch.GetTimestamp();
                if (sent >= end)
                {
                    return;
                }

                if (await errors.RunAsync(call, Interlocked.Increment(ref sequence)).ConfigureAwait(false))
                {
                    var answered = Stopwatch.GetTimestamp();
                    if (answered <= end)
                    {
                        mine.Add(answered - sent);
                    }
                }
            }
        }))).ConfigureAwait(false);
        window?.Close();

        return Result(latencies, TimeSpan.FromSeconds((double)(end - start) / Stopwatch.Frequency), errors);
    }

    /// <summary>Runs exactly <paramref name="count"/> calls (sequence numbers 1..count) and measures the time they take together.</summary>
    public static async Task<LoopResult> ForCountAsync(int callers, long count, Func<long, Task> call, MeasuredWindow? window = null)
    {
        var errors = new ErrorCounts();
        long sequence = 0;
        var latencies = new List<long>[callers];
        window?.Open();
        var start = Stopwatch.GetTimestamp();
        await Task.WhenAll(Enumerable.Range(0, callers).Select(caller => Task.Run(async () =>
        {
            var mine = latencies[caller] = new List<long>(1024);
            long next;
            while ((next = Interlocked.Increment(ref sequence)) <= count)
            {
                var sent = Stopwatch.GetTimestamp();
                if (await errors.RunAsync(call, next).ConfigureAwait(false))
                {
                    mine.Add(Stopwatch.GetTimestamp() - sent);
                }
            }
        }))).ConfigureAwait(false);
        window?.Close();
        var elapsed = TimeSpan.FromSeconds((double)(Stopwatch.GetTimestamp() - start) / Stopwatch.Frequency);
        return Result(latencies, elapsed, errors);
    }

    private static long Ticks(TimeSpan span) => (long)(span.TotalSeconds * Stopwatch.Frequency);

    private static LoopResult Result(List<long>[] perCaller, TimeSpan window, ErrorCounts errors)
    {
        var all = perCaller.Where(l => l is not null).SelectMany(l => l).ToArray();
        Array.Sort(all);
        return new LoopResult(all.LongLength, window, Percentile(all, 0.50), Percentile(all, 0.99), errors.Snapshot());
    }

    private static double Percentile(long[] sorted, double quantile)
    {
        if (sorted.Length == 0)
        {
            return double.NaN;
        }

        var index = Math.Clamp((int)Math.Ceiling(quantile * sorted.Length) - 1, 0, sorted.Length - 1);
        return sorted[index] * 1000.0 / Stopwatch.Frequency;
    }

    private sealed class ErrorCounts
    {
        private readonly Dictionary<string, long> _counts = new(StringComparer.Ordinal);

        /// <summary>Runs one call; false (and counted) when it failed.</summary>
        public async Task<bool> RunAsync(Func<long, Task> call, long sequence)
        {
            try
            {
                await call(sequence).ConfigureAwait(false);
                return true;
            }
            catch (RpcException e)
            {
                Add(e.StatusCode.ToString());
            }
            catch (Exception e) when (e is BenchCallException or Npgsql.NpgsqlException or StackExchange.Redis.RedisException or TimeoutException or IOException)
            {
                Add(e is BenchCallException bench ? bench.Reason : e.GetType().Name);
            }

            return false;
        }

        public IReadOnlyDictionary<string, long> Snapshot()
        {
            lock (_counts)
            {
                return new Dictionary<string, long>(_counts, StringComparer.Ordinal);
            }
        }

        private void Add(string reason)
        {
            lock (_counts)
            {
                _counts[reason] = _counts.GetValueOrDefault(reason) + 1;
            }
        }
    }
}

/// <summary>A call that answered OK but not as the scenario needs (e.g. a reserve that was refused): counted as an error.</summary>
/// <summary>When a scenario's measured window opened and closed, with the CPU time of the run's processes at both ends.</summary>
internal sealed class MeasuredWindow(CpuSplit cpu)
{
    public DateTime OpenedUtc { get; private set; }

    public DateTime ClosedUtc { get; private set; }

    public CpuSplit.Snapshot? AtOpen { get; private set; }

    public CpuSplit.Snapshot? AtClose { get; private set; }

    public void Open()
    {
        AtOpen = cpu.Take();
        OpenedUtc = DateTime.UtcNow;
    }

    public void Close()
    {
        ClosedUtc = DateTime.UtcNow;
        AtClose = cpu.Take();
    }
}

internal sealed class BenchCallException(string reason) : Exception(reason)
{
    public string Reason { get; } = reason;
}
