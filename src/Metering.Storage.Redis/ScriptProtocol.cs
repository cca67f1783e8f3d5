using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using NodaTime;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>One script call: the script, its keys and its arguments, in the order the script reads them.</summary>
internal sealed record ScriptCall(RedisScript Script, RedisKey[] Keys, RedisValue[] Args)
{
    public Task<RedisResult> RunAsync(IDatabaseAsync database) => Script.EvaluateAsync(database, Keys, Args);
}

/// <summary>
/// The one owner of the protocol between the Redis stores and their Lua scripts (Scripts/*.lua): the keys and
/// arguments each script takes and their order, the result codes it answers, and how values are kept in the hashes
/// the scripts write. The stores build calls and read answers only through it; the unit tests pin it without a server.
/// <para>
/// Every cached record is a hash stamped with the version it was written at (<see cref="VersionField"/>) and the run id
/// of the Redis server that wrote it (<see cref="LifeField"/>): a record of another server's life (a restart from a
/// snapshot, a promoted replica) may have missed writes and reads as missing.
/// </para>
/// </summary>
internal static class ScriptProtocol
{
    /// <summary>Ledger total of a counter hash.</summary>
    public const string TotalField = "t";

    /// <summary>Amount held by live holds, of a counter hash.</summary>
    public const string HeldField = "h";

    /// <summary>Version of any cached record.</summary>
    public const string VersionField = "v";

    /// <summary>Run id of the Redis server that wrote a record.</summary>
    public const string LifeField = "e";

    /// <summary>check.lua: every counter read; the totals and held amounts follow.</summary>
    public const long CheckRead = 0;

    /// <summary>check.lua: some counters are missing (or of another life); their 1-based positions follow.</summary>
    public const long CheckMissing = -1;

    /// <summary>check.lua: a record the caller keeps a copy of is missing, of another life or newer than the copy.</summary>
    public const long CheckStale = -2;

    private const string PlanField = "plan";
    private const string AnchorField = "anchor";
    private const string TimeZoneField = "tz";
    private const string UpdatedField = "updated";

    private static readonly RedisScript Check = RedisScript.Load("check");
    private static readonly RedisScript Apply = RedisScript.Load("apply");
    private static readonly RedisScript Fence = RedisScript.Load("fence");
    private static readonly RedisScript PutIfNewer = RedisScript.Load("put_if_newer");
    private static readonly RedisScript GetCurrent = RedisScript.Load("get_current");
    private static readonly RedisScript CreateEmpty = RedisScript.Load("create_empty");

    /// <summary>
    /// check.lua over one subject's counters. KEYS: the records whose copies <see cref="CounterCheck.Expected"/> names
    /// (the subscription, then, when <paramref name="withCatalog"/>, the catalog version), then the counter hashes.
    /// ARGV: the number of records, then the version of each copy. Without <paramref name="withCatalog"/> (on Redis
    /// Cluster, where the catalog version lives in another slot), the catalog version is confirmed by
    /// <see cref="IsCatalogCurrent"/> on a <see cref="GetCatalogVersion"/> sent alongside.
    /// </summary>
    public static ScriptCall CheckCounters(CounterCheck check, bool withCatalog = true)
    {
        var counters = check.Lines.Select(l => RedisKeys.Counter(l.Key));
        if (check.Expected is not { } expected)
        {
            return new(Check, [.. counters], []);
        }

        return withCatalog
            ? new(Check, [RedisKeys.Subscription(check.SubjectId), RedisKeys.CatalogVersion(expected.CatalogId), .. counters], [2, expected.Subscription, expected.Catalog])
            : new(Check, [RedisKeys.Subscription(check.SubjectId), .. counters], [1, expected.Subscription]);
    }

    /// <summary>Whether the shared catalog version (a <see cref="GetCatalogVersion"/> answer) confirms the caller's copy, by check.lua's rule.</summary>
    public static bool IsCatalogCurrent(RedisResult result, long expected) => ReadCatalogVersion(result) is { } shared && shared <= expected;

    /// <summary>
    /// The answer of check.lua: <c>{CheckStale}</c>, <c>{CheckMissing, i, j, ...}</c> naming the missing counters by
    /// position, or <c>{CheckRead, t_1, h_1, t_2, h_2, ...}</c>.
    /// </summary>
    public static CounterCheckResult ReadCheck(RedisResult result, CounterCheck check)
    {
        var items = (RedisResult[])result!;
        switch ((long)items[0])
        {
            case CheckStale:
                return CounterCheckResult.StaleVersions;

            case CheckMissing:
                return CounterCheckResult.MissingCounters([.. items.Skip(1).Select(i => check.Lines[(int)i - 1].Key)]);

            case CheckRead:
                var readings = new CounterReading[check.Lines.Count];
                for (var i = 0; i < readings.Length; i++)
                {
                    readings[i] = new CounterReading((long)items[1 + (2 * i)], (long)items[2 + (2 * i)]);
                }

                return new CounterCheckResult([], readings);

            default:
                throw new InvalidOperationException($"check.lua answered the unknown code {(long)items[0]}.");
        }
    }

    /// <summary>apply.lua over one subject's counters: ARGV[1] the time to live (ms), then total, held and version of each.</summary>
    public static ScriptCall ApplyValues(IReadOnlyList<CounterValue> values, TimeSpan ttl)
    {
        var args = new RedisValue[1 + (3 * values.Count)];
        args[0] = (long)ttl.TotalMilliseconds;
        for (var i = 0; i < values.Count; i++)
        {
            args[1 + (3 * i)] = values[i].Total;
            args[2 + (3 * i)] = values[i].Held;
            args[3 + (3 * i)] = values[i].Version;
        }

        return new(Apply, [.. values.Select(v => RedisKeys.Counter(v.Key))], args);
    }

    /// <summary>create_empty.lua over one subject's counters: ARGV[1] the time to live (ms). Answers how many it created.</summary>
    public static ScriptCall CreateEmptyCounters(IReadOnlyList<CounterKey> keys, TimeSpan ttl) =>
        new(CreateEmpty, [.. keys.Select(RedisKeys.Counter)], [(long)ttl.TotalMilliseconds]);

    /// <summary>fence.lua over one subject's counters: ARGV[1] the fence version, ARGV[2] the time to live (ms).</summary>
    public static ScriptCall FenceCounters(IReadOnlyList<CounterKey> keys, long fence, TimeSpan ttl) =>
        new(Fence, [.. keys.Select(RedisKeys.Counter)], [fence, (long)ttl.TotalMilliseconds]);

    /// <summary>A cached counter as <c>HGETALL</c> returns it; a fenced counter has a version but no total.</summary>
    public static CounterSnapshot ReadCounter(HashEntry[] entries)
    {
        var fields = entries.ToDictionary(e => e.Name.ToString(), e => e.Value, StringComparer.Ordinal);
        return new CounterSnapshot(Field(TotalField), Field(HeldField), Field(VersionField));

        long? Field(string name) => fields.TryGetValue(name, out var value) ? (long)value : null;
    }

    /// <summary>put_if_newer.lua: ARGV[1] the version, ARGV[2] the time to live (ms), then field, value pairs.</summary>
    public static ScriptCall PutSubscription(Subscription subscription, TimeSpan ttl) =>
        new(PutIfNewer, [RedisKeys.Subscription(subscription.SubjectId)],
        [
            subscription.Version,
            (long)ttl.TotalMilliseconds,
            PlanField, subscription.PlanId,
            AnchorField, subscription.BillingAnchorDay,
            TimeZoneField, subscription.TimeZone,
            UpdatedField, subscription.UpdatedAt.ToUnixTimeTicks(),
        ]);

    /// <summary>put_if_newer.lua for the catalog version: no fields besides the version.</summary>
    public static ScriptCall PutCatalogVersion(string catalogId, long version, TimeSpan ttl) =>
        new(PutIfNewer, [RedisKeys.CatalogVersion(catalogId)], [version, (long)ttl.TotalMilliseconds]);

    /// <summary>get_current.lua: the record's fields and values when it is of this server's life, else nothing.</summary>
    public static ScriptCall GetSubscription(string subjectId) => new(GetCurrent, [RedisKeys.Subscription(subjectId)], []);

    /// <summary>get_current.lua for the catalog version.</summary>
    public static ScriptCall GetCatalogVersion(string catalogId) => new(GetCurrent, [RedisKeys.CatalogVersion(catalogId)], []);

    /// <summary>The subscription get_current.lua answered, or null when it has none of this server's life.</summary>
    public static Subscription? ReadSubscription(string subjectId, RedisResult result) =>
        ReadRecord(result) is { } map
            ? new Subscription(
                subjectId,
                map[PlanField].ToString(),
                (int)map[AnchorField],
                map[TimeZoneField].ToString(),
                Instant.FromUnixTimeTicks((long)map[UpdatedField]),
                (long)map[VersionField])
            : null;

    /// <summary>The catalog version get_current.lua answered, or null.</summary>
    public static long? ReadCatalogVersion(RedisResult result) =>
        ReadRecord(result) is { } map && map.TryGetValue(VersionField, out var value) ? (long)value : null;

    private static Dictionary<string, RedisValue>? ReadRecord(RedisResult result)
    {
        var items = (RedisResult[])result!;
        if (items.Length == 0)
        {
            return null;
        }

        var map = new Dictionary<string, RedisValue>(items.Length / 2, StringComparer.Ordinal);
        for (var i = 0; i + 1 < items.Length; i += 2)
        {
            map[(string)items[i]!] = (RedisValue)items[i + 1];
        }

        return map;
    }
}
