using System.Globalization;
using StackExchange.Redis;

namespace Metering.FaultTests;

/// <summary>
/// The one place that reads Metering's Redis keys behind its back (key layout: docs/architecture.md, "Redis keys"):
/// counters <c>mtr:{subject}:c:&lt;usage_type&gt;:&lt;period_start_unix&gt;</c> (hash, field <c>t</c> = total) and holds
/// <c>mtr:{subject}:holds</c> (hash: reservation id → "&lt;expires_ms&gt;\n&lt;usage_type&gt; &lt;period&gt; &lt;amount&gt;\n…").
/// </summary>
internal static class RedisState
{
    public sealed record Hold(string Subject, string ReservationId, long ExpiresMs, IReadOnlyList<(string UsageType, long Period, long Amount)> Lines);

    /// <summary>Every counter of the subjects named <paramref name="prefix"/>-…: (subject, usage type, period start in Unix seconds) → total.</summary>
    public static async Task<Dictionary<(string Subject, string UsageType, long Period), long>> CountersAsync(ConnectionMultiplexer redis, string prefix)
    {
        var counters = new Dictionary<(string, string, long), long>();
        var database = redis.GetDatabase();
        await foreach (var key in Server(redis).KeysAsync(pattern: $"mtr:{{{prefix}-*}}:c:*", pageSize: 1000))
        {
            var (subject, rest) = Split(key!);
            var parts = rest.Split(':'); // c, usage type, period
            var total = await database.HashGetAsync(key, "t");
            if (parts.Length == 3 && !total.IsNull)
            {
                counters[(subject, parts[1], long.Parse(parts[2], CultureInfo.InvariantCulture))] = (long)total;
            }
        }

        return counters;
    }

    /// <summary>Every hold stored for the subjects named <paramref name="prefix"/>-…, expired or not.</summary>
    public static async Task<List<Hold>> HoldsAsync(ConnectionMultiplexer redis, string prefix)
    {
        var holds = new List<Hold>();
        var database = redis.GetDatabase();
        await foreach (var key in Server(redis).KeysAsync(pattern: $"mtr:{{{prefix}-*}}:holds", pageSize: 1000))
        {
            var (subject, _) = Split(key!);
            foreach (var entry in await database.HashGetAllAsync(key))
            {
                var lines = entry.Value.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
                var parsed = lines.Skip(1)
                    .Select(line => line.Split(' '))
                    .Select(p => (p[0], long.Parse(p[1], CultureInfo.InvariantCulture), long.Parse(p[2], CultureInfo.InvariantCulture)))
                    .ToList();
                holds.Add(new Hold(subject, entry.Name!, long.Parse(lines[0], CultureInfo.InvariantCulture), parsed));
            }
        }

        return holds;
    }

    private static IServer Server(ConnectionMultiplexer redis) => redis.GetServer(redis.GetEndPoints().Single());

    /// <summary>"mtr:{subject}:rest" → (subject, rest).</summary>
    private static (string Subject, string Remainder) Split(string key)
    {
        var close = key.IndexOf("}:", StringComparison.Ordinal);
        return (key[5..close], key[(close + 2)..]);
    }
}
