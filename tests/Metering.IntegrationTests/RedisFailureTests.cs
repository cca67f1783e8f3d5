using System.Diagnostics;
using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Metering.Storage.Redis;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// What the service answers when Redis fails the way a production Redis does: full (OOM), a replica after a failover
/// (READONLY), hanging (SIGSTOP), misconfigured (ACL, wrong types). Each test runs its own redis-server and host, and
/// never sees UNKNOWN.
/// </summary>
[NonParallelizable]
public sealed class RedisFailureTests
{
    private LocalServer _redis = null!;
    private ConnectionMultiplexer _admin = null!;
    private MeteringHost _host = null!;

    private IServer Server => _admin.GetServers().Single();

    [SetUp]
    public async Task StartAsync()
    {
        _redis = await LocalServer.StartRedisAsync();
        _admin = await ConnectionMultiplexer.ConnectAsync(_redis.ConnectionString);
        _host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, settings: TestBudgets.Shipped(_redis.ConnectionString));
    }

    [TearDown]
    public async Task StopAsync()
    {
        _redis.Signal(Signals.Continue);
        await _host.DisposeAsync();
        await _admin.DisposeAsync();
        await _redis.DisposeAsync();
    }

    [Test]
    public async Task OutOfMemory_WithNoEviction_IsServedFromTheLedger_NeverUnknown()
    {
        var subject = await SubscribeAsync("starter");
        await CheckAsync(subject, reserve: false); // counters and subscription cached
        await Server.ExecuteAsync("CONFIG", "SET", "maxmemory-policy", "noeviction");
        await Server.ExecuteAsync("CONFIG", "SET", "maxmemory", "1");

        var reserve = await OutcomeAsync(() => CheckAsync(subject, reserve: true));
        var check = await OutcomeAsync(() => CheckAsync(subject, reserve: false));
        var track = await OutcomeAsync(() => TrackAsync(subject, "oom-1", enforce: false));
        var enforced = await OutcomeAsync(() => TrackAsync(subject, "oom-2", enforce: true));
        var remaining = await OutcomeAsync(() => _host.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject }).ResponseAsync);

        Assert.Multiple(() =>
        {
            // A hold is a ledger record and the check script only reads: a full Redis refuses none of them; the counters
            // catch up through the outbox once Redis takes writes again.
            foreach (var (name, outcome) in new[] { ("reserve", reserve), ("check", check), ("track", track), ("enforced", enforced), ("remaining", remaining) })
            {
                Assert.That(outcome.Code, Is.EqualTo(StatusCode.OK), $"{name}: {outcome.Detail}");
            }
        });
    }

    [Test]
    public async Task ReadOnlyReplica_AfterAFailover_IsServed_NeverUnknown()
    {
        var subject = await SubscribeAsync("starter");
        await CheckAsync(subject, reserve: false);
        var fresh = await SubscribeAsync("starter"); // its counter is not cached yet
        await Server.ExecuteAsync("REPLICAOF", "127.0.0.1", TcpPorts.GetFreeLoopbackPort().ToString(System.Globalization.CultureInfo.InvariantCulture));

        var reserve = await OutcomeAsync(() => CheckAsync(subject, reserve: true));
        var again = await OutcomeAsync(() => CheckAsync(subject, reserve: true));
        var track = await OutcomeAsync(() => TrackAsync(subject, "replica-1", enforce: false));
        var uncached = await CheckAsync(fresh, reserve: false); // its counter cannot be written to a replica
        var planChange = await OutcomeAsync(() => _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" }).ResponseAsync);

        Assert.Multiple(() =>
        {
            Assert.That(reserve.Code, Is.EqualTo(StatusCode.OK), reserve.Detail);
            Assert.That(again.Code, Is.EqualTo(StatusCode.OK), again.Detail);
            Assert.That(track.Code, Is.EqualTo(StatusCode.OK), track.Detail);
            Assert.That(uncached.Degraded, Is.True, "answered from the ledger");
            Assert.That(uncached.Allowed, Is.True);
            Assert.That(planChange.Code, Is.EqualTo(StatusCode.Unavailable), "a plan change the shared cache cannot take is not answered OK");
            Assert.That(planChange.RetryDelay, Is.Not.Null, "UNAVAILABLE says when to retry (google.rpc.RetryInfo)");
        });
    }

    [Test]
    public async Task HangingRedis_CostsTheFirstCallItsBudget_ThenFailsFast_AndIsUsedAgainWithinASecondOfReturning()
    {
        var guard = _host.Services.GetRequiredService<RedisGuard>();
        var degraded = 0;
        var recovered = 0;
        guard.Degraded += (_, _) => Interlocked.Increment(ref degraded);
        guard.Recovered += (_, _) => Interlocked.Increment(ref recovered);
        var subject = await SubscribeAsync("starter");
        await CheckAsync(subject, reserve: false);
        await Task.Delay(TimeSpan.FromSeconds(1.1)); // a quiet instance: no call in the breaker's last sampling second

        Assert.That(_redis.Signal(Signals.Pause), Is.True, "SIGSTOP redis-server");
        var paused = DateTimeOffset.UtcNow;
        var first = await TimedOutcomeAsync(() => CheckAsync(subject, reserve: false));
        var firstAnswered = DateTimeOffset.UtcNow;
        var guarded = new List<TimeSpan>();
        var database = _host.Services.GetRequiredService<IConnectionMultiplexer>().GetDatabase();
        for (var i = 0; i < 10; i++)
        {
            var watch = Stopwatch.StartNew();
            Assert.ThrowsAsync<Metering.Core.Errors.StoreUnavailableException>(() => guard.RunAsync("get", () => database.StringGetAsync("any"), CancellationToken.None));
            guarded.Add(watch.Elapsed);
        }

        var later = new List<(Outcome Outcome, TimeSpan Elapsed)>();
        for (var i = 0; i < 10; i++)
        {
            later.Add(await TimedOutcomeAsync(() => CheckAsync(subject, reserve: false)));
        }

        var unavailableWhilePaused = guard.IsAvailable;
        Assert.That(_redis.Signal(Signals.Continue), Is.True, "SIGCONT redis-server");
        var resumed = Stopwatch.StartNew();
        CheckLimitResponse afterResume;
        do
        {
            afterResume = await CheckAsync(subject, reserve: false);
            if (afterResume.Degraded)
            {
                await Task.Delay(20);
            }
        }
        while (afterResume.Degraded && resumed.Elapsed < TimeSpan.FromSeconds(5));

        var servedAgainAfter = resumed.Elapsed;
        var laterTimes = later.Select(l => l.Elapsed.TotalMilliseconds).Order().ToList();
        var lines = _host.Log.Lines.Where(l => l.Category == typeof(RedisGuard).FullName).ToList();
        var opened = lines.FirstOrDefault(l => l.Message == "Redis unavailable, serving degraded")?.At ?? DateTimeOffset.MaxValue;
        var guardedTimes = guarded.Order().ToList();
        TestContext.Out.WriteLine(
            $"first call {first.Elapsed.TotalMilliseconds:0} ms, breaker open {(opened - paused).TotalMilliseconds:0} ms after SIGSTOP; " +
            $"Redis calls while the breaker is open: median {guardedTimes[guardedTimes.Count / 2].TotalMilliseconds:0.00} ms, at most {guardedTimes[^1].TotalMilliseconds:0.00} ms; " +
            $"later calls (ms): {string.Join(", ", laterTimes.Select(t => t.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)))}; served by Redis again {servedAgainAfter.TotalMilliseconds:0} ms after SIGCONT");
        Assert.Multiple(() =>
        {
            Assert.That(first.Outcome.Code, Is.EqualTo(StatusCode.OK), "answered from the ledger: " + first.Outcome.Detail);
            Assert.That(opened, Is.LessThanOrEqualTo(firstAnswered), "what the hanging Redis costs the first call: the breaker is open after it");
            Assert.That(first.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1)), "the first call: one Redis budget, then PostgreSQL work");
            Assert.That(later.Select(l => l.Outcome.Code), Is.All.EqualTo(StatusCode.OK));
            Assert.That(guardedTimes[guardedTimes.Count / 2], Is.LessThan(TimeSpan.FromMilliseconds(10)), "what Redis costs a call while the breaker is open (median)");
            Assert.That(laterTimes[laterTimes.Count / 2], Is.LessThan(50), "median of the calls while the breaker is open (ms): PostgreSQL work and no Redis wait");
            Assert.That(unavailableWhilePaused, Is.False, "RedisGuard.IsAvailable while Redis hangs");
            Assert.That(afterResume.Degraded, Is.False, "served by the counters again");
            Assert.That(servedAgainAfter, Is.LessThan(TimeSpan.FromSeconds(1)), "back on Redis within a second");
            Assert.That(guard.IsAvailable, Is.True);
            Assert.That((degraded, recovered), Is.EqualTo((1, 1)), "one Degraded and one Recovered event");
            Assert.That(lines.Count(l => l.Message == "Redis unavailable, serving degraded"), Is.EqualTo(1), string.Join("\n", lines));
            Assert.That(lines.Count(l => l.Message.StartsWith("Redis available again after ", StringComparison.Ordinal)), Is.EqualTo(1), string.Join("\n", lines));
        });
    }

    [Test]
    public async Task ConfigurationErrors_AreServedFromTheLedger_LoggedOnce_AndFailHealthUntilACallSucceeds()
    {
        var subject = await SubscribeAsync("starter");
        await CheckAsync(subject, reserve: false);
        var health = _host.Services.GetRequiredService<HealthCheckService>();

        // A wrong type where Metering keeps a subject's counter: the check script fails on it.
        var broken = await SubscribeAsync("starter");
        var counter = await CheckAsync(broken, reserve: false);
        await _admin.GetDatabase().StringSetAsync($"mtr:{{{broken}}}:c:{Minutes}:{counter.Limits[0].PeriodStart.ToDateTimeOffset().ToUnixTimeSeconds()}", "not a hash");
        var wrongType = await CheckAsync(broken, reserve: false);
        await CheckAsync(subject, reserve: false); // a call that succeeds clears it

        // A user that may not run scripts or read hashes: every Metering call is refused.
        await Server.ExecuteAsync("ACL", "SETUSER", "default", "-@all", "+ping", "+echo", "+info", "+client", "+cluster", "+role", "+subscribe", "+config", "+acl");
        var mark = _host.Log.Mark;
        var refused = new List<CheckLimitResponse>();
        for (var i = 0; i < 3; i++)
        {
            refused.Add(await CheckAsync(subject, reserve: false));
        }

        var errors = _host.Log.Since(mark, LogLevel.Error).Where(l => l.Category == typeof(RedisGuard).FullName).ToList();
        var whileRefused = await health.CheckHealthAsync();
        await Server.ExecuteAsync("ACL", "SETUSER", "default", "+@all");
        var afterFix = await OutcomeAsync(() => CheckAsync(subject, reserve: false));
        var healed = await health.CheckHealthAsync();

        Assert.Multiple(() =>
        {
            Assert.That(wrongType.Degraded, Is.True, "WRONGTYPE: answered from the ledger");
            Assert.That(wrongType.Allowed, Is.True);
            Assert.That(refused.Select(r => r.Degraded), Is.All.True, "every call refused by Redis is answered from the ledger");
            Assert.That(errors, Has.Count.EqualTo(1), "one error line for a configuration error, not one per call:\n" + string.Join("\n", errors));
            Assert.That(errors.FirstOrDefault()?.Message, Does.Contain("NOPERM"));
            Assert.That(whileRefused.Entries["redis"].Status, Is.EqualTo(HealthStatus.Degraded), "reported, but still serving from the ledger: " + whileRefused.Entries["redis"].Description);
            Assert.That(whileRefused.Entries["redis"].Description, Does.Contain("NOPERM"));
            Assert.That(afterFix.Code, Is.EqualTo(StatusCode.OK), afterFix.Detail);
            Assert.That(healed.Entries["redis"].Status, Is.EqualTo(HealthStatus.Healthy), healed.Entries["redis"].Description);
        });
    }

    [Test]
    public async Task StartUp_WithNoEvictionAndAMemoryLimit_WarnsAndRecommendsAllKeysLru()
    {
        await Server.ExecuteAsync("CONFIG", "SET", "maxmemory-policy", "noeviction");
        await Server.ExecuteAsync("CONFIG", "SET", "maxmemory", "100mb");
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, settings: TestBudgets.Shipped(_redis.ConnectionString));
        await using var withoutAdmin = await MeteringHost.StartAsync(
            ServiceTest.DefaultStartForTests,
            settings: TestBudgets.Shipped(_redis.ConnectionString.Replace(",allowAdmin=true", "", StringComparison.Ordinal)));
        await Server.ExecuteAsync("CONFIG", "SET", "maxmemory-policy", "allkeys-lru");
        await using var lru = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, settings: TestBudgets.Shipped(_redis.ConnectionString));

        var noEviction = host.Log.Lines.Where(l => l.Category == typeof(RedisMemoryPolicy).FullName).ToList();
        var allKeysLru = lru.Log.Lines.Where(l => l.Category == typeof(RedisMemoryPolicy).FullName).ToList();
        var fromInfo = withoutAdmin.Log.Lines.Where(l => l.Category == typeof(RedisMemoryPolicy).FullName).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(noEviction, Has.Count.EqualTo(1));
            Assert.That(noEviction.FirstOrDefault()?.Level, Is.EqualTo(LogLevel.Warning));
            Assert.That(noEviction.FirstOrDefault()?.Message, Does.Contain("noeviction").And.Contain("allkeys-lru"));
            Assert.That(fromInfo, Has.Count.EqualTo(1), "read from INFO memory where CONFIG is not allowed");
            Assert.That(fromInfo.FirstOrDefault()?.Level, Is.EqualTo(LogLevel.Warning), string.Join("\n", fromInfo));
            Assert.That(fromInfo.FirstOrDefault()?.Message, Does.Contain("noeviction").And.Contain("allkeys-lru"));
            Assert.That(allKeysLru, Has.Count.EqualTo(1));
            Assert.That(allKeysLru.FirstOrDefault()?.Level, Is.EqualTo(LogLevel.Information));
            Assert.That(allKeysLru.FirstOrDefault()?.Message, Does.Contain("allkeys-lru"));
        });
    }

    private async Task<string> SubscribeAsync(string plan)
    {
        var subject = $"{plan}-{Guid.NewGuid():N}";
        await _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = plan });
        return subject;
    }

    private Task<CheckLimitResponse> CheckAsync(string subject, bool reserve) =>
        _host.Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } },
            Reserve = reserve,
        }).ResponseAsync;

    private Task<TrackUsageResponse> TrackAsync(string subject, string key, bool enforce) =>
        _host.Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = key,
            Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } },
            Enforce = enforce,
        }).ResponseAsync;

    internal static async Task<Outcome> OutcomeAsync<T>(Func<Task<T>> call)
    {
        try
        {
            await call();
            return new Outcome(StatusCode.OK, "", null);
        }
        catch (RpcException ex)
        {
            var retry = ex.GetRpcStatus()?.GetDetail<RetryInfo>();
            return new Outcome(ex.StatusCode, ex.Status.Detail, retry?.RetryDelay?.ToTimeSpan());
        }
    }

    internal static async Task<(Outcome Outcome, TimeSpan Elapsed)> TimedOutcomeAsync<T>(Func<Task<T>> call)
    {
        var watch = Stopwatch.StartNew();
        var outcome = await OutcomeAsync(call);
        return (outcome, watch.Elapsed);
    }

    internal sealed record Outcome(StatusCode Code, string Detail, TimeSpan? RetryDelay);
}
