using System.Diagnostics;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using Metering.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Metering.Benchmarks;

/// <summary>
/// <c>dotnet run -c Release --project bench/Metering.Benchmarks -- concurrent [callers] [seconds]</c>: TrackUsage with
/// unique keys from a closed loop of concurrent callers (default 64) over 1,000 subjects, in process on real servers;
/// prints calls/s, p50/p99 and the most PostgreSQL connections the service held.
/// </summary>
internal static class ConcurrentTrackUsage
{
    private const int Subjects = 1000;
    private static readonly UsageRequest[] Session = [new("minutes_per_month", 30), new("interviews_per_day", 1)];
    private static readonly Dictionary<string, string> NoAttributes = [];

    public static async Task RunAsync(string[] args)
    {
        var callers = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 64;
        var seconds = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10;

        // A loaded machine may take Redis past the shipped 150 ms budget; this measures the ledger, not that budget.
        Environment.SetEnvironmentVariable("Redis__OperationTimeout", "00:00:02");
        await using var servers = await TestServers.StartAsync();
        var ledger = await servers.CreateDatabaseAsync("concurrent");
        await using var host = new HotPathBenchmarks.Host(ledger, servers.RedisConnectionString);
        var meter = host.Services.GetRequiredService<UsageMeter>();
        var directory = host.Services.GetRequiredService<SubscriptionDirectory>();
        var run = Guid.NewGuid().ToString("N")[..8];
        var subjects = Enumerable.Range(0, Subjects).Select(i => $"load-{run}-{i}").ToArray();
        foreach (var subject in subjects)
        {
            await directory.SetAsync(new SetSubscriptionCommand(subject, "premium", 1, "UTC"), CancellationToken.None);
        }

        long sequence = 0;
        var errors = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        async Task<long> CallAsync(int caller)
        {
            var n = Interlocked.Increment(ref sequence);
            var started = Stopwatch.GetTimestamp();
            try
            {
                await meter.TrackUsageAsync(
                    new TrackUsageCommand(subjects[(int)(n % Subjects)], $"e-{n}", Session, null, null, false, NoAttributes, RecordedBy: "bench"),
                    CancellationToken.None);
            }
            catch (Exception ex)
            {
                errors.AddOrUpdate(ex.GetType().Name, 1, (_, count) => count + 1);
                return -1;
            }

            return Stopwatch.GetTimestamp() - started;
        }

        // Warm-up: a few seconds at the same concurrency, not measured.
        await LoopAsync(callers, TimeSpan.FromSeconds(3), CallAsync, null);

        var latencies = new List<long>[callers];
        var peak = 0L;
        using var sampling = new CancellationTokenSource();
        var database = new NpgsqlConnectionStringBuilder(ledger).Database;
        var sampler = Task.Run(async () =>
        {
            await using var probe = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(ledger) { Pooling = false }.ConnectionString);
            await probe.OpenAsync();
            while (!sampling.IsCancellationRequested)
            {
                await using var command = new NpgsqlCommand("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", probe);
                command.Parameters.AddWithValue(database!);
                peak = Math.Max(peak, (long)(await command.ExecuteScalarAsync())!);
                await Task.Delay(100);
            }
        });
        var clock = Stopwatch.StartNew();
        await LoopAsync(callers, TimeSpan.FromSeconds(seconds), CallAsync, latencies);
        var elapsed = clock.Elapsed;
        await sampling.CancelAsync();
        await sampler;

        var all = latencies.SelectMany(l => l).Where(l => l >= 0).Order().ToArray();
        double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
        Console.WriteLine(
            $"TrackUsage, {callers} callers over {Subjects} subjects, {elapsed.TotalSeconds:0.0} s: {all.Length / elapsed.TotalSeconds:0} calls/s, " +
            $"p50 {Ms(all[all.Length / 2]):0.0} ms, p99 {Ms(all[(int)(all.Length * 0.99)]):0.0} ms, {all.Length} calls, " +
            $"at most {peak} PostgreSQL connections, errors: {(errors.IsEmpty ? "none" : string.Join(", ", errors.Select(e => $"{e.Key} {e.Value}")))}");
    }

    private static async Task LoopAsync(int callers, TimeSpan duration, Func<int, Task<long>> call, List<long>[]? latencies)
    {
        var until = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        await Task.WhenAll(Enumerable.Range(0, callers).Select(async caller =>
        {
            var mine = new List<long>();
            if (latencies is not null)
            {
                latencies[caller] = mine;
            }

            while (Stopwatch.GetTimestamp() < until)
            {
                mine.Add(await call(caller));
            }
        }));
    }
}
