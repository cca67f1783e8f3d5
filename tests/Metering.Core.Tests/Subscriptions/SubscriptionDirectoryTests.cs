using Metering.Core.Errors;
using Metering.Core.Subscriptions;
using Metering.Core.Tests.Fakes;
using Metering.Core.Usage;

namespace Metering.Core.Tests.Subscriptions;

public sealed class SubscriptionDirectoryTests
{
    private MeteringWorld _world = null!;
    private MeteringInstance _one = null!;

    [SetUp]
    public async Task SetUpAsync()
    {
        _world = new MeteringWorld();
        _one = await _world.NewInstance();
    }

    [TearDown]
    public void TearDown() => _world.Dispose();

    [Test]
    public async Task ResolveAsync_NewSubject_IsEnrolledOnTheDefaultPlanAndCached()
    {
        var subject = await _one.Subscriptions.ResolveAsync("new", CancellationToken.None);

        Assert.Multiple(async () =>
        {
            Assert.That(subject.Plan.Id, Is.EqualTo("free"));
            Assert.That(subject.Subscription.Calendar, Is.EqualTo(new BillingCalendar("UTC", 1)));
            Assert.That(await _world.Cache.GetAsync("new", CancellationToken.None), Is.EqualTo(subject.Subscription));
        });
    }

    [Test]
    public async Task ResolveAsync_CacheDown_ReadsTheStoreOfRecord()
    {
        await _one.Subscriptions.SetAsync(new SetSubscriptionCommand("sam", "pro", 1, "UTC"), CancellationToken.None);
        _world.Cache.Down = true;

        var subject = await _one.Subscriptions.ResolveAsync("sam", CancellationToken.None);

        Assert.That(subject.Plan.Id, Is.EqualTo("pro"));
    }

    [Test]
    public async Task SetAsync_FencesTheSubjectsCountersSoTheyAreRebuilt()
    {
        await _one.Meter.TrackUsageAsync(new TrackUsageCommand("tom", "e1", [new("minutes_per_month", 5)], null, null, false, new Dictionary<string, string>(), "test"), CancellationToken.None);
        var key = (await _one.Meter.GetRemainingAsync("tom", ["minutes_per_month"], CancellationToken.None)).Limits.Single().Period;

        await _one.Subscriptions.SetAsync(new SetSubscriptionCommand("tom", "pro", 1, "UTC"), CancellationToken.None);
        var counter = await _world.Cache.InspectAsync(new CounterKey("tom", "minutes_per_month", key), CancellationToken.None);
        var after = await _one.Meter.GetRemainingAsync("tom", ["minutes_per_month"], CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(counter.Total, Is.Null, "fenced: emptied, keeping a version");
            Assert.That(counter.Version, Is.Not.Null);
            Assert.That(after.Limits.Single().Used, Is.EqualTo(5), "rebuilt from the ledger");
            Assert.That(after.PlanId, Is.EqualTo("pro"));
        });
    }

    [Test]
    public async Task SetAsync_CacheDown_FailsAfterTheCommit_AndTheOutboxBringsTheCacheUpToDate()
    {
        await _one.Subscriptions.ResolveAsync("uma", CancellationToken.None);
        _world.Cache.Down = true;

        Assert.ThrowsAsync<StoreUnavailableException>(() =>
            _one.Subscriptions.SetAsync(new SetSubscriptionCommand("uma", "pro", 1, "UTC"), CancellationToken.None));
        _world.Cache.Down = false;
        await _one.Sync.DrainAsync(CancellationToken.None);

        Assert.That((await _world.Cache.GetAsync("uma", CancellationToken.None))?.PlanId, Is.EqualTo("pro"));
    }

    [Test]
    public void SetAsync_UnknownPlanAndBadAnchorDay_NamesBothFields()
    {
        var error = Assert.ThrowsAsync<InvalidRequestException>(() =>
            _one.Subscriptions.SetAsync(new SetSubscriptionCommand("vic", "gold", 40, "UTC"), CancellationToken.None))!;

        Assert.That(error.Violations.Select(v => v.Field), Is.EqualTo(new[] { "plan_id", "billing_anchor_day" }));
    }
}
