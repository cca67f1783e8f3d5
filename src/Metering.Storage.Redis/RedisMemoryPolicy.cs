using System.Globalization;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>
/// Reads Redis's <c>maxmemory</c> and <c>maxmemory-policy</c> at start-up and says what they mean for Metering. Every
/// Metering key in Redis can be rebuilt from PostgreSQL, so any eviction policy is safe; <c>noeviction</c> with a
/// <c>maxmemory</c> makes writes fail once Redis is full (answered from the ledger, slower), so it earns a warning that
/// recommends <c>allkeys-lru</c>. Where CONFIG is refused (managed services often do) the values come from
/// <c>INFO memory</c>; a Redis that answers neither is logged and start-up goes on.
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
            (policy, maxMemory) = await ReadAsync(redis, timeout, cancellationToken);
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

    /// <summary>
    /// CONFIG GET over a short-lived admin connection of its own (the service's connection is not in admin mode); where
    /// CONFIG is refused (managed services often rename or forbid it), the same two values from <c>INFO memory</c>.
    /// </summary>
    private static async Task<(string Policy, long MaxMemory)> ReadAsync(IConnectionMultiplexer redis, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var options = ConfigurationOptions.Parse(redis.Configuration);
        options.AllowAdmin = true;
        options.AbortOnConnectFail = true;
        options.ConnectTimeout = (int)timeout.TotalMilliseconds;
        options.ConnectRetry = 0;
        await using var admin = await ConnectionMultiplexer.ConnectAsync(options).WaitAsync(timeout * 2, cancellationToken);
        var database = admin.GetDatabase();
        try
        {
            var policy = ValueOf(await database.ExecuteAsync("CONFIG", "GET", "maxmemory-policy").WaitAsync(timeout, cancellationToken));
            var maxMemory = ValueOf(await database.ExecuteAsync("CONFIG", "GET", "maxmemory").WaitAsync(timeout, cancellationToken));
            return (policy, long.Parse(maxMemory, CultureInfo.InvariantCulture));
        }
        catch (RedisServerException ex)
        {
            var info = (await database.ExecuteAsync("INFO", "memory").WaitAsync(timeout, cancellationToken)).ToString();
            var fields = info.Split('\n')
                .Select(line => line.Trim().Split(':', 2))
                .Where(pair => pair.Length == 2)
                .ToDictionary(pair => pair[0], pair => pair[1], StringComparer.Ordinal);
            return fields.TryGetValue("maxmemory_policy", out var policy) && fields.TryGetValue("maxmemory", out var maxMemory)
                ? (policy, long.Parse(maxMemory, CultureInfo.InvariantCulture))
                : throw new FormatException($"CONFIG is refused ({ex.Message}) and INFO memory has no maxmemory_policy.");
        }
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
