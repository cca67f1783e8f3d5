using System.Text.RegularExpressions;
using Npgsql;
using StackExchange.Redis;
using Testcontainers.PostgreSql;
using Testcontainers.Redis;

namespace Metering.Testing;

/// <summary>
/// A real PostgreSQL and a real Redis for tests, each from the first source that works:
/// <list type="number">
/// <item><description>the environment: <c>METERING_TEST_POSTGRES</c> (an Npgsql connection string of a role that may
/// create databases) and <c>METERING_TEST_REDIS</c> (a StackExchange.Redis configuration string), each on its own;
/// these servers are used, never started or stopped;</description></item>
/// <item><description>Testcontainers (postgres:15-alpine, redis:7-alpine) where a Docker engine runs;</description></item>
/// <item><description>throwaway local processes started by <c>deploy/local/servers.sh</c> (see <see cref="LocalServer"/>),
/// from the PostgreSQL and Redis binaries installed on the machine.</description></item>
/// </list>
/// </summary>
public sealed partial class TestServers : IAsyncDisposable
{
    private readonly List<IAsyncDisposable> _owned;
    private readonly bool _dropCreatedDatabases;
    private readonly List<string> _createdDatabases = [];

    private TestServers(string source, string postgres, string redis, List<IAsyncDisposable> owned, bool dropCreatedDatabases)
    {
        Source = source;
        PostgresConnectionString = postgres;
        RedisConnectionString = redis;
        _owned = owned;
        _dropCreatedDatabases = dropCreatedDatabases;
    }

    /// <summary>Where each server comes from, e.g. "postgres: environment; redis: testcontainers".</summary>
    public string Source { get; }

    /// <summary>Npgsql connection string of a role that may create databases.</summary>
    public string PostgresConnectionString { get; }

    /// <summary>StackExchange.Redis configuration string, with allowAdmin=true.</summary>
    public string RedisConnectionString { get; }

    public static async Task<TestServers> StartAsync(CancellationToken cancellationToken = default)
    {
        var _owned = new List<IAsyncDisposable>();
        try
        {
            var postgresFromEnvironment = Environment.GetEnvironmentVariable("METERING_TEST_POSTGRES");
            var redisFromEnvironment = Environment.GetEnvironmentVariable("METERING_TEST_REDIS");
            var (postgres, postgresSource) = string.IsNullOrWhiteSpace(postgresFromEnvironment)
                ? (null, null)
                : (await CheckPostgresAsync(postgresFromEnvironment, cancellationToken).ConfigureAwait(false), "environment (METERING_TEST_POSTGRES)");
            var (redis, redisSource) = string.IsNullOrWhiteSpace(redisFromEnvironment)
                ? (null, null)
                : (await CheckRedisAsync(redisFromEnvironment).ConfigureAwait(false), "environment (METERING_TEST_REDIS)");

            var whyLocal = "";
            if (postgres is null || redis is null)
            {
                try
                {
                    if (postgres is null)
                    {
                        var container = new PostgreSqlBuilder("postgres:15-alpine").WithCommand("-c", "max_connections=300").Build();
                        _owned.Add(container);
                        await container.StartAsync(cancellationToken).ConfigureAwait(false);
                        (postgres, postgresSource) = (container.GetConnectionString(), "testcontainers (postgres:15-alpine)");
                    }

                    if (redis is null)
                    {
                        var container = new RedisBuilder("redis:7-alpine").Build();
                        _owned.Add(container);
                        await container.StartAsync(cancellationToken).ConfigureAwait(false);
                        (redis, redisSource) = (container.GetConnectionString() + ",allowAdmin=true", "testcontainers (redis:7-alpine)");
                    }
                }
                catch (Exception e) when (!cancellationToken.IsCancellationRequested && e is not OutOfMemoryException)
                {
                    // No Docker engine (or no images): local processes instead, for both.
                    whyLocal = $" (Testcontainers: {e.GetType().Name}: {e.Message.Split('\n')[0].Trim()})";
                    await DisposeAllAsync(_owned).ConfigureAwait(false);
                    (postgres, postgresSource) = string.IsNullOrWhiteSpace(postgresFromEnvironment) ? (null, null) : (postgres, postgresSource);
                    (redis, redisSource) = string.IsNullOrWhiteSpace(redisFromEnvironment) ? (null, null) : (redis, redisSource);
                }
            }

            if (postgres is null || redis is null)
            {
                var localPostgres = postgres is null ? LocalServer.StartPostgresAsync(cancellationToken) : null;
                var localRedis = redis is null ? LocalServer.StartRedisAsync(cancellationToken) : null;
                if (localPostgres is not null)
                {
                    var server = await localPostgres.ConfigureAwait(false);
                    _owned.Add(server);
                    (postgres, postgresSource) = (server.ConnectionString, server.Description + whyLocal);
                }

                if (localRedis is not null)
                {
                    var server = await localRedis.ConfigureAwait(false);
                    _owned.Add(server);
                    (redis, redisSource) = (server.ConnectionString, server.Description + whyLocal);
                }
            }

            return new TestServers($"postgres: {postgresSource}; redis: {redisSource}", postgres!, redis!, _owned, !string.IsNullOrWhiteSpace(postgresFromEnvironment));
        }
        catch
        {
            await DisposeAllAsync(_owned).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Creates a fresh, empty database named <paramref name="namePrefix"/> (reduced to [a-z0-9_]) plus a unique suffix,
    /// and returns a connection string to it. Dropped on dispose when the server is the environment's.
    /// </summary>
    public async Task<string> CreateDatabaseAsync(string namePrefix, CancellationToken cancellationToken = default)
    {
        var prefix = NonIdentifier().Replace(namePrefix.ToLowerInvariant(), "_").Trim('_');
        var name = $"db_{prefix[..Math.Min(prefix.Length, 27)]}_{Guid.NewGuid():N}";
        await ExecuteAsync(PostgresConnectionString, $"CREATE DATABASE \"{name}\" TEMPLATE template0", cancellationToken).ConfigureAwait(false);
        var connectionString = new NpgsqlConnectionStringBuilder(PostgresConnectionString) { Database = name }.ConnectionString;
        lock (_createdDatabases)
        {
            _createdDatabases.Add(connectionString);
        }

        return connectionString;
    }

    public async ValueTask DisposeAsync()
    {
        List<string> databases;
        lock (_createdDatabases)
        {
            databases = [.. _createdDatabases];
            _createdDatabases.Clear();
        }

        NpgsqlConnection.ClearAllPools();
        if (_dropCreatedDatabases)
        {
            foreach (var database in databases)
            {
                var name = new NpgsqlConnectionStringBuilder(database).Database;
                await ExecuteAsync(PostgresConnectionString, $"DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)", CancellationToken.None).ConfigureAwait(false);
            }
        }

        await DisposeAllAsync(_owned).ConfigureAwait(false);
    }

    private static async Task ExecuteAsync(string connectionString, string sql, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task<string> CheckPostgresAsync(string connectionString, CancellationToken cancellationToken)
    {
        try
        {
            await ExecuteAsync(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false, Timeout = 10 }.ConnectionString, "SELECT 1", cancellationToken)
                .ConfigureAwait(false);
            return connectionString;
        }
        catch (Exception e) when (e is NpgsqlException or ArgumentException or TimeoutException)
        {
            throw new InvalidOperationException($"METERING_TEST_POSTGRES is set, but connecting with it failed: {e.Message}", e);
        }
    }

    private static async Task<string> CheckRedisAsync(string configuration)
    {
        var withAdmin = configuration.Contains("allowAdmin=true", StringComparison.OrdinalIgnoreCase) ? configuration : configuration + ",allowAdmin=true";
        try
        {
            await using var multiplexer = await ConnectionMultiplexer.ConnectAsync(withAdmin).ConfigureAwait(false);
            await multiplexer.GetDatabase().PingAsync().ConfigureAwait(false);
            return withAdmin;
        }
        catch (Exception e) when (e is RedisException or ArgumentException or TimeoutException)
        {
            throw new InvalidOperationException($"METERING_TEST_REDIS is set, but connecting with it failed: {e.Message}", e);
        }
    }

    private static async Task DisposeAllAsync(List<IAsyncDisposable> resources)
    {
        for (var i = resources.Count - 1; i >= 0; i--)
        {
            await resources[i].DisposeAsync().ConfigureAwait(false);
        }

        resources.Clear();
    }

    [GeneratedRegex("[^a-z0-9_]+", RegexOptions.CultureInvariant)]
    private static partial Regex NonIdentifier();
}
