using System.Globalization;
using Metering.Testing;
using Npgsql;
using StackExchange.Redis;

namespace Metering.FaultTests;

/// <summary>
/// Faults on real processes while a retrying load runs on two instances; after each, <see cref="Checker"/> compares the
/// ledger and the counters with what the clients were told, and one row goes into the reliability table. Every
/// acknowledged call must be in the ledger exactly once, and nothing may be counted twice, left stale in a counter,
/// granted over a limit or answered UNKNOWN/INTERNAL. Not part of <c>make test</c>; run with <c>make test-faults</c>.
/// </summary>
[TestFixture]
[Category("Faults")]
[NonParallelizable]
public sealed class FaultScenarioTests
{
    private static readonly TimeSpan ScenarioTimeout = TimeSpan.FromMinutes(3);
    private FaultRig _rig = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        _rig = await FaultRig.StartAsync(timeout.Token);
        await TestContext.Progress.WriteLineAsync(
            $"Fault rig: PostgreSQL {_rig.Postgres.Description} (pid {_rig.Postgres.ProcessId}), Redis {_rig.Redis.Description} (pid {_rig.Redis.ProcessId}), instances {_rig[0].Process.Address} (pid {_rig[0].Process.ProcessId}) and {_rig[1].Process.Address} (pid {_rig[1].Process.ProcessId})");
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        if (_rig is not null)
        {
            await _rig.DisposeAsync();
        }
    }

    [Test, Order(1)]
    public Task RedisFlushAll_Once() => RunAsync("Redis FLUSHALL once", new LoadSpec(), async (spec, ct) =>
    {
        await Task.Delay(spec.Window * 0.4, ct);
        await _rig.RedisServer.FlushAllDatabasesAsync();
    });

    [Test, Order(2)]
    public Task RedisFlushAll_RepeatedlyDuringParallelEnforcedTracking() => RunAsync(
        "Redis FLUSHALL every 250 ms during parallel enforced tracking",
        new LoadSpec { UniqueTracks = 80, Reserves = 60, EnforcedTracks = 200, LimitedSubjects = 20, Concurrency = 24 },
        async (spec, ct) =>
        {
            await Task.Delay(spec.Window * 0.15, ct);
            for (var i = 0; i < 24; i++)
            {
                await _rig.RedisServer.FlushAllDatabasesAsync();
                await Task.Delay(250, ct);
            }
        });

    [Test, Order(3)]
    public Task RedisKill9_AndRestart() => RunAsync("Redis kill -9, restarted after 2 s (empty)", new LoadSpec(), async (spec, ct) =>
    {
        await Task.Delay(spec.Window * 0.3, ct);
        try
        {
            await _rig.Redis.StopAsync(Signals.Sigkill);
            await Task.Delay(TimeSpan.FromSeconds(2), ct);
        }
        finally
        {
            await _rig.Redis.StartAgainAsync(ct);
        }
    });

    [Test, Order(4)]
    public Task RedisMaxMemory_AllKeysLru() => RunAsync("Redis maxmemory 2mb allkeys-lru (evicting)", new LoadSpec { EnforcedTracks = 60 }, async (spec, ct) =>
    {
        await Task.Delay(spec.Window * 0.2, ct);
        var server = _rig.RedisServer;
        var database = _rig.RedisAdmin.GetDatabase();
        try
        {
            await server.ConfigSetAsync("maxmemory-policy", "allkeys-lru");
            await server.ConfigSetAsync("maxmemory", "2mb");

            // Memory pressure from another tenant of the same Redis: bounded filler keys that expire on their own.
            var filler = new string('x', 2048);
            var until = DateTime.UtcNow + spec.Window * 0.6;
            for (var batch = 0; batch < 200 && DateTime.UtcNow < until; batch++)
            {
                await Task.WhenAll(Enumerable.Range(0, 50).Select(i =>
                    database.StringSetAsync($"fault-filler:{batch}:{i}", filler, TimeSpan.FromSeconds(30))));
                await Task.Delay(20, ct);
            }
        }
        finally
        {
            await server.ConfigSetAsync("maxmemory", "0");
            await server.ConfigSetAsync("maxmemory-policy", "noeviction");
        }
    });

    [Test, Order(5)]
    public Task RedisMaxMemory_NoEvictionReached() => RunAsync("Redis maxmemory reached, noeviction (OOM) for 4 s", new LoadSpec { EnforcedTracks = 60 }, async (spec, ct) =>
    {
        await Task.Delay(spec.Window * 0.3, ct);
        var server = _rig.RedisServer;
        try
        {
            var info = (await server.InfoAsync("memory")).SelectMany(g => g).ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
            var used = long.Parse(info["used_memory"], CultureInfo.InvariantCulture);
            await server.ConfigSetAsync("maxmemory-policy", "noeviction");

            // Memory in use is already past the limit: Redis refuses every write (scripts that write included) with OOM.
            await server.ConfigSetAsync("maxmemory", Math.Max(64 * 1024, used - (64 * 1024)).ToString(CultureInfo.InvariantCulture));
            await Task.Delay(TimeSpan.FromSeconds(4), ct);
        }
        finally
        {
            await server.ConfigSetAsync("maxmemory", "0");
        }
    });

    [Test, Order(6)]
    public async Task RedisFailover_ToLaggingReplica()
    {
        using var timeout = new CancellationTokenSource(ScenarioTimeout);
        var replica = await LocalServer.StartRedisAsync(timeout.Token, "--replicaof", "127.0.0.1", _rig.Redis.Port.ToString(CultureInfo.InvariantCulture));
        var promoted = false;
        try
        {
            await using (var admin = await ConnectionMultiplexer.ConnectAsync(replica.ConnectionString))
            {
                var server = admin.GetServer(admin.GetEndPoints().Single());
                var until = DateTime.UtcNow.AddSeconds(30);
                while (!((string?)await server.ExecuteAsync("INFO", "replication"))!.Contains("master_link_status:up", StringComparison.Ordinal))
                {
                    Assert.That(DateTime.UtcNow, Is.LessThan(until), "the replica did not sync with the primary");
                    await Task.Delay(100, timeout.Token);
                }
            }

            await RunAsync("Redis failover: primary killed, lagging replica promoted, instances restarted on it", new LoadSpec { Window = TimeSpan.FromSeconds(10), EnforcedTracks = 60, RetryBudget = TimeSpan.FromSeconds(90) }, async (spec, ct) =>
            {
                // The replica stops applying the stream (SIGSTOP) while the primary takes writes: it lags.
                await Task.Delay(spec.Window * 0.25, ct);
                replica.Signal(Signals.Pause);
                await Task.Delay(spec.Window * 0.3, ct);
                await _rig.Redis.StopAsync(Signals.Sigkill);
                replica.Signal(Signals.Continue);
                await using (var admin = await ConnectionMultiplexer.ConnectAsync(replica.ConnectionString))
                {
                    await admin.GetServer(admin.GetEndPoints().Single()).ExecuteAsync("REPLICAOF", "NO", "ONE");
                }

                promoted = true;
                await _rig.SwitchRedisAsync(replica, ct);
            });
        }
        finally
        {
            if (!promoted)
            {
                replica.Signal(Signals.Continue);
                await replica.DisposeAsync();
            }
        }
    }

    [Test, Order(7)]
    public Task PostgresRestartFast() => RunAsync("PostgreSQL fast restart (pg_ctl restart -m fast)", new LoadSpec { EnforcedTracks = 60 }, async (spec, ct) =>
    {
        await Task.Delay(spec.Window * 0.3, ct);
        try
        {
            await _rig.Postgres.StopAsync(Signals.Interrupt); // SIGINT to the postmaster: what pg_ctl -m fast sends
        }
        finally
        {
            await _rig.Postgres.StartAgainAsync(ct);
        }
    });

    [Test, Order(8)]
    public Task PostgresStopped10Seconds() => RunAsync("PostgreSQL stopped for 10 s", new LoadSpec { Window = TimeSpan.FromSeconds(14), EnforcedTracks = 60 }, async (spec, ct) =>
    {
        await Task.Delay(spec.Window * 0.15, ct);
        try
        {
            await _rig.Postgres.StopAsync(Signals.Interrupt);
            await Task.Delay(TimeSpan.FromSeconds(10), ct);
        }
        finally
        {
            await _rig.Postgres.StartAgainAsync(ct);
        }
    });

    [Test, Order(9)]
    public Task TwoInstancesAt64ConcurrentCalls_PostgresMaxConnections100() => RunAsync(
        "2 instances × 64 concurrent calls, PostgreSQL max_connections=100",
        new LoadSpec { UniqueTracks = 256, Reserves = 64, EnforcedTracks = 64, LimitedSubjects = 16, Concurrency = 128, Window = TimeSpan.FromSeconds(2), RetryBudget = TimeSpan.FromSeconds(30) },
        async (spec, ct) =>
        {
            // No fault but the load itself: report how many connections the server had at most meanwhile.
            var peak = 0L;
            await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(_rig.Database) { Pooling = false }.ConnectionString);
            await connection.OpenAsync(ct);
            for (var until = DateTime.UtcNow + spec.Window + TimeSpan.FromSeconds(5); DateTime.UtcNow < until;)
            {
                await using var command = new NpgsqlCommand("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'", connection);
                peak = Math.Max(peak, (long)(await command.ExecuteScalarAsync(ct))!);
                await Task.Delay(100, ct);
            }

            await TestContext.Progress.WriteLineAsync($"PostgreSQL client connections at most: {peak} (max_connections=100)");
        });

    [Test, Order(10)]
    public Task AccessExclusiveLockOnTotals10Seconds() => RunAsync("ACCESS EXCLUSIVE lock on usage_totals for 10 s", new LoadSpec { Window = TimeSpan.FromSeconds(14), EnforcedTracks = 60 }, async (spec, ct) =>
    {
        await Task.Delay(spec.Window * 0.15, ct);
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(_rig.Database) { Pooling = false }.ConnectionString);
        await connection.OpenAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        await using (var command = new NpgsqlCommand("LOCK TABLE usage_totals IN ACCESS EXCLUSIVE MODE", connection, transaction))
        {
            await command.ExecuteNonQueryAsync(ct);
        }

        await Task.Delay(TimeSpan.FromSeconds(10), ct);
        await transaction.CommitAsync(ct);
    });

    [Test, Order(11)]
    public Task InstanceSigkill_WhileCallsAreInFlight() => RunAsync("SIGKILL of one instance with calls in flight", new LoadSpec { Concurrency = 32, EnforcedTracks = 60 }, async (spec, ct) =>
    {
        await Task.Delay(spec.Window * 0.4, ct);
        await _rig.StopInstanceAsync(1); // Process.Kill: SIGKILL of that process id; calls then go to instance 0
    });

    [Test, Order(12)]
    public Task CallersCancellingRightAfterSending() => RunAsync(
        "callers cancel 1–15 ms after sending, then retry",
        new LoadSpec { CancelFirstAttempt = true, EnforcedTracks = 60 },
        (_, _) => Task.CompletedTask);

    [Test, Order(13)]
    public Task InstanceClocks30SecondsApart() => RunAsync(
        "instance clocks 30 s apart (reservations of 15 s)",
        new LoadSpec { UniqueTracks = 80, Reserves = 150, LimitedSubjects = 15, ReservationTtl = TimeSpan.FromSeconds(15), MaxSession = TimeSpan.FromSeconds(1.5) },
        (_, _) => Task.CompletedTask,
        offset1: TimeSpan.FromSeconds(30));

    [Test, Order(14)]
    public async Task PeriodBoundaryCrossedDuringTheRun()
    {
        // Both instances' clocks set so that UTC midnight (the end of every interviews_per_day period) falls 40 % into
        // the load window; reserves placed before it are settled after it.
        var spec = new LoadSpec { UniqueTracks = 60, Reserves = 150, EnforcedTracks = 60, LimitedSubjects = 10, MaxSession = TimeSpan.FromSeconds(2) };
        using var timeout = new CancellationTokenSource(ScenarioTimeout);
        var lead = TimeSpan.FromSeconds(35);
        DateTimeOffset loadStart;
        TimeSpan offset;
        for (var attempt = 1; ; attempt++)
        {
            // Restarting takes a while on a busy machine: when it took longer than the lead, try again with more.
            var restart = DateTimeOffset.UtcNow;
            loadStart = restart + lead;
            var crossing = loadStart + (spec.Window * 0.4);
            offset = crossing.UtcDateTime.Date.AddDays(1) - crossing.UtcDateTime;
            await _rig.EnsureInstancesAsync(offset, offset, timeout.Token);
            var took = DateTimeOffset.UtcNow - restart;
            if (took < lead - TimeSpan.FromSeconds(2) || attempt == 2)
            {
                break;
            }

            lead = took * 2;
        }

        var row = await RunAsync("UTC midnight (period boundary) crossed during the run", spec, (_, _) => Task.CompletedTask, offset, offset, loadStart);
        Assert.That(row.InterviewPeriods, Is.EqualTo(2), "the run did not cross the boundary (the instances took too long to start)");
    }

    private async Task<FaultRow> RunAsync(
        string scenario,
        LoadSpec spec,
        Func<LoadSpec, CancellationToken, Task> fault,
        TimeSpan? offset0 = null,
        TimeSpan? offset1 = null,
        DateTimeOffset? notBefore = null)
    {
        using var timeout = new CancellationTokenSource(ScenarioTimeout);
        var ct = timeout.Token;
        await _rig.EnsureInstancesAsync(offset0 ?? TimeSpan.Zero, offset1 ?? TimeSpan.Zero, ct);
        var prefix = $"f{TestContext.CurrentContext.Test.Properties.Get("_ORDER") ?? 0}x{Guid.NewGuid():N}"[..12];
        var load = new Load(_rig, prefix, spec);
        await load.PrepareAsync(ct);
        if (notBefore is { } start && start > DateTimeOffset.UtcNow)
        {
            await Task.Delay(start - DateTimeOffset.UtcNow, ct);
        }

        var running = load.RunAsync(ct);
        var injected = fault(spec, ct);
        await Task.WhenAll(running, injected);

        var row = await Checker.CheckAsync(scenario, _rig, prefix, load.Result, ct);
        await FaultReport.AddAsync(row);
        if (row.UnknownOrInternal > 0)
        {
            // Which exceptions the instances logged: the cause of the UNKNOWN answers.
            var causes = new[] { _rig[0], _rig[1] }
                .SelectMany(instance => instance.Process.Output.Split('\n'))
                .Select(line => line.Trim())
                .Where(line => line.Contains("Exception: ", StringComparison.Ordinal))
                .GroupBy(line => line, StringComparer.Ordinal)
                .OrderByDescending(g => g.Count())
                .Take(4)
                .Select(g => $"  {g.Count()}× {g.Key[..Math.Min(g.Key.Length, 300)]}");
            await TestContext.Progress.WriteLineAsync($"Exceptions logged by the instances since they started:\n{string.Join('\n', causes)}");
        }

        Assert.Multiple(() =>
        {
            Assert.That(row.Acknowledged, Is.GreaterThan(0), "the load ran");
            Assert.That(row.InLedger, Is.EqualTo(row.Acknowledged), "every acknowledged TrackUsage is in the ledger, once, with its amounts");
            Assert.That(row.DuplicatesCounted, Is.Zero, "events counted twice, or running totals apart from their events");
            Assert.That(row.CountersOffLedger, Is.Zero, "Redis counters present with a total other than the ledger's, 1 s after the load");
            Assert.That(row.GrantedOverLimit, Is.Zero, "interviews granted (ledger + live holds) over the starter limit of 3 a day");
            Assert.That(row.UnknownOrInternal, Is.Zero, "calls answered UNKNOWN or INTERNAL");
        });
        return row;
    }
}
