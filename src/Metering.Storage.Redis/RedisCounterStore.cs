using System.Globalization;
using Metering.Core.Ports;
using Metering.Core.Usage;
using Metering.Core.Validation;
using NodaTime;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>The counter store on Redis: each method is one Lua script over one subject's keys.</summary>
public sealed class RedisCounterStore(IConnectionMultiplexer redis, RedisGuard guard, RedisOptions options) : ICounterStore
{
    private IDatabase Database => redis.GetDatabase();

    public async Task<CounterCheckResult> CheckAsync(CounterCheck check, CancellationToken cancellationToken)
    {
        var n = check.Lines.Count;
        var keys = new RedisKey[n + 1];
        var values = new RedisValue[6 + (4 * n)];
        keys[0] = RedisKeys.Holds(check.SubjectId);
        values[0] = check.Now.ToUnixTimeMilliseconds();
        values[1] = check.Hold?.ReservationId ?? string.Empty;
        values[2] = check.Hold?.ExpiresAt.ToUnixTimeMilliseconds() ?? 0;
        values[3] = check.ExcludeReservationId ?? string.Empty;
        values[4] = n;
        for (var i = 0; i < n; i++)
        {
            var line = check.Lines[i];
            keys[i + 1] = RedisKeys.Counter(line.Key);
            values[5 + (4 * i)] = line.Key.UsageType;
            values[6 + (4 * i)] = RedisKeys.Period(line.Key);
            values[7 + (4 * i)] = line.Amount;
            values[8 + (4 * i)] = line.Limit;
        }

        values[5 + (4 * n)] = RequestValidator.MaxPeriodTotal;

        var result = (RedisResult[])(await guard.RunAsync(() => Scripts.Check.EvaluateAsync(Database, keys, values), cancellationToken))!;
        if ((long)result[0] < 0)
        {
            return CounterCheckResult.MissingCounters([.. result.Skip(1).Select(i => check.Lines[(int)i - 1].Key)]);
        }

        var readings = new CounterReading[n];
        for (var i = 0; i < n; i++)
        {
            readings[i] = new CounterReading((long)result[1 + (2 * i)], (long)result[2 + (2 * i)]);
        }

        return new CounterCheckResult([], readings, (long)result[0] == 1, (long)result[0] == 2);
    }

    public async Task ApplyAsync(string subjectId, IReadOnlyList<CounterValue> values, IReadOnlyList<string> releaseReservations, CancellationToken cancellationToken)
    {
        if (values.Count == 0 && releaseReservations.Count == 0)
        {
            return;
        }

        var keys = new RedisKey[values.Count + 1];
        var args = new List<RedisValue>(2 + (2 * values.Count) + releaseReservations.Count)
        {
            values.Count,
            (long)options.CounterTtl.TotalMilliseconds,
        };
        keys[0] = RedisKeys.Holds(subjectId);
        for (var i = 0; i < values.Count; i++)
        {
            keys[i + 1] = RedisKeys.Counter(values[i].Key);
            args.Add(values[i].Total);
            args.Add(values[i].Version);
        }

        args.AddRange(releaseReservations.Select(id => (RedisValue)id));
        await guard.RunAsync(() => Scripts.Apply.EvaluateAsync(Database, keys, [.. args]), cancellationToken);
    }

    public async Task<bool> ReleaseAsync(string subjectId, string reservationId, Instant now, CancellationToken cancellationToken)
    {
        var result = await guard.RunAsync(
            () => Scripts.Release.EvaluateAsync(Database, [RedisKeys.Holds(subjectId)], [reservationId, now.ToUnixTimeMilliseconds()]),
            cancellationToken);
        return (long)result == 1;
    }

    public async Task FenceAsync(IReadOnlyList<CounterKey> keys, long fence, CancellationToken cancellationToken)
    {
        foreach (var key in keys)
        {
            // A version without a total: the check script sees no counter and has it rebuilt;
            // the apply script refuses any total older than the fence.
            await guard.RunAsync(
                () => Scripts.PutIfNewer.EvaluateAsync(Database, [RedisKeys.Counter(key)], [fence, (long)options.CounterTtl.TotalMilliseconds]),
                cancellationToken);
        }
    }

    public async Task<CounterSnapshot> InspectAsync(CounterKey key, Instant now, CancellationToken cancellationToken)
    {
        var counter = await guard.RunAsync(() => Database.HashGetAllAsync(RedisKeys.Counter(key)), cancellationToken);
        var holds = await guard.RunAsync(() => Database.HashGetAllAsync(RedisKeys.Holds(key.SubjectId)), cancellationToken);
        var fields = counter.ToDictionary(e => e.Name.ToString(), e => e.Value, StringComparer.Ordinal);
        long? total = fields.TryGetValue("t", out var t) ? (long)t : null;
        long? version = fields.TryGetValue("v", out var v) ? (long)v : null;
        var period = RedisKeys.Period(key);
        var live = new List<HoldInfo>();
        foreach (var hold in holds)
        {
            // "<expires_ms>\n<usage_type> <period> <amount>\n…", as check.lua writes it.
            var lines = hold.Value.ToString().Split('\n');
            var expires = Instant.FromUnixTimeMilliseconds(long.Parse(lines[0], CultureInfo.InvariantCulture));
            if (expires <= now)
            {
                continue;
            }

            foreach (var line in lines.Skip(1))
            {
                var parts = line.Split(' ');
                if (parts.Length == 3 && parts[0] == key.UsageType && parts[1] == period)
                {
                    live.Add(new HoldInfo(hold.Name.ToString(), long.Parse(parts[2], CultureInfo.InvariantCulture), expires));
                }
            }
        }

        return new CounterSnapshot(total, version, live);
    }

    public async Task EvictAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken)
    {
        foreach (var key in keys)
        {
            await guard.RunAsync(() => Database.KeyDeleteAsync(RedisKeys.Counter(key)), cancellationToken);
        }
    }
}
