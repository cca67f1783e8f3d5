using Metering.Storage.Postgres;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;

namespace Metering.Server.Hosting;

/// <summary>Brings the ledger database to the current schema, seeds the catalog and loads it.</summary>
internal static class StorageInitializer
{
    /// <summary>Applies pending EF Core migrations.</summary>
    public static async Task MigrateAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        var contexts = services.GetRequiredService<IDbContextFactory<MeteringDbContext>>();
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        await db.Database.MigrateAsync(cancellationToken);
    }

    /// <summary>Migrates, seeds what is missing from the catalog, and loads the catalog for serving.</summary>
    public static async Task InitializeAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        await MigrateAsync(services, cancellationToken);
        var store = services.GetRequiredService<PostgresCatalogStore>();
        await store.SeedAsync(services.GetRequiredService<IOptions<CatalogSeed>>().Value, cancellationToken);
        await services.GetRequiredService<Core.Catalog.CatalogDirectory>().InitializeAsync(cancellationToken);
    }
}
