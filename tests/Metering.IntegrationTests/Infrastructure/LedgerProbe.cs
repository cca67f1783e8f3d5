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

    /// <summary>The cached counters of a subject's usage type (every period), as Redis holds them.</summary>
    public static async Task<IReadOnlyList<(long Total, long Version)>> CountersAsync(MeteringHost host, string subject, string usageType)
    {
        var server = host.Services.GetService(typeof(IConnectionMultiplexer)) is IConnectionMultiplexer redis
            ? redis.GetServers().Single()
            : throw new InvalidOperationException("No Redis connection.");
        var counters = new List<(long, long)>();
        await foreach (var key in server.KeysAsync(pattern: $"mtr:{{{subject}}}:c:{usageType}:*"))
        {
            var fields = (await host.Redis.HashGetAllAsync(key)).ToDictionary(e => e.Name.ToString(), e => e.Value, StringComparer.Ordinal);
            if (fields.TryGetValue("t", out var total))
            {
                counters.Add(((long)total, (long)fields["v"]));
            }
        }

        return counters;
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
