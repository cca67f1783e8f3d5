using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using StackExchange.Redis;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// Redis servers of the test's own that fail the way production ones do: a replica promoted with lagging data, a server
/// that hangs. Counters never trust data from another server's life, and every change answered OK reaches the cache.
/// </summary>
public sealed class RedisFailoverTests : ServiceTest
{
    private readonly List<IAsyncDisposable> _owned = [];
    private string? _database;

    [TearDown]
    public async Task StopOwnServersAsync()
    {
        foreach (var owned in Enumerable.Reverse(_owned))
        {
            await owned.DisposeAsync();
        }

        _owned.Clear();
        _database = null;
    }

    [Test]
    public async Task CheckLimit_AfterFailoverToALaggingReplica_RebuildsFromTheLedgerInsteadOfTrustingLowCounters()
    {
        var primary = await RedisAsync();
        var replica = await RedisAsync();
        var onPrimary = await HostAsync(primary);
        var subject = NewSubject();
        await onPrimary.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await onPrimary.Metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "a", Usage = { Usage(Minutes, 100) } });
        await LedgerProbe.OutboxDrainedAsync(onPrimary, subject);

        // The replica copies the primary (100 minutes), then stops following it: what a lagging replica holds.
        var replicaServer = Direct(replica);
        await replicaServer.ExecuteAsync("REPLICAOF", "127.0.0.1", primary.Port);
        await WaitUntilAsync(async () => (await replicaServer.ExecuteAsync("INFO", "replication")).ToString().Contains("master_link_status:up", StringComparison.Ordinal)
            && (await replicaServer.ExecuteAsync("DBSIZE")).ToString() != "0");
        await replicaServer.ExecuteAsync("REPLICAOF", "NO", "ONE");
        await onPrimary.Metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "b", Usage = { Usage(Minutes, 195) } });

        // Failover: an instance now talks to the promoted replica, which holds 100 where the ledger has 295.
        var onReplica = await HostAsync(replica);
        var check = await onReplica.Metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Minutes, 10) } });

        Assert.Multiple(() =>
        {
            Assert.That(check.Allowed, Is.False);
            Assert.That(check.Limits[0].Used, Is.EqualTo(295));
            Assert.That(check.Degraded, Is.False, "rebuilt from the ledger into the new server");
        });
    }

    [Test]
    public async Task SetSubscription_WhileRedisHangs_IsNotAnsweredOk_AndTheCacheHasTheChangeWithinASecondOfItsReturn()
    {
        var redis = await RedisAsync();
        var host = await HostAsync(redis, new Dictionary<string, string?> { ["Redis:OperationTimeout"] = "00:00:00.300" });
        var subject = NewSubject();
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });

        Assert.That(redis.Signal(Signals.Pause), Is.True);
        RpcException error;
        try
        {
            error = Assert.ThrowsAsync<RpcException>(() => host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" }).ResponseAsync)!;
        }
        finally
        {
            redis.Signal(Signals.Continue);
        }

        var resumed = DateTime.UtcNow;
        await WaitUntilAsync(async () => (string?)await Direct(redis).HashGetAsync($"mtr:{{{subject}}}:sub", "plan") == "pro");
        var took = DateTime.UtcNow - resumed;

        Assert.Multiple(() =>
        {
            Assert.That(error.StatusCode, Is.EqualTo(StatusCode.Unavailable), "a change every instance may not see yet is not answered OK");
            Assert.That(took, Is.LessThan(TimeSpan.FromSeconds(1.5)), "the outbox brought the shared cache up to date");
        });
    }

    [Test]
    public async Task TrackUsage_CommittedWhileRedisRefusesWrites_ReachesTheCounterWithinASecondOfItsReturn()
    {
        var redis = await RedisAsync();
        var host = await HostAsync(redis);
        var subject = NewSubject();
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" });
        await host.Metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "before", Usage = { Usage(Minutes, 10) } });
        await LedgerProbe.OutboxDrainedAsync(host, subject);
        var direct = Direct(redis);
        var key = (string)((RedisResult[])(await direct.ExecuteAsync("KEYS", $"mtr:{{{subject}}}:c:{Minutes}:*"))!).Single()!;

        // Full, and refusing writes: the ledger commits, the counter cannot follow.
        await direct.ExecuteAsync("CONFIG", "SET", "maxmemory-policy", "noeviction");
        await direct.ExecuteAsync("CONFIG", "SET", "maxmemory", "1");
        TrackUsageResponse during;
        try
        {
            during = await host.Metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "during", Usage = { Usage(Minutes, 25) } });
            await Task.Delay(500);
            Assert.That((long)await direct.HashGetAsync(key, "t"), Is.EqualTo(10), "Redis refused the write");
        }
        finally
        {
            await direct.ExecuteAsync("CONFIG", "SET", "maxmemory", "0");
        }

        var back = DateTime.UtcNow;
        await WaitUntilAsync(async () => (long)await direct.HashGetAsync(key, "t") == 35);
        var took = DateTime.UtcNow - back;

        Assert.Multiple(() =>
        {
            Assert.That(during.Duplicate, Is.False, "acknowledged: the ledger has it");
            Assert.That(took, Is.LessThan(TimeSpan.FromSeconds(1.5)), "the outbox drain applied it once Redis took writes again");
        });
    }

    private async Task<LocalServer> RedisAsync()
    {
        var redis = await LocalServer.StartRedisAsync();
        _owned.Add(redis);
        return redis;
    }

    /// <summary>
    /// A host on <paramref name="redis"/> and the test's own ledger database: every instance of one database must share
    /// one Redis (the fixture's host, on the run's Redis, would otherwise drain this database's outbox into its own).
    /// </summary>
    private async Task<MeteringHost> HostAsync(LocalServer redis, Dictionary<string, string?>? settings = null)
    {
        settings ??= [];
        settings["ConnectionStrings:Redis"] = redis.ConnectionString;
        _database ??= await Servers.Instance.CreateDatabaseAsync("failover");
        var host = await MeteringHost.StartAsync(Start, _database, settings);
        _owned.Add(host);
        return host;
    }

    /// <summary>A connection of the test's own to the server, behind the service's back.</summary>
    private IDatabase Direct(LocalServer redis)
    {
        var connection = ConnectionMultiplexer.Connect(redis.ConnectionString);
        _owned.Add(connection);
        return connection.GetDatabase();
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail("The condition did not hold within 10 s.");
            }

            await Task.Delay(20);
        }
    }
}
