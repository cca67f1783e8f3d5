using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using NodaTime;
using StackExchange.Redis;
using Period = Metering.Core.Periods.Period;

namespace Metering.Storage.Redis.Tests;

/// <summary>The C# side of the script protocol, pinned without a server: what each call sends and how each answer reads.</summary>
public sealed class ScriptProtocolTests
{
    private static readonly Period March = new(Instant.FromUtc(2026, 3, 1, 0, 0), Instant.FromUtc(2026, 4, 1, 0, 0));
    private static readonly CounterKey Minutes = new("alice", "minutes", March);
    private static readonly CounterKey Interviews = new("alice", "interviews", March);
    private static readonly CounterCheck Check = new("alice", [new CounterLine(Minutes, 5, 300), new CounterLine(Interviews, 1, 3)]);

    [Test]
    public void CheckCounters_SendsTheCounterKeysInLineOrder_EachUnderTheSubjectsHashTag()
    {
        var call = ScriptProtocol.CheckCounters(Check);

        Assert.Multiple(() =>
        {
            Assert.That(call.Keys.Select(k => k.ToString()), Is.EqualTo(new[] { "mtr:{alice}:c:minutes:1772323200", "mtr:{alice}:c:interviews:1772323200" }));
            Assert.That(call.Args, Is.Empty);
        });
    }

    [Test]
    public void CheckCounters_WithExpectedVersions_SendsTheRecordsFirstWithTheirCount()
    {
        var check = Check with { Expected = new CacheVersions(Subscription: 7, CatalogId: "cat-1", Catalog: 12) };

        var call = ScriptProtocol.CheckCounters(check);
        var onCluster = ScriptProtocol.CheckCounters(check, withCatalog: false);

        Assert.Multiple(() =>
        {
            Assert.That(call.Keys.Select(k => k.ToString()), Is.EqualTo(new[]
            {
                "mtr:{alice}:sub", "mtr:catalog:{cat-1}:v", "mtr:{alice}:c:minutes:1772323200", "mtr:{alice}:c:interviews:1772323200",
            }));
            Assert.That(call.Args.Select(a => (long)a), Is.EqualTo(new long[] { 2, 7, 12 }));
            Assert.That(onCluster.Keys.Select(k => k.ToString()), Is.EqualTo(new[]
            {
                "mtr:{alice}:sub", "mtr:{alice}:c:minutes:1772323200", "mtr:{alice}:c:interviews:1772323200",
            }));
            Assert.That(onCluster.Args.Select(a => (long)a), Is.EqualTo(new long[] { 1, 7 }));
        });
    }

    [Test]
    public void CreateEmptyCounters_SendsTheCounterKeysUnderTheSubjectsHashTag_AndTheTimeToLive()
    {
        var call = ScriptProtocol.CreateEmptyCounters([.. Check.Lines.Select(l => l.Key)], TimeSpan.FromMinutes(15));

        Assert.Multiple(() =>
        {
            Assert.That(call.Keys.Select(k => k.ToString()), Is.EqualTo(new[] { "mtr:{alice}:c:minutes:1772323200", "mtr:{alice}:c:interviews:1772323200" }));
            Assert.That(call.Args.Select(a => (long)a), Is.EqualTo(new[] { 900_000L }));
        });
    }

    [Test]
    public void ReadCheck_Stale_AsksTheCallerToReload()
    {
        var result = ScriptProtocol.ReadCheck(Answer(ScriptProtocol.CheckStale), Check);

        Assert.Multiple(() =>
        {
            Assert.That(result.Stale, Is.True);
            Assert.That(result.Missing, Is.Empty);
            Assert.That(result.Readings, Is.Empty);
        });
    }

    [Test]
    public void IsCatalogCurrent_FollowsTheScriptsRule()
    {
        var shared = Stored(ScriptProtocol.PutCatalogVersion("cat-1", 12, TimeSpan.FromMinutes(1)));

        Assert.Multiple(() =>
        {
            Assert.That(ScriptProtocol.IsCatalogCurrent(shared, 12), Is.True, "the same version");
            Assert.That(ScriptProtocol.IsCatalogCurrent(shared, 13), Is.True, "the caller's copy is newer");
            Assert.That(ScriptProtocol.IsCatalogCurrent(shared, 11), Is.False, "the shared version is newer");
            Assert.That(ScriptProtocol.IsCatalogCurrent(RedisResult.Create(Array.Empty<RedisResult>()), 12), Is.False, "missing");
        });
    }

    [Test]
    public void ReadCheck_Read_GivesEachLinesTotalAndHeld()
    {
        var result = ScriptProtocol.ReadCheck(Answer(ScriptProtocol.CheckRead, 120, 10, 2, 1), Check);

        Assert.Multiple(() =>
        {
            Assert.That(result.Missing, Is.Empty);
            Assert.That(result.Readings, Is.EqualTo(new[] { new CounterReading(120, 10), new CounterReading(2, 1) }));
        });
    }

    [Test]
    public void ReadCheck_Missing_NamesTheCountersByTheirOneBasedPosition()
    {
        var result = ScriptProtocol.ReadCheck(Answer(ScriptProtocol.CheckMissing, 2), Check);

        Assert.Multiple(() =>
        {
            Assert.That(result.Missing, Is.EqualTo(new[] { Interviews }));
            Assert.That(result.Readings, Is.Empty);
        });
    }

    [Test]
    public void ReadCheck_UnknownCode_IsAnError() =>
        Assert.Throws<InvalidOperationException>(() => ScriptProtocol.ReadCheck(Answer(7), Check));

    [Test]
    public void ApplyValues_SendsTheTtlThenTotalHeldAndVersionOfEachCounter()
    {
        var call = ScriptProtocol.ApplyValues([new CounterValue(Minutes, 120, 10, 41), new CounterValue(Interviews, 2, 1, 42)], TimeSpan.FromMinutes(15));

        Assert.Multiple(() =>
        {
            Assert.That(call.Keys, Has.Length.EqualTo(2));
            Assert.That(call.Args.Select(a => (long)a), Is.EqualTo(new long[] { 900_000, 120, 10, 41, 2, 1, 42 }));
        });
    }

    [Test]
    public void FenceCounters_SendsTheFenceThenTheTtl()
    {
        var call = ScriptProtocol.FenceCounters([Minutes, Interviews], 77, TimeSpan.FromSeconds(5));

        Assert.Multiple(() =>
        {
            Assert.That(call.Keys, Has.Length.EqualTo(2));
            Assert.That(call.Args.Select(a => (long)a), Is.EqualTo(new long[] { 77, 5_000 }));
        });
    }

    [Test]
    public void ReadCounter_FencedCounter_HasAVersionButNoTotal()
    {
        var fenced = ScriptProtocol.ReadCounter([new HashEntry("v", 77), new HashEntry("e", "abc")]);
        var live = ScriptProtocol.ReadCounter([new HashEntry("t", 120), new HashEntry("h", 10), new HashEntry("v", 78), new HashEntry("e", "abc")]);

        Assert.Multiple(() =>
        {
            Assert.That(fenced, Is.EqualTo(new CounterSnapshot(null, null, 77)));
            Assert.That(live, Is.EqualTo(new CounterSnapshot(120, 10, 78)));
        });
    }

    [Test]
    public void Subscription_PutThenRead_RoundTrips()
    {
        var subscription = new Subscription("alice", "pro", 20, "Europe/Berlin", Instant.FromUtc(2026, 3, 14, 12, 0, 30).PlusTicks(1234), 99);

        var put = ScriptProtocol.PutSubscription(subscription, TimeSpan.FromMinutes(15));
        var read = ScriptProtocol.ReadSubscription("alice", Stored(put));

        Assert.Multiple(() =>
        {
            Assert.That(put.Keys.Single().ToString(), Is.EqualTo("mtr:{alice}:sub"));
            Assert.That((long)put.Args[0], Is.EqualTo(99));
            Assert.That((long)put.Args[1], Is.EqualTo(900_000));
            Assert.That(read, Is.EqualTo(subscription));
        });
    }

    [Test]
    public void CatalogVersion_PutThenRead_RoundTrips()
    {
        var put = ScriptProtocol.PutCatalogVersion("cat-1", 12, TimeSpan.FromMinutes(1));

        Assert.Multiple(() =>
        {
            Assert.That(put.Keys.Single().ToString(), Is.EqualTo("mtr:catalog:{cat-1}:v"));
            Assert.That(put.Args.Select(a => (long)a), Is.EqualTo(new long[] { 12, 60_000 }));
            Assert.That(ScriptProtocol.ReadCatalogVersion(Stored(put)), Is.EqualTo(12));
        });
    }

    [Test]
    public void GetCurrent_RecordOfAnotherLifeOrMissing_ReadsAsNothing()
    {
        var nothing = RedisResult.Create(Array.Empty<RedisResult>());

        Assert.Multiple(() =>
        {
            Assert.That(ScriptProtocol.ReadSubscription("alice", nothing), Is.Null);
            Assert.That(ScriptProtocol.ReadCatalogVersion(nothing), Is.Null);
        });
    }

    private static RedisResult Answer(params long[] items) => RedisResult.Create([.. items.Select(i => RedisResult.Create(i))]);

    /// <summary>What get_current.lua answers after put_if_newer.lua stored <paramref name="put"/>: v, e, then the field pairs.</summary>
    private static RedisResult Stored(ScriptCall put)
    {
        var hash = new List<RedisValue> { "v", put.Args[0], "e", "run-1" };
        hash.AddRange(put.Args.Skip(2));
        return RedisResult.Create([.. hash.Select(v => RedisResult.Create(v))]);
    }
}
