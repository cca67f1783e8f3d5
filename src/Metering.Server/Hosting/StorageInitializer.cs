using Metering.Storage.Postgres;
using Metering.Storage.Redis;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using StackExchange.Redis;

namespace Metering.Server.Hosting;

/// <summary>Brings the ledger database to the current schema, seeds the catalog and loads it.</summary>
internal static class StorageInitializer
{
    /// <summary>Applies pending EF Core migrations.</summary>
    public static async Task MigrateAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        var contexts = services.GetRequiredService<IDbContextFactory<MeteringDbContext>>();
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);

        // The connection's statement_timeout and lock_timeout bound calls, not schema changes (a database that does
        // not exist yet is created by the migration, and is empty).
        if (await db.Database.CanConnectAsync(cancellationToken))
        {
            await db.Database.OpenConnectionAsync(cancellationToken);
            await db.Database.ExecuteSqlRawAsync("SET statement_timeout = 0; SET lock_timeout = 0", cancellationToken);
        }

        await db.Database.MigrateAsync(cancellationToken);
    }

    /// <summary>Migrates, seeds what is missing from the catalog, and loads the catalog for serving.</summary>
    public static async Task InitializeAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        await MigrateAsync(services, cancellationToken);
        var store = services.GetRequiredService<PostgresCatalogStore>();
        await store.SeedAsync(services.GetRequiredService<IOptions<CatalogSeed>>().Value, cancellationToken);
        await services.GetRequiredService<Core.Catalog.CatalogDirectory>().InitializeAsync(cancellationToken);
        await RedisMemoryPolicy.CheckAsync(
            services.GetRequiredService<IConnectionMultiplexer>(),
            services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(RedisMemoryPolicy).FullName!),
            TimeSpan.FromSeconds(1),
            cancellationToken);
    }
}
