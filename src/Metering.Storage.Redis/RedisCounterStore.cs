using Metering.Core.Ports;
using Metering.Core.Usage;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>The counter store on Redis: each method is one Lua script over one subject's keys (see <see cref="ScriptProtocol"/>).</summary>
public sealed class RedisCounterStore(IConnectionMultiplexer redis, RedisGuard guard, RedisOptions options) : ICounterStore
{
    private IDatabase Database => redis.GetDatabase();

    private bool? _cluster;

    /// <summary>Whether Redis runs as a cluster; null until connected.</summary>
    private bool? IsCluster => _cluster ??= redis.IsConnected
        ? redis.GetEndPoints().Any(e => redis.GetServer(e).ServerType == ServerType.Cluster)
        : null;

    /// <summary>
    /// One script call. On Redis Cluster the catalog version lives in another slot than the subject's keys, so it is
    /// read by a second command sent in the same flight (still one round trip of latency).
    /// </summary>
    public async Task<CounterCheckResult> CheckAsync(CounterCheck check, CancellationToken cancellationToken)
    {
        if (check.Expected is not { } expected || IsCluster != true)
        {
            return ScriptProtocol.ReadCheck(await guard.RunAsync("check", () => ScriptProtocol.CheckCounters(check).RunAsync(Database), cancellationToken), check);
        }

        var catalog = guard.RunAsync("get_catalog_version", () => ScriptProtocol.GetCatalogVersion(expected.CatalogId).RunAsync(Database), cancellationToken);
        var counters = guard.RunAsync("check", () => ScriptProtocol.CheckCounters(check, withCatalog: false).RunAsync(Database), cancellationToken);
        await Task.WhenAll(catalog, counters);
        return ScriptProtocol.IsCatalogCurrent(await catalog, expected.Catalog)
            ? ScriptProtocol.ReadCheck(await counters, check)
            : CounterCheckResult.StaleVersions;
    }

    public async Task<int> CreateEmptyAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken)
    {
        // One script per subject, sent together (and, by a caller that sends its check right after, in one flight with it).
        var calls = keys
            .GroupBy(k => k.SubjectId, StringComparer.Ordinal)
            .Select(subject =>
            {
                var call = ScriptProtocol.CreateEmptyCounters([.. subject], options.CounterTtl);
                return guard.RunAsync("create_empty", () => call.RunAsync(Database), cancellationToken);
            })
            .ToList();
        return (await Task.WhenAll(calls)).Sum(created => (int)created);
    }

    public async Task ApplyAsync(IReadOnlyList<CounterValue> values, CancellationToken cancellationToken)
    {
        // One script per subject (its keys share a hash tag, so this also runs on Redis Cluster), sent together.
        var calls = values
            .GroupBy(v => v.Key.SubjectId, StringComparer.Ordinal)
            .Select(subject =>
            {
                var call = ScriptProtocol.ApplyValues([.. subject], options.CounterTtl);
                return guard.RunAsync("apply", () => call.RunAsync(Database), cancellationToken);
            })
            .ToList();
        await Task.WhenAll(calls);
    }

    public async Task FenceAsync(IReadOnlyList<CounterKey> keys, long fence, CancellationToken cancellationToken)
    {
        foreach (var subject in keys.GroupBy(k => k.SubjectId, StringComparer.Ordinal))
        {
            var call = ScriptProtocol.FenceCounters([.. subject], fence, options.CounterTtl);
            await guard.RunAsync("fence", () => call.RunAsync(Database), cancellationToken);
        }
    }

    public async Task<CounterSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken) =>
        ScriptProtocol.ReadCounter(await guard.RunAsync("inspect", () => Database.HashGetAllAsync(RedisKeys.Counter(key)), cancellationToken));

    public async Task EvictAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken)
    {
        foreach (var key in keys)
        {
            await guard.RunAsync("evict", () => Database.KeyDeleteAsync(RedisKeys.Counter(key)), cancellationToken);
        }
    }
}
