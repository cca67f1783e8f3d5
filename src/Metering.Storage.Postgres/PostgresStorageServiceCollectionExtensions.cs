using Metering.Core.Ports;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Diagnostics;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Metering.Storage.Postgres;

/// <summary>Registration of the ledger of record on PostgreSQL, its migrations, seeding and health check.</summary>
public static partial class PostgresStorageServiceCollectionExtensions
{
    /// <summary>The ledger, catalog, subscriptions and history on PostgreSQL (<c>ConnectionStrings:Postgres</c>), seeded from <c>Catalog</c>.</summary>
    public static IServiceCollection AddPostgresLedger(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddPooledDbContextFactory<MeteringDbContext>((sp, options) =>
            options.UseNpgsql(WithLedgerDefaults(RequiredConnectionString(sp, "Postgres")))
                // A failed statement surfaces as the call's failure, which ErrorInterceptor logs once (an outage as a
                // summary); EF Core's own error line for the same failure would repeat it on every call.
                .ConfigureWarnings(warnings => warnings.Log(
                    (RelationalEventId.CommandError, LogLevel.Debug),
                    (RelationalEventId.ConnectionError, LogLevel.Debug),
                    (RelationalEventId.TransactionError, LogLevel.Debug),
                    (CoreEventId.QueryIterationFailed, LogLevel.Debug),
                    (CoreEventId.SaveChangesFailed, LogLevel.Debug))));
        services.AddOptions<LedgerWriteOptions>().Bind(configuration.GetSection("Ledger")).ValidateDataAnnotations().ValidateOnStart();
        services.Configure<CatalogSeed>(configuration.GetSection("Catalog"));
        services.AddSingleton<PostgresCatalogStore>();
        services.AddSingleton<ICatalogStore>(sp => sp.GetRequiredService<PostgresCatalogStore>());
        services.AddSingleton<IUsageLedger, PostgresUsageLedger>();
        services.AddSingleton<ISubscriptionStore, PostgresSubscriptionStore>();
        services.AddSingleton<IHistoryStore, PostgresHistoryStore>();
        return services;
    }

    /// <summary>
    /// The defaults that bound what the ledger can cost, each added only when the connection string does not set its own:
    /// <list type="bullet">
    /// <item><description><c>Max Pool Size=16</c>: connections per instance (size: instances × Max Pool Size ≤
    /// max_connections − the connections kept for admins, migrations and other clients).</description></item>
    /// <item><description><c>Timeout=5</c>: seconds to wait for a connection, from the pool or the server.</description></item>
    /// <item><description><c>Command Timeout=5</c>: seconds before Npgsql gives up on a statement the server does not answer.</description></item>
    /// <item><description><c>Options=-c statement_timeout=3s -c lock_timeout=1s</c>: the server ends a statement that
    /// runs too long or waits too long for a lock, e.g. behind an ACCESS EXCLUSIVE lock.</description></item>
    /// <item><description><c>Max Auto Prepare=32</c>: the ledger runs the same few statements on every call, so they are
    /// prepared once per connection instead of planned every time.</description></item>
    /// </list>
    /// All of these are shorter than a caller's typical deadline; the caller's deadline ends a call earlier still.
    /// </summary>
    public static string WithLedgerDefaults(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        var named = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = connectionString }.Keys
            .Cast<string>()
            .Select(k => k.Replace(" ", "", StringComparison.Ordinal).ToUpperInvariant())
            .ToHashSet(StringComparer.Ordinal);
        var defaults = new NpgsqlConnectionStringBuilder();
        bool Unset(object value, object defaultValue, params string[] keywords) =>
            Equals(value, defaultValue) && !keywords.Any(named.Contains);

        if (Unset(builder.MaxPoolSize, defaults.MaxPoolSize, "MAXPOOLSIZE", "MAXIMUMPOOLSIZE"))
        {
            builder.MaxPoolSize = 16;
        }

        if (Unset(builder.Timeout, defaults.Timeout, "TIMEOUT", "CONNECTTIMEOUT", "CONNECTIONTIMEOUT"))
        {
            builder.Timeout = 5;
        }

        if (Unset(builder.CommandTimeout, defaults.CommandTimeout, "COMMANDTIMEOUT"))
        {
            builder.CommandTimeout = 5;
        }

        if (Unset(builder.MaxAutoPrepare, defaults.MaxAutoPrepare, "MAXAUTOPREPARE"))
        {
            builder.MaxAutoPrepare = 32;
        }

        var options = builder.Options ?? "";
        foreach (var (setting, value) in new[] { ("statement_timeout", "3s"), ("lock_timeout", "1s") })
        {
            if (!options.Contains(setting, StringComparison.OrdinalIgnoreCase))
            {
                options = $"{options} -c {setting}={value}".Trim();
            }
        }

        builder.Options = options;
        return builder.ConnectionString;
    }

    /// <summary>Applies pending EF Core migrations (logging which), then, when <paramref name="seed"/>, adds what is missing from the seed catalog.</summary>
    public static async Task MigrateLedgerAsync(IServiceProvider services, bool seed, CancellationToken cancellationToken)
    {
        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(MeteringDbContext).Namespace + ".Migrations");
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

    /// <summary>The migrations the ledger database lacks (every one when it has none), without changing anything.</summary>
    public static async Task<IReadOnlyList<string>> PendingLedgerMigrationsAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        var contexts = services.GetRequiredService<IDbContextFactory<MeteringDbContext>>();
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        return await db.GetService<IHistoryRepository>().ExistsAsync(cancellationToken)
            ? (await db.Database.GetPendingMigrationsAsync(cancellationToken)).ToList()
            : [.. db.Database.GetMigrations()];
    }

    private static string RequiredConnectionString(IServiceProvider services, string name) =>
        services.GetRequiredService<IConfiguration>().GetConnectionString(name)
        ?? throw new InvalidOperationException($"ConnectionStrings:{name} is not set (environment: ConnectionStrings__{name}).");

    [LoggerMessage(Level = LogLevel.Information, Message = "Applied {Count} migration(s): {Migrations}")]
    private static partial void LogMigrated(ILogger logger, int count, string migrations);

    [LoggerMessage(Level = LogLevel.Information, Message = "The database schema is current; no migration to apply")]
    private static partial void LogUpToDate(ILogger logger);
}

/// <summary>Ready while PostgreSQL accepts connections.</summary>
public sealed class PostgresHealthCheck(IDbContextFactory<MeteringDbContext> contexts) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            await using var db = await contexts.CreateDbContextAsync(cancellationToken);
            return await db.Database.CanConnectAsync(cancellationToken)
                ? HealthCheckResult.Healthy()
                : HealthCheckResult.Unhealthy("PostgreSQL does not accept connections.");
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or TimeoutException)
        {
            return HealthCheckResult.Unhealthy("PostgreSQL does not accept connections.", ex);
        }
    }
}
