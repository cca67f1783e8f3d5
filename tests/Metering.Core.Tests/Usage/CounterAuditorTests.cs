using Metering.Core.Tests.Fakes;
using Metering.Core.Usage;

namespace Metering.Core.Tests.Usage;

public sealed class CounterAuditorTests
{
    private const string Minutes = "minutes_per_month";

    private MeteringWorld _world = null!;
    private MeteringInstance _one = null!;
    private CounterKey _key;

    [SetUp]
    public async Task SetUpAsync()
    {
        _world = new MeteringWorld();
        _one = await _world.NewInstance();
        await _one.Subscriptions.SetAsync(new SetSubscriptionCommand("zoe", "starter", 1, "UTC"), CancellationToken.None);
        await _one.Meter.TrackUsageAsync(new TrackUsageCommand("zoe", "e1", [new(Minutes, 42)], null, null, false, new Dictionary<string, string>(), "test"), CancellationToken.None);
        var period = (await _one.Meter.GetRemainingAsync("zoe", [Minutes], CancellationToken.None)).Limits.Single().Period;
        _key = new CounterKey("zoe", Minutes, period);
    }

    [TearDown]
    public void TearDown() => _world.Dispose();

    [Test]
    public async Task ExplainAsync_InSync_ShowsLedgerAndCounterAgreeing()
    {
        var explanation = await _one.Auditor.ExplainAsync("zoe", Minutes, CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(explanation.CacheState, Is.EqualTo(CacheState.InSync));
            Assert.That(explanation.Ledger.EventTotal, Is.EqualTo(42));
            Assert.That(explanation.Counter.Total, Is.EqualTo(42));
            Assert.That(explanation.Plan.Id, Is.EqualTo("starter"));
        });
    }

    [Test]
    public async Task ReconcileAsync_DriftInTheCounterAndTheRow_FindsAndFixesBoth()
    {
        _world.Cache.Overwrite(_key, 7, version: 1);
        _world.Database.CorruptRow(_key, 9);

        var explained = await _one.Auditor.ExplainAsync("zoe", Minutes, CancellationToken.None);
        var result = await _one.Auditor.ReconcileAsync(null, CancellationToken.None);
        var again = await _one.Auditor.ReconcileAsync("zoe", CancellationToken.None);
        var check = await _one.Meter.CheckLimitAsync(new CheckLimitCommand("zoe", [new(Minutes, 1)], false, null), CancellationToken.None);

        var repair = result.Repairs.Single();
        Assert.Multiple(() =>
        {
            Assert.That(explained.CacheState, Is.EqualTo(CacheState.Mismatch));
            Assert.That(result.SubjectsChecked, Is.EqualTo(1));
            Assert.That(result.CountersChecked, Is.EqualTo(4));
            Assert.That(repair.Before, Is.EqualTo(CacheState.Mismatch));
            Assert.That(repair.CounterTotalBefore, Is.EqualTo(7));
            Assert.That(repair.LedgerTotal, Is.EqualTo(42));
            Assert.That(repair.LedgerRowFixed, Is.True);
            Assert.That(repair.CounterTotalAfter, Is.EqualTo(42));
            Assert.That(repair.Evicted, Is.False);
            Assert.That(again.Repairs, Is.Empty, "nothing left to fix");
            Assert.That(check.Limits.Single().Used, Is.EqualTo(42));
        });
    }

    [Test]
    public async Task ReconcileAsync_CounterAheadOfTheLedger_IsEvictedAndRebuilt()
    {
        _world.Cache.Overwrite(_key, 1000, version: long.MaxValue);

        var repair = (await _one.Auditor.ReconcileAsync("zoe", CancellationToken.None)).Repairs.Single();
        var check = await _one.Meter.CheckLimitAsync(new CheckLimitCommand("zoe", [new(Minutes, 1)], false, null), CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(repair.Evicted, Is.True);
            Assert.That(repair.CounterTotalAfter, Is.EqualTo(42));
            Assert.That(check.Limits.Single().Used, Is.EqualTo(42));
        });
    }
}
