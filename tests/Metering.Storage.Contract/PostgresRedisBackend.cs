using Metering.Storage.Postgres;
using Metering.Storage.Redis;
using Metering.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace Metering.Storage.Contract;

/// <summary>
/// The production backend: the ledger, subscriptions, catalog and history on PostgreSQL (a new database per set, at the
/// current schema), counters and caches on Redis (one server, shared; keys are per subject and per catalog id).
/// </summary>
public sealed class PostgresRedisBackend : StorageBackend
{
    public override string Name => "postgres-redis";

    public override async Task<StoragePorts> CreateAsync(CancellationToken cancellationToken)
    {
        var servers = await ContractServers.GetAsync();
        var database = await servers.CreateDatabaseAsync("contract", cancellationToken);
        var contexts = new PooledDbContextFactory<MeteringDbContext>(
            new DbContextOptionsBuilder<MeteringDbContext>().UseNpgsql(database).Options);
        await using (var db = await contexts.CreateDbContextAsync(cancellationToken))
        {
            await db.Database.MigrateAsync(cancellationToken);
        }

        var redis = await ConnectionMultiplexer.ConnectAsync(servers.RedisConnectionString);
        // A generous budget: the machine running the suite may be busy, and a time-out is not what is tested here.
        var options = new RedisOptions { OperationTimeout = TimeSpan.FromSeconds(10) };
        var guard = new RedisGuard(options, NullLogger<RedisGuard>.Instance);
        return new StoragePorts(
            new PostgresUsageLedger(contexts),
            new RedisCounterStore(redis, guard, options),
            new PostgresSubscriptionStore(contexts),
            new RedisSubscriptionCache(redis, guard, options),
            new PostgresCatalogStore(contexts),
            new RedisCatalogVersionCache(redis, guard, options),
            new PostgresHistoryStore(contexts))
        {
            OnDisposeAsync = () => redis.DisposeAsync(),
        };
    }
}

/// <summary>The PostgreSQL and Redis servers of this run, started on first use and stopped after the last fixture.</summary>
[SetUpFixture]
public sealed class ContractServers
{
    private static readonly Lazy<Task<TestServers>> Servers = new(async () =>
    {
        var servers = await TestServers.StartAsync();
        await TestContext.Progress.WriteLineAsync($"Contract test servers: {servers.Source}");
        return servers;
    });

    public static Task<TestServers> GetAsync() => Servers.Value;

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        if (Servers.IsValueCreated)
        {
            await (await Servers.Value).DisposeAsync();
        }
    }
}
