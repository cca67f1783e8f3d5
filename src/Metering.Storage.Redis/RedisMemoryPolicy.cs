using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>
/// Reads Redis's <c>maxmemory</c> and <c>maxmemory-policy</c> at start-up and says what they mean for Metering. Every
/// Metering key in Redis can be rebuilt from PostgreSQL, so any eviction policy is safe; <c>noeviction</c> with a
/// <c>maxmemory</c> makes writes fail once Redis is full (answered from the ledger, slower), so it earns a warning that
/// recommends <c>allkeys-lru</c>. A Redis that refuses CONFIG (managed services often do) or does not answer is logged
/// and start-up goes on.
/// </summary>
public static partial class RedisMemoryPolicy
{
    public const string Recommended = "allkeys-lru";

    /// <summary>Logs the policy (and a warning for noeviction with a memory limit); returns it, or null when unknown.</summary>
    public static async Task<string?> CheckAsync(IConnectionMultiplexer redis, ILogger logger, TimeSpan timeout, CancellationToken cancellationToken)
    {
        string policy;
        long maxMemory;
        try
        {
            var database = redis.GetDatabase();
            policy = ValueOf(await database.ExecuteAsync("CONFIG", "GET", "maxmemory-policy").WaitAsync(timeout, cancellationToken));
            maxMemory = long.Parse(ValueOf(await database.ExecuteAsync("CONFIG", "GET", "maxmemory").WaitAsync(timeout, cancellationToken)), System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is RedisException or RedisCommandException or TimeoutException or FormatException or InvalidCastException)
        {
            LogUnknown(logger, ex.Message, Recommended);
            return null;
        }

        if (policy == "noeviction" && maxMemory > 0)
        {
            LogNoEviction(logger, maxMemory, Recommended);
        }
        else
        {
            LogPolicy(logger, policy, maxMemory);
        }

        return policy;
    }

    /// <summary>The value of a one-parameter CONFIG GET reply (<c>[name, value]</c>).</summary>
    private static string ValueOf(RedisResult reply) =>
        reply.Resp2Type == ResultType.Array && reply.Length == 2
            ? reply[1].ToString()
            : throw new FormatException($"CONFIG GET answered '{reply}'.");

    [LoggerMessage(Level = LogLevel.Information, Message = "Redis maxmemory-policy is {Policy} (maxmemory {MaxMemory} bytes, 0 = no limit); every Metering key in Redis is rebuilt from PostgreSQL when evicted")]
    private static partial void LogPolicy(ILogger logger, string policy, long maxMemory);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Redis maxmemory-policy is noeviction with maxmemory {MaxMemory} bytes: once Redis is full its writes fail and calls are answered from PostgreSQL, more slowly. Every Metering key in Redis can be rebuilt, so set maxmemory-policy {Recommended}")]
    private static partial void LogNoEviction(ILogger logger, long maxMemory, string recommended);

    [LoggerMessage(Level = LogLevel.Information, Message = "Redis maxmemory-policy could not be read ({Reason}); any eviction policy is safe for Metering, {Recommended} is recommended")]
    private static partial void LogUnknown(ILogger logger, string reason, string recommended);
}
