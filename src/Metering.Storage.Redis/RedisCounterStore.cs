using Metering.Core.Ports;
using Metering.Core.Usage;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>The counter store on Redis: each method is one Lua script over one subject's keys (see <see cref="ScriptProtocol"/>).</summary>
public sealed class RedisCounterStore(IConnectionMultiplexer redis, RedisGuard guard, RedisOptions options) : ICounterStore
{
    private IDatabase Database => redis.GetDatabase();

    public async Task<CounterCheckResult> CheckAsync(CounterCheck check, CancellationToken cancellationToken) =>
        ScriptProtocol.ReadCheck(await guard.RunAsync(() => ScriptProtocol.CheckCounters(check).RunAsync(Database), cancellationToken), check);

    public async Task ApplyAsync(IReadOnlyList<CounterValue> values, CancellationToken cancellationToken)
    {
        // One script per subject (its keys share a hash tag, so this also runs on Redis Cluster), sent together.
        var calls = values
            .GroupBy(v => v.Key.SubjectId, StringComparer.Ordinal)
            .Select(subject =>
            {
                var call = ScriptProtocol.ApplyValues([.. subject], options.CounterTtl);
                return guard.RunAsync(() => call.RunAsync(Database), cancellationToken);
            })
            .ToList();
        await Task.WhenAll(calls);
    }

    public async Task FenceAsync(IReadOnlyList<CounterKey> keys, long fence, CancellationToken cancellationToken)
    {
        foreach (var subject in keys.GroupBy(k => k.SubjectId, StringComparer.Ordinal))
        {
            var call = ScriptProtocol.FenceCounters([.. subject], fence, options.CounterTtl);
            await guard.RunAsync(() => call.RunAsync(Database), cancellationToken);
        }
    }

    public async Task<CounterSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken) =>
        ScriptProtocol.ReadCounter(await guard.RunAsync(() => Database.HashGetAllAsync(RedisKeys.Counter(key)), cancellationToken));

    public async Task EvictAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken)
    {
        foreach (var key in keys)
        {
            await guard.RunAsync(() => Database.KeyDeleteAsync(RedisKeys.Counter(key)), cancellationToken);
        }
    }
}
