using System.Text.RegularExpressions;
using Npgsql;
using StackExchange.Redis;
using Testcontainers.PostgreSql;
using Testcontainers.Redis;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// A real PostgreSQL and a real Redis for integration tests, each taken from the first source that works:
/// <list type="number">
/// <item><description>the environment: <c>METERING_TEST_POSTGRES</c> (an Npgsql connection string, a superuser or a role
/// with CREATEDB) and <c>METERING_TEST_REDIS</c> (a StackExchange.Redis configuration string), each on its own;</description></item>
/// <item><description>Testcontainers (postgres:15-alpine, redis:7-alpine) when a Docker engine answers a ping at one of the
/// endpoints Testcontainers would use (see <see cref="DockerProbe"/>; costs a few ms when there is none); when starting
/// the containers fails (e.g. the images cannot be pulled) the local processes below are used instead, and
/// <see cref="Source"/> says why;</description></item>
/// <item><description>throwaway local server processes from the machine's binaries (installed with apt-get on Debian/Ubuntu
/// when missing and running as root): a fresh cluster in a temp folder on a free 127.0.0.1 port, with trust
/// authentication and fsync off (run as an unprivileged user when root), and redis-server without persistence. They are
/// stopped and their folders deleted on dispose, on process exit, and by a watchdog if the test host dies.</description></item>
/// </list>
/// Each call of <see cref="StartAsync"/> starts its own servers (except for the environment source).
/// </summary>
public sealed class TestServers : IAsyncDisposable
{
    private const string PostgresImage = "postgres:15-alpine";
    private const string RedisImage = "redis:7-alpine";
    private static readonly Regex NonIdentifier = new("[^a-z0-9_]+", RegexOptions.Compiled | RegexOptions.CultureInvariant);

    private readonly List<IAsyncDisposable> owned;
    private readonly bool dropCreatedDatabases;
    private readonly List<string> createdDatabases = [];
    private readonly Lock gate = new();
    private int disposed;

    private TestServers(string source, string postgresConnectionString, string redisConnectionString, List<IAsyncDisposable> owned, bool dropCreatedDatabases)
    {
        Source = source;
        PostgresConnectionString = postgresConnectionString;
        RedisConnectionString = redisConnectionString;
        this.owned = owned;
        this.dropCreatedDatabases = dropCreatedDatabases;
    }

    /// <summary>Where each server comes from, e.g. "postgres: local process (...); redis: testcontainers (redis:7-alpine)".</summary>
    public string Source { get; }

    /// <summary>
    /// Npgsql connection string to the server's maintenance database ("postgres") as a superuser; for the environment
    /// source, METERING_TEST_POSTGRES as given.
    /// </summary>
    public string PostgresConnectionString { get; }

    /// <summary>StackExchange.Redis configuration string, with allowAdmin=true (FLUSHDB, CONFIG and the like work).</summary>
    public string RedisConnectionString { get; }

    /// <summary>Starts (or finds) the servers; see the class summary for the order in which sources are tried.</summary>
    public static async Task<TestServers> StartAsync(CancellationToken cancellationToken = default)
    {
        var postgresFromEnvironment = Environment.GetEnvironmentVariable("METERING_TEST_POSTGRES");
        var redisFromEnvironment = Environment.GetEnvironmentVariable("METERING_TEST_REDIS");
        string? postgres = null, redis = null, postgresSource = null, redisSource = null;
        var owned = new List<IAsyncDisposable>();
        try
        {
            if (!string.IsNullOrWhiteSpace(postgresFromEnvironment))
            {
                postgres = await CheckPostgresFromEnvironmentAsync(postgresFromEnvironment, cancellationToken).ConfigureAwait(false);
                postgresSource = "environment (METERING_TEST_POSTGRES)";
            }

            if (!string.IsNullOrWhiteSpace(redisFromEnvironment))
            {
                redis = await CheckRedisFromEnvironmentAsync(redisFromEnvironment).ConfigureAwait(false);
                redisSource = "environment (METERING_TEST_REDIS)";
            }

            if (postgres is null || redis is null)
            {
                string whyLocal;
                var dockerEndpoint = await DockerProbe.FindAnsweringEndpointAsync(cancellationToken).ConfigureAwait(false);
                if (dockerEndpoint is null)
                {
                    whyLocal = $"no Docker engine answered (tried {string.Join(", ", DockerProbe.Candidates())})";
                }
                else
                {
                    var (postgresContainer, redisContainer, failure) = await StartContainersAsync(postgres is null, redis is null, cancellationToken).ConfigureAwait(false);
                    if (postgresContainer is not null)
                    {
                        owned.Add(postgresContainer);
                        postgres = postgresContainer.GetConnectionString();
                        postgresSource = $"testcontainers ({PostgresImage} via {dockerEndpoint})";
                    }

                    if (redisContainer is not null)
                    {
                        owned.Add(redisContainer);
                        redis = redisContainer.GetConnectionString() + ",allowAdmin=true";
                        redisSource = $"testcontainers ({RedisImage} via {dockerEndpoint})";
                    }

                    whyLocal = $"Testcontainers failed at {dockerEndpoint}: {failure?.GetType().Name}: {failure?.Message}";
                }

                if (postgres is null || redis is null)
                {
                    await ServerBinaries.EnsureAsync(postgres is null, redis is null, $"No test servers configured: METERING_TEST_POSTGRES/METERING_TEST_REDIS are not set and {whyLocal}", cancellationToken)
                        .ConfigureAwait(false);
                    var needPostgres = postgres is null;
                    var needRedis = redis is null;
                    async Task<LocalPostgres?> StartLocalPostgresAsync() => needPostgres
                        ? await LocalPostgres.StartAsync(ServerBinaries.FindPostgresBinDirectory()!, cancellationToken).ConfigureAwait(false)
                        : null;
                    async Task<LocalRedis?> StartLocalRedisAsync() => needRedis
                        ? await LocalRedis.StartAsync(ServerBinaries.FindRedisServer()!, cancellationToken).ConfigureAwait(false)
                        : null;
                    var (localPostgres, localRedis) = await WhenBothAsync(StartLocalPostgresAsync(), StartLocalRedisAsync()).ConfigureAwait(false);
                    var note = dockerEndpoint is null ? "" : $" after {whyLocal}";
                    if (localPostgres is not null)
                    {
                        owned.Add(localPostgres);
                        postgres = localPostgres.ConnectionString;
                        postgresSource = localPostgres.Description + note;
                    }

                    if (localRedis is not null)
                    {
                        owned.Add(localRedis);
                        redis = localRedis.ConnectionString;
                        redisSource = localRedis.Description + note;
                    }
                }
            }

            return new TestServers(
                $"postgres: {postgresSource}; redis: {redisSource}",
                postgres!,
                redis!,
                owned,
                dropCreatedDatabases: !string.IsNullOrWhiteSpace(postgresFromEnvironment));
        }
        catch
        {
            await DisposeAllAsync(owned).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Creates a fresh, empty database (from template0) named <paramref name="namePrefix"/> (lowercased, reduced to
    /// [a-z0-9_]) plus a unique suffix, and returns an Npgsql connection string to it with the same credentials as
    /// <see cref="PostgresConnectionString"/>. Databases on a server from the environment are dropped on dispose; the
    /// others go away with their server.
    /// </summary>
    public async Task<string> CreateDatabaseAsync(string namePrefix, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        var prefix = NonIdentifier.Replace((namePrefix ?? "").ToLowerInvariant(), "_").Trim('_');
        if (prefix.Length == 0 || !char.IsAsciiLetter(prefix[0]))
        {
            prefix = "db_" + prefix;
        }

        var name = $"{prefix[..Math.Min(prefix.Length, 30)].TrimEnd('_')}_{Guid.NewGuid():N}"; // at most 63 bytes
        await using (var connection = new NpgsqlConnection(PostgresConnectionString))
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            await using var command = new NpgsqlCommand($"CREATE DATABASE \"{name}\" TEMPLATE template0", connection);
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        var connectionString = new NpgsqlConnectionStringBuilder(PostgresConnectionString) { Database = name }.ConnectionString;
        lock (gate)
        {
            createdDatabases.Add(connectionString);
        }

        return connectionString;
    }

    /// <summary>Stops what <see cref="StartAsync"/> started (and drops databases created on an environment server).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        List<string> databases;
        lock (gate)
        {
            databases = [.. createdDatabases];
        }

        foreach (var database in databases)
        {
            await using var connection = new NpgsqlConnection(database);
            NpgsqlConnection.ClearPool(connection);
        }

        if (dropCreatedDatabases && databases.Count > 0)
        {
            try
            {
                await using var connection = new NpgsqlConnection(PostgresConnectionString);
                await connection.OpenAsync().ConfigureAwait(false);
                foreach (var database in databases)
                {
                    var name = new NpgsqlConnectionStringBuilder(database).Database;
                    await using var command = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)", connection);
                    await command.ExecuteNonQueryAsync().ConfigureAwait(false);
                }
            }
            catch (NpgsqlException)
            {
                // Best effort: the server may be gone already.
            }
        }

        await using (var connection = new NpgsqlConnection(PostgresConnectionString))
        {
            NpgsqlConnection.ClearPool(connection);
        }

        await DisposeAllAsync(owned).ConfigureAwait(false);
    }

    private static async Task<string> CheckPostgresFromEnvironmentAsync(string connectionString, CancellationToken cancellationToken)
    {
        try
        {
            var probe = new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false, Timeout = 10 }.ConnectionString;
            await using var connection = new NpgsqlConnection(probe);
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            return connectionString;
        }
        catch (Exception e) when (e is NpgsqlException or ArgumentException or TimeoutException)
        {
            throw new InvalidOperationException($"METERING_TEST_POSTGRES is set, but connecting with it failed: {e.Message}", e);
        }
    }

    private static async Task<string> CheckRedisFromEnvironmentAsync(string configuration)
    {
        var withAdmin = configuration.Contains("allowAdmin=true", StringComparison.OrdinalIgnoreCase) ? configuration : configuration + ",allowAdmin=true";
        try
        {
            var options = ConfigurationOptions.Parse(withAdmin);
            options.AbortOnConnectFail = true;
            options.ConnectTimeout = 10_000;
            await using var multiplexer = await ConnectionMultiplexer.ConnectAsync(options).ConfigureAwait(false);
            await multiplexer.GetDatabase().PingAsync().ConfigureAwait(false);
            return withAdmin;
        }
        catch (Exception e) when (e is RedisException or ArgumentException or TimeoutException)
        {
            throw new InvalidOperationException($"METERING_TEST_REDIS is set, but connecting with it failed: {e.Message}", e);
        }
    }

    private static async Task<(PostgreSqlContainer? Postgres, RedisContainer? Redis, Exception? Failure)> StartContainersAsync(
        bool postgres, bool redis, CancellationToken cancellationToken)
    {
        var postgresContainer = postgres
            ? new PostgreSqlBuilder(PostgresImage).WithCommand("-c", "max_connections=300").Build()
            : null;
        var redisContainer = redis ? new RedisBuilder(RedisImage).Build() : null;
        var postgresStart = postgresContainer?.StartAsync(cancellationToken) ?? Task.CompletedTask;
        var redisStart = redisContainer?.StartAsync(cancellationToken) ?? Task.CompletedTask;
        try
        {
            await Task.WhenAll(postgresStart, redisStart).ConfigureAwait(false);
            return (postgresContainer, redisContainer, null);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            // The caller falls back to local processes for both.
            if (postgresContainer is not null)
            {
                await postgresContainer.DisposeAsync().ConfigureAwait(false);
            }

            if (redisContainer is not null)
            {
                await redisContainer.DisposeAsync().ConfigureAwait(false);
            }

            return (null, null, e);
        }
        catch
        {
            if (postgresContainer is not null)
            {
                await postgresContainer.DisposeAsync().ConfigureAwait(false);
            }

            if (redisContainer is not null)
            {
                await redisContainer.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>Awaits both; when one fails, disposes the other's result and rethrows.</summary>
    private static async Task<(T1? First, T2? Second)> WhenBothAsync<T1, T2>(Task<T1?> first, Task<T2?> second)
        where T1 : class, IAsyncDisposable
        where T2 : class, IAsyncDisposable
    {
        try
        {
            await Task.WhenAll(first, second).ConfigureAwait(false);
            return (await first.ConfigureAwait(false), await second.ConfigureAwait(false));
        }
        catch
        {
            if (first.IsCompletedSuccessfully && first.Result is { } firstResult)
            {
                await firstResult.DisposeAsync().ConfigureAwait(false);
            }

            if (second.IsCompletedSuccessfully && second.Result is { } secondResult)
            {
                await secondResult.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    private static async Task DisposeAllAsync(List<IAsyncDisposable> resources)
    {
        List<Exception>? errors = null;
        for (var i = resources.Count - 1; i >= 0; i--)
        {
            try
            {
                await resources[i].DisposeAsync().ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Keep disposing the others; rethrown together below.
            catch (Exception e)
#pragma warning restore CA1031
            {
                (errors ??= []).Add(e);
            }
        }

        resources.Clear();
        if (errors is not null)
        {
            throw new AggregateException("Stopping the test servers failed.", errors);
        }
    }
}
