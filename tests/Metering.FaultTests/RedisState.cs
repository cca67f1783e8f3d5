using System.Globalization;
using StackExchange.Redis;

namespace Metering.FaultTests;

/// <summary>
/// The one place that reads Metering's Redis keys behind its back (key layout: docs/architecture.md, "Redis keys"):
/// counters <c>mtr:{subject}:c:&lt;usage_type&gt;:&lt;period_start_unix&gt;</c> (hash: <c>t</c> = total, <c>e</c> = run id of
/// the Redis server that wrote it). Holds are ledger records (see <see cref="Checker"/>).
/// </summary>
internal static class RedisState
{
    /// <summary>
    /// Every counter of the subjects named <paramref name="prefix"/>-… that the service would use: (subject, usage type,
    /// period start in Unix seconds) → total. A counter written by another server's life (before a failover or a restart)
    /// is never read by the service (it rebuilds it from the ledger), so it counts as absent here too.
    /// </summary>
    public static async Task<Dictionary<(string Subject, string UsageType, long Period), long>> CountersAsync(ConnectionMultiplexer redis, string prefix)
    {
        var counters = new Dictionary<(string, string, long), long>();
        var database = redis.GetDatabase();
        var server = Server(redis);
        var runId = (await server.InfoAsync("server")).SelectMany(g => g).Single(p => p.Key == "run_id").Value;
        await foreach (var key in server.KeysAsync(pattern: $"mtr:{{{prefix}-*}}:c:*", pageSize: 1000))
        {
            var (subject, rest) = Split(key!);
            var parts = rest.Split(':'); // c, usage type, period
            var fields = await database.HashGetAsync(key, ["t", "e"]);
            if (parts.Length == 3 && !fields[0].IsNull && fields[1] == runId)
            {
                counters[(subject, parts[1], long.Parse(parts[2], CultureInfo.InvariantCulture))] = (long)fields[0];
            }
        }

        return counters;
    }

    private static IServer Server(ConnectionMultiplexer redis) => redis.GetServer(redis.GetEndPoints().Single());

    /// <summary>"mtr:{subject}:rest" → (subject, rest).</summary>
    private static (string Subject, string Remainder) Split(string key)
    {
        var close = key.IndexOf("}:", StringComparison.Ordinal);
        return (key[5..close], key[(close + 2)..]);
    }
}
