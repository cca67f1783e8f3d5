using Metering.Storage.Embedded;
using Metering.Storage.Postgres;
using Metering.Storage.Redis;
using StackExchange.Redis;

namespace Metering.Server.Hosting;

/// <summary>
/// What the server asks of its storage besides the ports: bring the schema up (or refuse a stale one) and seed the
/// catalog, and anything to check once the catalog is loaded.
/// </summary>
internal interface IStorageBackend
{
    /// <summary>The value of <c>Storage:Backend</c> that chose it.</summary>
    string Name { get; }

    /// <summary>Applies the migrations and, when <paramref name="seed"/>, adds what is missing from the seed catalog (the <c>migrate</c> command).</summary>
    Task MigrateAsync(IServiceProvider services, bool seed, CancellationToken cancellationToken);

    /// <summary>Before the catalog is loaded: migrates and seeds when <paramref name="migrate"/>, else refuses a schema that is not current.</summary>
    Task PrepareAsync(IServiceProvider services, bool migrate, CancellationToken cancellationToken);

    /// <summary>After the catalog is loaded: checks that only log.</summary>
    Task CheckAsync(IServiceProvider services, CancellationToken cancellationToken);
}

/// <summary>
/// The one switch between the storage backends, <c>Storage:Backend</c>: <c>postgres-redis</c> (the ledger on
/// PostgreSQL, counters and shared caches on Redis; for production, any number of instances) or <c>embedded</c> (one
/// SQLite file and in-process counters; one instance, for trying the service and for development). Without the
/// setting: <c>embedded</c> in Development when no connection string is set, else <c>postgres-redis</c>.
/// </summary>
internal static class StorageBackends
{
    public const string Setting = "Storage:Backend";
    public const string PostgresRedis = "postgres-redis";
    public const string Embedded = "embedded";

    /// <summary>The backend the configuration names, or the default for the environment.</summary>
    public static string Choose(IConfiguration configuration, IHostEnvironment environment)
    {
        var named = configuration[Setting];
        if (string.IsNullOrWhiteSpace(named))
        {
            var connectionStringsSet = !string.IsNullOrWhiteSpace(configuration.GetConnectionString("Postgres"))
                || !string.IsNullOrWhiteSpace(configuration.GetConnectionString("Redis"));
            return environment.IsDevelopment() && !connectionStringsSet ? Embedded : PostgresRedis;
        }

        return named.Trim().ToLowerInvariant() switch
        {
            PostgresRedis => PostgresRedis,
            Embedded => Embedded,
            _ => throw new StartupException($"{Setting} is '{named}'; use '{PostgresRedis}' or '{Embedded}'."),
        };
    }

    /// <summary>Registers the storage backend that <see cref="Choose"/> picks.</summary>
    public static IServiceCollection AddMeteringStorage(this IServiceCollection services, IConfiguration configuration, IHostEnvironment environment) =>
        Choose(configuration, environment) == Embedded
            ? services.AddEmbeddedBackend(configuration)
            : services.AddPostgresRedisStorage(configuration);

    /// <summary>The ledger of record on PostgreSQL, counters and shared caches on Redis, with their health checks.</summary>
    public static IServiceCollection AddPostgresRedisStorage(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<ConnectionStringsOptions>()
            .Bind(configuration.GetSection("ConnectionStrings"))
            .Validate(o => !string.IsNullOrWhiteSpace(o.Postgres), "ConnectionStrings:Postgres is not set (environment: ConnectionStrings__Postgres)")
            .Validate(o => !string.IsNullOrWhiteSpace(o.Redis), "ConnectionStrings:Redis is not set (environment: ConnectionStrings__Redis)")
            .ValidateOnStart();
        services.AddPostgresLedger(configuration).AddRedisCounters(configuration);
        services.AddHealthChecks()
            .AddCheck<PostgresHealthCheck>("postgres", tags: [HealthChecks.ReadyTag])
            .AddCheck<RedisHealthCheck>("redis", tags: [HealthChecks.ReadyTag]);
        services.AddSingleton<IStorageBackend, PostgresRedisBackend>();
        return services;
    }

    /// <summary>Every port on one SQLite file and in-process counters, with its health check.</summary>
    public static IServiceCollection AddEmbeddedBackend(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddEmbeddedStorage(configuration);
        services.AddHealthChecks().AddCheck<EmbeddedDatabaseHealthCheck>("embedded", tags: [HealthChecks.ReadyTag]);
        services.AddSingleton<IStorageBackend, EmbeddedBackend>();
        return services;
    }

    private sealed class PostgresRedisBackend : IStorageBackend
    {
        public string Name => PostgresRedis;

        public Task MigrateAsync(IServiceProvider services, bool seed, CancellationToken cancellationToken) =>
            PostgresStorageServiceCollectionExtensions.MigrateLedgerAsync(services, seed, cancellationToken);

        public async Task PrepareAsync(IServiceProvider services, bool migrate, CancellationToken cancellationToken)
        {
            if (migrate)
            {
                await MigrateAsync(services, seed: true, cancellationToken);
                return;
            }

            var pending = await PostgresStorageServiceCollectionExtensions.PendingLedgerMigrationsAsync(services, cancellationToken);
            if (pending.Count > 0)
            {
                throw new StartupException(
                    $"the database schema is not current ({pending.Count} migration(s) pending: {string.Join(", ", pending)}); run 'Metering.Server migrate' first, or set Metering:MigrateOnStart=true.");
            }
        }

        public Task CheckAsync(IServiceProvider services, CancellationToken cancellationToken) =>
            RedisMemoryPolicy.CheckAsync(
                services.GetRequiredService<IConnectionMultiplexer>(),
                services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(RedisMemoryPolicy).FullName!),
                TimeSpan.FromSeconds(1),
                cancellationToken);
    }

    /// <summary>The embedded database migrates and seeds itself whenever it opens: the process owns its file.</summary>
    private sealed class EmbeddedBackend : IStorageBackend
    {
        public string Name => Embedded;

        public Task MigrateAsync(IServiceProvider services, bool seed, CancellationToken cancellationToken) =>
            OpenAsync(services, cancellationToken);

        public Task PrepareAsync(IServiceProvider services, bool migrate, CancellationToken cancellationToken) =>
            OpenAsync(services, cancellationToken);

        public Task CheckAsync(IServiceProvider services, CancellationToken cancellationToken) => Task.CompletedTask;

        private static async Task OpenAsync(IServiceProvider services, CancellationToken cancellationToken)
        {
            try
            {
                await services.GetRequiredService<EmbeddedDatabase>().OpenAsync(cancellationToken);
            }
            catch (DatabaseInUseException ex)
            {
                throw new StartupException(ex.Message);
            }
        }
    }
}

/// <summary>The backend in use, said once at start so that no one mistakes the embedded one for production.</summary>
internal static partial class StorageBackendLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Storage backend: {Backend}")]
    public static partial void InUse(ILogger logger, string backend);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Storage backend: embedded ({Path}). One instance only, counters and caches in this process: for trying the service and for development, not for production (set Storage:Backend=postgres-redis).")]
    public static partial void Embedded(ILogger logger, string path);
}
