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
        var fields = await guard.RunAsync(() => redis.GetDatabase().HashGetAllAsync(RedisKeys.Subscription(subjectId)), cancellationToken);
        if (fields.Length == 0)
        {
            return null;
        }

        var map = fields.ToDictionary(f => f.Name.ToString(), f => f.Value, StringComparer.Ordinal);
        return new Subscription(
            subjectId,
            map["plan"].ToString(),
            (int)map["anchor"],
            map["tz"].ToString(),
            Instant.FromUnixTimeTicks((long)map["updated"]),
            (long)map["v"]);
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
