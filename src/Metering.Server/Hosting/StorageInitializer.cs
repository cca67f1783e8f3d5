using Metering.Storage.Postgres;
using Metering.Storage.Redis;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;
using Microsoft.Extensions.Options;
using StackExchange.Redis;

namespace Metering.Server.Hosting;

/// <summary>Brings the ledger database to the current schema, seeds the catalog and loads it.</summary>
internal static partial class StorageInitializer
{
    /// <summary>Applies pending EF Core migrations (logging which), then, when <paramref name="seed"/>, adds what is missing from the seed catalog.</summary>
    public static async Task MigrateAsync(IServiceProvider services, bool seed, CancellationToken cancellationToken)
    {
        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(StorageInitializer).FullName!);
        var contexts = services.GetRequiredService<IDbContextFactory<MeteringDbContext>>();
        await using (var db = await contexts.CreateDbContextAsync(cancellationToken))
        {
            // The connection's statement_timeout and lock_timeout bound calls, not schema changes (a database that does
            // not exist yet is created by the migration, and is empty).
            if (await db.Database.CanConnectAsync(cancellationToken))
            {
                await db.Database.OpenConnectionAsync(cancellationToken);
                await db.Database.ExecuteSqlRawAsync("SET statement_timeout = 0; SET lock_timeout = 0", cancellationToken);
            }

            // Created first, so that reading it on a new database is no failed command (EF logs those as errors).
            await db.GetService<IHistoryRepository>().CreateIfNotExistsAsync(cancellationToken);
            var pending = (await db.Database.GetPendingMigrationsAsync(cancellationToken)).ToList();
            if (pending.Count > 0)
            {
                await db.Database.MigrateAsync(cancellationToken);
                LogMigrated(logger, pending.Count, string.Join(", ", pending));
            }
            else
            {
                LogUpToDate(logger);
            }
        }

        if (seed)
        {
            await services.GetRequiredService<PostgresCatalogStore>()
                .SeedAsync(services.GetRequiredService<IOptions<CatalogSeed>>().Value, cancellationToken);
        }
    }

    /// <summary>
    /// Migrates and seeds when told to (otherwise refuses to start on a schema that is not current), then loads the
    /// catalog for serving; an empty catalog is logged as an error and fails readiness.
    /// </summary>
    public static async Task InitializeAsync(IServiceProvider services, bool migrate, CancellationToken cancellationToken)
    {
        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(StorageInitializer).FullName!);
        if (migrate)
        {
            await MigrateAsync(services, seed: true, cancellationToken);
        }
        else
        {
            var contexts = services.GetRequiredService<IDbContextFactory<MeteringDbContext>>();
            await using var db = await contexts.CreateDbContextAsync(cancellationToken);
            var pending = await db.GetService<IHistoryRepository>().ExistsAsync(cancellationToken)
                ? (await db.Database.GetPendingMigrationsAsync(cancellationToken)).ToList()
                : [.. db.Database.GetMigrations()];
            if (pending.Count > 0)
            {
                throw new StartupException(
                    $"the database schema is not current ({pending.Count} migration(s) pending: {string.Join(", ", pending)}); run 'Metering.Server migrate' first, or set Metering:MigrateOnStart=true.");
            }
        }

        var catalog = services.GetRequiredService<Core.Catalog.CatalogDirectory>();
        await catalog.InitializeAsync(cancellationToken);
        if (catalog.Current.UsageTypes.Count == 0 || catalog.Current.Plans.Count == 0)
        {
            LogEmptyCatalog(logger, CatalogHealthCheck.EmptyMessage);
        }

        await RedisMemoryPolicy.CheckAsync(
            services.GetRequiredService<IConnectionMultiplexer>(),
            services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(RedisMemoryPolicy).FullName!),
            TimeSpan.FromSeconds(1),
            cancellationToken);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Applied {Count} migration(s): {Migrations}")]
    private static partial void LogMigrated(ILogger logger, int count, string migrations);

    [LoggerMessage(Level = LogLevel.Information, Message = "The database schema is current; no migration to apply")]
    private static partial void LogUpToDate(ILogger logger);

    [LoggerMessage(Level = LogLevel.Error, Message = "{Message} Readiness reports NOT_SERVING until the catalog has both.")]
    private static partial void LogEmptyCatalog(ILogger logger, string message);
}
