using System.Diagnostics;
using System.Globalization;
using Npgsql;
using StackExchange.Redis;

namespace Metering.LoadBench;

/// <summary>
/// The local PostgreSQL and Redis of <c>make run</c> (deploy/local/servers.sh, started when they are not running), with
/// scratch space for one benchmark run: two fresh databases on the PostgreSQL server (one for the service, one for the
/// durable-write reference) and Redis database 1, emptied, so that each run starts from the same state and leaves the
/// data of <c>make run</c> (database "metering", Redis database 0) alone.
/// </summary>
internal sealed class LocalStores
{
    public const string ServiceDatabase = "metering_loadbench";
    public const string ReferenceDatabase = "metering_loadbench_ref";
    private const int RedisDatabase = 1;

    private LocalStores(string postgres, string redis)
    {
        AdminPostgres = new NpgsqlConnectionStringBuilder(postgres) { Database = "postgres", Pooling = false }.ConnectionString;
        ServicePostgres = new NpgsqlConnectionStringBuilder(postgres) { Database = ServiceDatabase }.ConnectionString;
        ReferencePostgres = new NpgsqlConnectionStringBuilder(postgres) { Database = ReferenceDatabase }.ConnectionString;
        Redis = $"{redis},defaultDatabase={RedisDatabase}";
    }

    /// <summary>A superuser connection to the maintenance database (not counted as anyone's connection).</summary>
    public string AdminPostgres { get; }

    public string ServicePostgres { get; }

    public string ReferencePostgres { get; }

    /// <summary>StackExchange.Redis configuration of the scratch Redis database.</summary>
    public string Redis { get; }

    /// <summary>Starts the local servers (or finds them running) and prepares empty scratch databases.</summary>
    public static async Task<LocalStores> PrepareAsync(string repositoryRoot)
    {
        var settings = await ServersScriptAsync(repositoryRoot).ConfigureAwait(false);
        var stores = new LocalStores(settings["ConnectionStrings__Postgres"], settings["ConnectionStrings__Redis"]);
        await using (var admin = new NpgsqlConnection(stores.AdminPostgres))
        {
            await admin.OpenAsync().ConfigureAwait(false);
            foreach (var database in new[] { ServiceDatabase, ReferenceDatabase })
            {
                await ExecuteAsync(admin, $"DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)").ConfigureAwait(false);
                await ExecuteAsync(admin, $"CREATE DATABASE \"{database}\"").ConfigureAwait(false);
            }
        }

        await using (var reference = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(stores.ReferencePostgres) { Pooling = false }.ConnectionString))
        {
            await reference.OpenAsync().ConfigureAwait(false);
            await ExecuteAsync(reference, DurableWrite.Schema).ConfigureAwait(false);
        }

        await using var redis = await ConnectionMultiplexer.ConnectAsync(stores.Redis + ",allowAdmin=true").ConfigureAwait(false);
        foreach (var server in redis.GetServers())
        {
            await server.FlushDatabaseAsync(RedisDatabase).ConfigureAwait(false);
        }

        return stores;
    }

    /// <summary>Connections the server holds to <paramref name="database"/> right now (pg_stat_activity).</summary>
    public async Task<int> ConnectionsToAsync(string database)
    {
        await using var admin = new NpgsqlConnection(AdminPostgres);
        await admin.OpenAsync().ConfigureAwait(false);
        await using var command = new NpgsqlCommand("SELECT count(*)::int FROM pg_stat_activity WHERE datname = $1", admin) { Parameters = { new() { Value = database } } };
        return (int)(await command.ExecuteScalarAsync().ConfigureAwait(false))!;
    }

    /// <summary>The process ids of the PostgreSQL server (its postmaster, from postmaster.pid in its data directory) and of redis-server.</summary>
    public async Task<(int Postgres, int Redis)> ProcessIdsAsync()
    {
        await using var admin = new NpgsqlConnection(AdminPostgres);
        await admin.OpenAsync().ConfigureAwait(false);
        await using var command = new NpgsqlCommand("SELECT current_setting('data_directory')", admin);
        var dataDirectory = (string)(await command.ExecuteScalarAsync().ConfigureAwait(false))!;
        var postmaster = int.Parse((await File.ReadAllLinesAsync(Path.Combine(dataDirectory, "postmaster.pid")).ConfigureAwait(false))[0], CultureInfo.InvariantCulture);
        await using var redis = await ConnectionMultiplexer.ConnectAsync(Redis + ",allowAdmin=true").ConfigureAwait(false);
        var info = await redis.GetServers()[0].InfoAsync("server").ConfigureAwait(false);
        var redisPid = info.SelectMany(section => section).First(pair => pair.Key == "process_id").Value;
        return (postmaster, int.Parse(redisPid, CultureInfo.InvariantCulture));
    }

    /// <summary>Server versions and the durability settings that bound a commit, for the table's notes.</summary>
    public async Task<string> DescribeAsync()
    {
        await using var admin = new NpgsqlConnection(AdminPostgres);
        await admin.OpenAsync().ConfigureAwait(false);
        await using var command = new NpgsqlCommand("SELECT current_setting('server_version') || ' (fsync ' || current_setting('fsync') || ', synchronous_commit ' || current_setting('synchronous_commit') || ', max_connections ' || current_setting('max_connections') || ')'", admin);
        var postgres = (string)(await command.ExecuteScalarAsync().ConfigureAwait(false))!;
        await using var redis = await ConnectionMultiplexer.ConnectAsync(Redis).ConfigureAwait(false);
        var version = redis.GetServers()[0].Version;
        return $"PostgreSQL {postgres}, Redis {version}";
    }

    /// <summary>How many ledger events the run left in the service's database and what each costs on disk, indexes included.</summary>
    public async Task<string> LedgerSizeAsync()
    {
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(ServicePostgres) { Pooling = false }.ConnectionString);
        await connection.OpenAsync().ConfigureAwait(false);
        await using var command = new NpgsqlCommand(
            "SELECT (SELECT count(*) FROM usage_events), pg_total_relation_size('usage_events') + pg_total_relation_size('usage_event_lines')", connection);
        await using var reader = await command.ExecuteReaderAsync().ConfigureAwait(false);
        await reader.ReadAsync().ConfigureAwait(false);
        var events = reader.GetInt64(0);
        var bytes = reader.GetInt64(1);
        return events == 0
            ? "no ledger events"
            : string.Create(CultureInfo.InvariantCulture, $"ledger after the run: {events:N0} events, {bytes / events:N0} bytes per event on disk (usage_events + usage_event_lines, indexes included)");
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync().ConfigureAwait(false);
    }

    private static async Task<Dictionary<string, string>> ServersScriptAsync(string repositoryRoot)
    {
        var script = Path.Combine(repositoryRoot, "deploy", "local", "servers.sh");
        var start = new ProcessStartInfo(script, "start") { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{script} did not start");
        var output = await process.StandardOutput.ReadToEndAsync().ConfigureAwait(false);
        await process.WaitForExitAsync().ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{script} start failed with exit code {process.ExitCode}");
        }

        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(line => line.Split('=', 2))
            .Where(pair => pair.Length == 2)
            .ToDictionary(pair => pair[0], pair => pair[1], StringComparer.Ordinal);
    }
}
