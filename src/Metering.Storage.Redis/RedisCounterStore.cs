using Metering.Core.Ports;
using Metering.Core.Usage;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>The counter store on Redis: each method is one Lua script over one subject's keys.</summary>
public sealed class RedisCounterStore(IConnectionMultiplexer redis, RedisGuard guard, RedisOptions options) : ICounterStore
{
    private IDatabase Database => redis.GetDatabase();

    private long CounterTtlMs => (long)options.CounterTtl.TotalMilliseconds;

    public async Task<CounterCheckResult> CheckAsync(CounterCheck check, CancellationToken cancellationToken)
    {
        var keys = check.Lines.Select(l => RedisKeys.Counter(l.Key)).ToArray();
        var result = (RedisResult[])(await guard.RunAsync(() => Scripts.Check.EvaluateAsync(Database, keys, []), cancellationToken))!;
        if ((long)result[0] < 0)
        {
            return CounterCheckResult.MissingCounters([.. result.Skip(1).Select(i => check.Lines[(int)i - 1].Key)]);
        }

        var readings = new CounterReading[check.Lines.Count];
        for (var i = 0; i < readings.Length; i++)
        {
            readings[i] = new CounterReading((long)result[1 + (2 * i)], (long)result[2 + (2 * i)]);
        }

        return new CounterCheckResult([], readings);
    }

    public async Task ApplyAsync(IReadOnlyList<CounterValue> values, CancellationToken cancellationToken)
    {
        // One script per subject (its keys share a hash tag, so this also runs on Redis Cluster), sent together.
        var calls = values
            .GroupBy(v => v.Key.SubjectId, StringComparer.Ordinal)
            .Select(subject =>
            {
                var keys = subject.Select(v => RedisKeys.Counter(v.Key)).ToArray();
                var args = new RedisValue[1 + (3 * keys.Length)];
                args[0] = CounterTtlMs;
                var i = 1;
                foreach (var value in subject)
                {
                    args[i++] = value.Total;
                    args[i++] = value.Held;
                    args[i++] = value.Version;
                }

                return guard.RunAsync(() => Scripts.Apply.EvaluateAsync(Database, keys, args), cancellationToken);
            })
            .ToList();
        await Task.WhenAll(calls);
    }

    public async Task FenceAsync(IReadOnlyList<CounterKey> keys, long fence, CancellationToken cancellationToken)
    {
        foreach (var subject in keys.GroupBy(k => k.SubjectId, StringComparer.Ordinal))
        {
            var redisKeys = subject.Select(RedisKeys.Counter).ToArray();
            await guard.RunAsync(() => Scripts.Fence.EvaluateAsync(Database, redisKeys, [fence, CounterTtlMs]), cancellationToken);
        }
    }

    public async Task<CounterSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken)
    {
        var counter = await guard.RunAsync(() => Database.HashGetAllAsync(RedisKeys.Counter(key)), cancellationToken);
        var fields = counter.ToDictionary(e => e.Name.ToString(), e => e.Value, StringComparer.Ordinal);
        return new CounterSnapshot(Field("t"), Field("h"), Field("v"));

        long? Field(string name) => fields.TryGetValue(name, out var value) ? (long)value : null;
    }

    public async Task EvictAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken)
    {
        foreach (var key in keys)
        {
            await guard.RunAsync(() => Database.KeyDeleteAsync(RedisKeys.Counter(key)), cancellationToken);
        }
    }
}
