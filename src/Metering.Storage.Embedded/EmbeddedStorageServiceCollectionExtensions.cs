using Metering.Core.Ports;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Metering.Storage.Embedded;

/// <summary>Registration of the embedded backend: every storage port on one SQLite file and in-process counters.</summary>
public static class EmbeddedStorageServiceCollectionExtensions
{
    /// <summary>The configuration section of the embedded backend (<c>Storage:Embedded</c>).</summary>
    public const string SectionName = "Storage:Embedded";

    /// <summary>
    /// Registers the ledger, catalog, subscriptions and history on the SQLite file <c>Storage:Embedded:Path</c>
    /// (default <see cref="EmbeddedStorageOptions.DefaultPath"/>), seeded from the <c>Catalog</c> section, and the
    /// counters and caches in process. Needs a <see cref="TimeProvider"/> registered (the ledger's clock).
    /// </summary>
    public static IServiceCollection AddEmbeddedStorage(this IServiceCollection services, IConfiguration configuration)
    {
        var options = new EmbeddedStorageOptions();
        configuration.GetSection(SectionName).Bind(options);
        services.AddSingleton(options);
        services.AddSingleton(CatalogSeedSource.From(configuration.GetSection("Catalog")));
        services.AddSingleton<EmbeddedDatabase>();
        services.AddSingleton<ICatalogStore, EmbeddedCatalogStore>();
        services.AddSingleton<IUsageLedger, EmbeddedUsageLedger>();
        services.AddSingleton<ISubscriptionStore, EmbeddedSubscriptionStore>();
        services.AddSingleton<IHistoryStore, EmbeddedHistoryStore>();
        services.AddSingleton<ICounterStore, InProcessCounterStore>();
        services.AddSingleton<ISubscriptionCache, InProcessSubscriptionCache>();
        services.AddSingleton<ICatalogVersionCache, InProcessCatalogVersionCache>();
        return services;
    }
}

/// <summary>Healthy while the embedded database file answers a query.</summary>
public sealed class EmbeddedDatabaseHealthCheck(EmbeddedDatabase database) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            return await database.CanConnectAsync(cancellationToken)
                ? HealthCheckResult.Healthy()
                : HealthCheckResult.Unhealthy($"The embedded database {database.Path} cannot be read.");
        }
        catch (Exception ex) when (ex is Microsoft.Data.Sqlite.SqliteException or IOException or InvalidOperationException)
        {
            return HealthCheckResult.Unhealthy($"The embedded database {database.Path} cannot be read.", ex);
        }
    }
}
