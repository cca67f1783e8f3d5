using Metering.Core.Ports;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>
/// The catalog version shared by every instance, as a hash written through <c>put_if_newer.lua</c>, so it only moves
/// up. It lives <see cref="RedisOptions.CatalogVersionTtl"/> after its last write: that bounds how long instances could
/// miss a change whose write here failed (the change's call fails too, so it is retried).
/// </summary>
public sealed class RedisCatalogVersionCache(IConnectionMultiplexer redis, RedisGuard guard, RedisOptions options) : ICatalogVersionCache
{
    public async Task<long?> GetAsync(string catalogId, CancellationToken cancellationToken) =>
        ScriptProtocol.ReadCatalogVersion(await guard.RunAsync("get_catalog_version", () => ScriptProtocol.GetCatalogVersion(catalogId).RunAsync(redis.GetDatabase()), cancellationToken));

    public async Task PutAsync(string catalogId, long version, CancellationToken cancellationToken) =>
        await guard.RunAsync("put_catalog_version", () => ScriptProtocol.PutCatalogVersion(catalogId, version, options.CatalogVersionTtl).RunAsync(redis.GetDatabase()), cancellationToken);
}
