using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>Subscriptions cached in Redis, shared by every instance; a write never replaces a newer version.</summary>
public sealed class RedisSubscriptionCache(IConnectionMultiplexer redis, RedisGuard guard, RedisOptions options) : ISubscriptionCache
{
    public async Task<Subscription?> GetAsync(string subjectId, CancellationToken cancellationToken) =>
        ScriptProtocol.ReadSubscription(subjectId, await guard.RunAsync("get_subscription", () => ScriptProtocol.GetSubscription(subjectId).RunAsync(redis.GetDatabase()), cancellationToken));

    public async Task PutAsync(Subscription subscription, CancellationToken cancellationToken) =>
        await guard.RunAsync("put_subscription", () => ScriptProtocol.PutSubscription(subscription, options.SubscriptionTtl).RunAsync(redis.GetDatabase()), cancellationToken);
}
