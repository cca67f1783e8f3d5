using System.Globalization;
using Npgsql;
using StackExchange.Redis;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>Reads the ledger and the counters behind the service's back, to check what it says against them.</summary>
internal static class LedgerProbe
{
    /// <summary>Sum of every event line of a subject and usage type (all periods).</summary>
    public static async Task<long> EventSumAsync(MeteringHost host, string subject, string usageType) =>
        await ScalarAsync(host, "SELECT COALESCE(SUM(amount), 0) FROM usage_event_lines WHERE subject_id = @s AND usage_type = @t", subject, usageType);

    /// <summary>Number of ledger events of a subject.</summary>
    public static async Task<long> EventCountAsync(MeteringHost host, string subject) =>
        await ScalarAsync(host, "SELECT COUNT(*) FROM usage_events WHERE subject_id = @s", subject, "");

    /// <summary>Number of running total rows of a subject (every usage type and period).</summary>
    public static async Task<long> TotalRowCountAsync(MeteringHost host, string subject) =>
        await ScalarAsync(host, "SELECT COUNT(*) FROM usage_totals WHERE subject_id = @s", subject, "");

    /// <summary>The cached counters of a subject's usage type (every period), as Redis holds them.</summary>
    public static async Task<IReadOnlyList<(long Total, long Version)>> CountersAsync(MeteringHost host, string subject, string usageType)
    {
        var redis = host.Services.GetService(typeof(IConnectionMultiplexer)) as IConnectionMultiplexer
            ?? throw new InvalidOperationException("No Redis connection.");
        var counters = new List<(long, long)>();
        foreach (var key in await KeysAsync(redis, $"mtr:{{{subject}}}:c:{usageType}:*"))
        {
            var fields = (await host.Redis.HashGetAllAsync(key)).ToDictionary(e => e.Name.ToString(), e => e.Value, StringComparer.Ordinal);
            if (fields.TryGetValue("t", out var total))
            {
                counters.Add(((long)total, (long)fields["v"]));
            }
        }

        return counters;
    }

    /// <summary>The keys matching <paramref name="pattern"/> on every primary (one server, or each node of a cluster).</summary>
    public static async Task<IReadOnlyList<RedisKey>> KeysAsync(IConnectionMultiplexer redis, string pattern)
    {
        var keys = new List<RedisKey>();
        foreach (var server in redis.GetServers().Where(s => !s.IsReplica))
        {
            await foreach (var key in server.KeysAsync(pattern: pattern))
            {
                keys.Add(key);
            }
        }

        return keys;
    }

    /// <summary>
    /// Waits until the outbox of a subject is drained (at most 5 s): from then on the service writes its counters only
    /// when the ledger changes, so a test can tamper with them without the drain undoing it.
    /// </summary>
    public static async Task OutboxDrainedAsync(MeteringHost host, string subject)
    {
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (await ScalarAsync(host, "SELECT COUNT(*) FROM counter_outbox WHERE subject_id = @s OR (@t = '' AND subject_id IS NULL)", subject, "") > 0)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"The counter outbox of '{subject}' was not drained within 5 s.");
            }

            await Task.Delay(50);
        }
    }

    private static async Task<long> ScalarAsync(MeteringHost host, string sql, string subject, string usageType)
    {
        await using var connection = new NpgsqlConnection(host.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.AddWithValue("s", subject);
        command.Parameters.AddWithValue("t", usageType);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
    }
}
