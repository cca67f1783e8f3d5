using Metering.Core.Ports;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>
/// The catalog version shared by every instance, as a hash <c>{v}</c> written through <c>put_if_newer.lua</c>, so it only
/// moves up. It lives <see cref="RedisOptions.CatalogVersionTtl"/> after its last write: that bounds how long instances
/// could miss a change whose write here failed (the change's call fails too, so it is retried).
/// </summary>
public sealed class RedisCatalogVersionCache(IConnectionMultiplexer redis, RedisGuard guard, RedisOptions options) : ICatalogVersionCache
{
    public async Task<long?> GetAsync(string catalogId, CancellationToken cancellationToken)
    {
        var map = await guard.RunAsync(() => RedisSubscriptionCache.GetCurrentAsync(redis.GetDatabase(), RedisKeys.CatalogVersion(catalogId)), cancellationToken);
        return map is not null && map.TryGetValue("v", out var value) ? (long)value : null;
    }

    public async Task PutAsync(string catalogId, long version, CancellationToken cancellationToken) =>
        await guard.RunAsync(
            () => Scripts.PutIfNewer.EvaluateAsync(
                redis.GetDatabase(),
                [RedisKeys.CatalogVersion(catalogId)],
                [version, (long)options.CatalogVersionTtl.TotalMilliseconds]),
            cancellationToken);
}
