using Metering.Storage.Embedded;

namespace Metering.Server.Hosting;

/// <summary>Brings the storage to the current schema, seeds the catalog and loads it.</summary>
internal static partial class StorageInitializer
{
    /// <summary>Applies pending migrations (logging which), then, when <paramref name="seed"/>, adds what is missing from the seed catalog.</summary>
    public static Task MigrateAsync(IServiceProvider services, bool seed, CancellationToken cancellationToken) =>
        services.GetRequiredService<IStorageBackend>().MigrateAsync(services, seed, cancellationToken);

    /// <summary>
    /// Migrates and seeds when told to (otherwise refuses to start on a schema that is not current), then loads the
    /// catalog for serving; an empty catalog is logged as an error and fails readiness.
    /// </summary>
    public static async Task InitializeAsync(IServiceProvider services, bool migrate, CancellationToken cancellationToken)
    {
        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(StorageInitializer).FullName!);
        var backend = services.GetRequiredService<IStorageBackend>();
        if (backend.Name == StorageBackends.Embedded)
        {
            StorageBackendLog.Embedded(logger, services.GetRequiredService<EmbeddedDatabase>().Path);
        }
        else
        {
            StorageBackendLog.InUse(logger, backend.Name);
        }

        await backend.PrepareAsync(services, migrate, cancellationToken);
        var catalog = services.GetRequiredService<Core.Catalog.CatalogDirectory>();
        await catalog.InitializeAsync(cancellationToken);
        if (catalog.Current.UsageTypes.Count == 0 || catalog.Current.Plans.Count == 0)
        {
            LogEmptyCatalog(logger, CatalogHealthCheck.EmptyMessage);
        }

        await backend.CheckAsync(services, cancellationToken);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "{Message} Readiness reports NOT_SERVING until the catalog has both.")]
    private static partial void LogEmptyCatalog(ILogger logger, string message);
}
