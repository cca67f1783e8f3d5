using System.Globalization;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using NodaTime;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>Subscriptions cached in Redis, shared by every instance; a write never replaces a newer version.</summary>
public sealed class RedisSubscriptionCache(IConnectionMultiplexer redis, RedisGuard guard, RedisOptions options) : ISubscriptionCache
{
    public async Task<Subscription?> GetAsync(string subjectId, CancellationToken cancellationToken)
    {
        var map = await guard.RunAsync(() => GetCurrentAsync(redis.GetDatabase(), RedisKeys.Subscription(subjectId)), cancellationToken);
        if (map is null)
        {
            return null;
        }

        return new Subscription(
            subjectId,
            map["plan"].ToString(),
            (int)map["anchor"],
            map["tz"].ToString(),
            Instant.FromUnixTimeTicks((long)map["updated"]),
            (long)map["v"]);
    }

    /// <summary>A cached record of this server's life (see get_current.lua), or null.</summary>
    internal static async Task<Dictionary<string, RedisValue>?> GetCurrentAsync(IDatabase database, RedisKey key)
    {
        var result = (RedisResult[])(await Scripts.GetCurrent.EvaluateAsync(database, [key], []))!;
        if (result.Length == 0)
        {
            return null;
        }

        var map = new Dictionary<string, RedisValue>(result.Length / 2, StringComparer.Ordinal);
        for (var i = 0; i + 1 < result.Length; i += 2)
        {
            map[(string)result[i]!] = (RedisValue)result[i + 1];
        }

        return map;
    }

    public async Task PutAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        RedisValue[] values =
        [
            subscription.Version,
            (long)options.SubscriptionTtl.TotalMilliseconds,
            "plan", subscription.PlanId,
            "anchor", subscription.BillingAnchorDay,
            "tz", subscription.TimeZone,
            "updated", subscription.UpdatedAt.ToUnixTimeTicks(),
        ];
        await guard.RunAsync(
            () => Scripts.PutIfNewer.EvaluateAsync(redis.GetDatabase(), [RedisKeys.Subscription(subscription.SubjectId)], values),
            cancellationToken);
    }
}
