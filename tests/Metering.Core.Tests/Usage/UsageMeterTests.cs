using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Periods;
using Metering.Core.Subscriptions;
using Metering.Core.Tests.Fakes;
using Metering.Core.Usage;
using NodaTime;

namespace Metering.Core.Tests.Usage;

public sealed class UsageMeterTests
{
    private const string Interviews = "interviews_per_day";
    private const string Minutes = "minutes_per_month";
    private static readonly Dictionary<string, string> NoAttributes = [];

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
    public async Task CheckLimit_WithinTheLimit_IsAllowedAndChangesNothing()
    {
        await OnPlan("alice", "starter");

        var result = await Check("alice", Interviews, 3);
        var again = await Check("alice", Interviews, 3);

        Assert.Multiple(() =>
        {
            Assert.That(result.Allowed, Is.True);
            Assert.That(result.PlanId, Is.EqualTo("starter"));
            Assert.That(result.Limits.Single(), Has.Property(nameof(LimitStatus.Limit)).EqualTo(3).And.Property(nameof(LimitStatus.Used)).EqualTo(0));
            Assert.That(result.UpgradeOptions, Is.Empty);
            Assert.That(result.Degraded, Is.False);
            Assert.That(again.Allowed, Is.True, "a check holds nothing");
        });
    }

    [Test]
    public async Task CheckLimit_OverTheLimit_IsDeniedWithThePlansThatWouldAllowIt()
    {
        await OnPlan("bob", "starter");
        await Track("bob", "e1", Interviews, 3);

        var result = await Check("bob", Interviews, 1);

        Assert.Multiple(() =>
        {
            Assert.That(result.Allowed, Is.False);
            Assert.That(result.Limits.Single().Decision, Is.EqualTo(Decision.LimitExceeded));
            Assert.That(result.Limits.Single().Used, Is.EqualTo(3));
            Assert.That(result.UpgradeOptions.Select(o => o.PlanId), Is.EqualTo(new[] { "pro", "premium" }));
        });
    }

    [Test]
    public async Task Reserve_HoldsTheAmountUntilSettled_ThenCountsOnlyWhatWasUsed()
    {
        await OnPlan("carol", "starter");

        var hold = await Reserve("carol", Interviews, 2);
        var second = await Reserve("carol", Interviews, 2);
        await _one.Meter.TrackUsageAsync(Usage("carol", "settle", Interviews, 1) with { ReservationId = hold.ReservationId }, CancellationToken.None);
        var after = await Check("carol", Interviews, 2);

        Assert.Multiple(async () =>
        {
            Assert.That(hold.Allowed, Is.True);
            Assert.That(hold.ReservationId, Does.StartWith("rsv_"));
            Assert.That(hold.Limits.Single().Reserved, Is.EqualTo(2), "the answer counts the caller's own hold");
            Assert.That(second.Allowed, Is.False, "2 held + 2 asked > 3");
            Assert.That(second.ReservationId, Is.Null);
            Assert.That(after.Limits.Single(), Has.Property(nameof(LimitStatus.Used)).EqualTo(1).And.Property(nameof(LimitStatus.Reserved)).EqualTo(0));
            Assert.That(after.Allowed, Is.True);
            Assert.That(await _one.Meter.ReleaseReservationAsync("carol", hold.ReservationId!, CancellationToken.None), Is.False, "settled already");
        });
    }

    [Test]
    public async Task ReleaseReservation_GivesTheHoldBackOnce()
    {
        await OnPlan("dave", "starter");
        var hold = await Reserve("dave", Interviews, 3);

        var released = await _one.Meter.ReleaseReservationAsync("dave", hold.ReservationId!, CancellationToken.None);
        var again = await _one.Meter.ReleaseReservationAsync("dave", hold.ReservationId!, CancellationToken.None);
        var check = await Check("dave", Interviews, 3);

        Assert.Multiple(() =>
        {
            Assert.That(released, Is.True);
            Assert.That(again, Is.False);
            Assert.That(check.Allowed, Is.True);
            Assert.That(check.Limits.Single().Reserved, Is.Zero);
        });
    }

    [Test]
    public async Task Reserve_ExpiresOnTheClock()
    {
        await OnPlan("erin", "starter");
        await _one.Meter.CheckLimitAsync(new CheckLimitCommand("erin", [new(Interviews, 3)], true, Duration.FromMinutes(1)), CancellationToken.None);

        var whileHeld = await Check("erin", Interviews, 1);
        _world.Clock.Advance(TimeSpan.FromSeconds(61));
        await _one.Sync.ExpireHoldsAsync(CancellationToken.None);
        await _one.Sync.DrainAsync(CancellationToken.None);
        var afterExpiry = await Check("erin", Interviews, 1);

        Assert.Multiple(() =>
        {
            Assert.That(whileHeld.Allowed, Is.False);
            Assert.That(afterExpiry.Allowed, Is.True);
            Assert.That(afterExpiry.Limits.Single().Reserved, Is.Zero);
        });
    }

    [Test]
    public async Task CheckLimit_CounterStoreUnavailable_AnswersFromTheLedgerAndSaysSo()
    {
        await OnPlan("frank", "starter");
        await Track("frank", "e1", Minutes, 295);
        _world.Cache.Down = true;

        var tooMuch = await Check("frank", Minutes, 10);
        var fits = await Check("frank", Minutes, 5);

        Assert.Multiple(() =>
        {
            Assert.That(tooMuch.Degraded, Is.True);
            Assert.That(tooMuch.Allowed, Is.False);
            Assert.That(tooMuch.Limits.Single().Used, Is.EqualTo(295));
            Assert.That(fits.Degraded, Is.True);
            Assert.That(fits.Allowed, Is.True);
        });
    }

    [Test]
    public async Task Reserve_CounterStoreUnavailable_IsStillDecidedByTheLedger()
    {
        await OnPlan("gina", "starter");
        _world.Cache.Down = true;

        var holds = new List<CheckLimitResult>();
        for (var i = 0; i < 5; i++)
        {
            holds.Add(await Reserve("gina", Interviews, 1));
        }

        Assert.That(holds.Count(h => h.Allowed), Is.EqualTo(3));
    }

    [Test]
    public async Task CheckLimit_DenyPolicyAndCounterStoreUnavailable_FailsTheCall()
    {
        var world = new MeteringWorld(new PlanCatalog(
            [new UsageType("calls", "call", ResetPeriod.Day, DegradedPolicy.Deny)],
            [new Plan("free", "Free", 0, new Dictionary<string, long> { ["calls"] = 10 })]));
        using var _ = world;
        var instance = await world.NewInstance();
        world.Cache.Down = true;

        Assert.ThrowsAsync<StoreUnavailableException>(() =>
            instance.Meter.CheckLimitAsync(new CheckLimitCommand("hank", [new("calls", 1)], false, null), CancellationToken.None));
    }

    [Test]
    public async Task CheckLimit_CountersFlushed_RebuildsThemFromTheLedger()
    {
        await OnPlan("ivan", "starter");
        await Track("ivan", "e1", Minutes, 120);
        _world.Cache.Flush();

        var result = await Check("ivan", Minutes, 1);

        Assert.Multiple(() =>
        {
            Assert.That(result.Degraded, Is.False);
            Assert.That(result.Limits.Single().Used, Is.EqualTo(120));
        });
    }

    [Test]
    public async Task TrackUsage_SameKeySamePayload_IsADuplicateCountedOnce()
    {
        await OnPlan("jane", "starter");

        var first = await Track("jane", "e1", Minutes, 7);
        var retry = await Track("jane", "e1", Minutes, 7);
        var check = await Check("jane", Minutes, 1);

        Assert.Multiple(() =>
        {
            Assert.That(first.Duplicate, Is.False);
            Assert.That(retry.Duplicate, Is.True);
            Assert.That(retry.Limits.Single().Used, Is.EqualTo(7));
            Assert.That(check.Limits.Single().Used, Is.EqualTo(7));
        });
    }

    [Test]
    public async Task TrackUsage_SameKeyOtherPayload_IsRefusedAndChangesNothing()
    {
        await OnPlan("kim", "starter");
        await Track("kim", "e1", Minutes, 7);

        Assert.ThrowsAsync<IdempotencyConflictException>(() => Track("kim", "e1", Minutes, 8));
        Assert.That((await Check("kim", Minutes, 1)).Limits.Single().Used, Is.EqualTo(7));
    }

    [Test]
    public async Task TrackUsage_EnforcedOverTheLimit_IsRefusedWithUpgradeOptions()
    {
        await OnPlan("lena", "starter");
        await Track("lena", "e1", Interviews, 3);

        var error = Assert.ThrowsAsync<LimitExceededException>(() =>
            _one.Meter.TrackUsageAsync(Usage("lena", "e2", Interviews, 1) with { Enforce = true }, CancellationToken.None))!;

        Assert.Multiple(async () =>
        {
            Assert.That(error.UsageType, Is.EqualTo(Interviews));
            Assert.That(error.UpgradeOptions.Select(o => o.PlanId), Is.EqualTo(new[] { "pro", "premium" }));
            Assert.That((await Check("lena", Interviews, 1)).Limits.Single().Used, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task TrackUsage_CalendarChangedUnderIt_IsRecomputedForTheNewCalendar()
    {
        await OnPlan("mia", "starter");
        await Check("mia", Minutes, 1); // the cached subscription has the old calendar

        // The store of record changes the calendar behind the cache's back (as a change another instance committed
        // before it could tell the cache): the first write is computed for the old calendar, and refused.
        await _world.Database.SaveAsync("mia", "starter", new BillingCalendar("UTC", 20), _world.Now, CancellationToken.None);
        var callsBefore = _world.Database.RecordCalls;
        var result = await Track("mia", "e1", Minutes, 5);

        var status = result.Limits.Single();
        Assert.Multiple(() =>
        {
            Assert.That(_world.Database.RecordCalls - callsBefore, Is.EqualTo(2), "refused once, then recorded");
            Assert.That(status.Used, Is.EqualTo(5));
            Assert.That(status.Period.Start, Is.EqualTo(Instant.FromUtc(2026, 2, 20, 0, 0)), "the period of anchor day 20");
        });
    }

    [Test]
    public async Task SetSubscription_OnOneInstance_IsSeenByTheNextCallOnAnother()
    {
        var other = await _world.NewInstance();
        await OnPlan("nora", "starter");
        await Track("nora", "e1", Interviews, 3);
        Assert.That((await other.Meter.CheckLimitAsync(new CheckLimitCommand("nora", [new(Interviews, 1)], false, null), CancellationToken.None)).Allowed, Is.False);

        await OnPlan("nora", "pro");
        var result = await other.Meter.CheckLimitAsync(new CheckLimitCommand("nora", [new(Interviews, 1)], false, null), CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(result.Allowed, Is.True);
            Assert.That(result.PlanId, Is.EqualTo("pro"));
            Assert.That(result.Limits.Single().Limit, Is.EqualTo(10));
        });
    }

    [Test]
    public async Task UpsertPlan_OnOneInstance_IsSeenByTheNextCallOnAnother()
    {
        var other = await _world.NewInstance();
        await OnPlan("otto", "starter");
        await other.Meter.CheckLimitAsync(new CheckLimitCommand("otto", [new(Interviews, 1)], false, null), CancellationToken.None);

        await _one.Catalog.UpsertPlanAsync(
            new UpsertPlanCommand("starter", "Starter", 1, [new(Minutes, 300), new(Interviews, 7)]), CancellationToken.None);
        var result = await other.Meter.CheckLimitAsync(new CheckLimitCommand("otto", [new(Interviews, 1)], false, null), CancellationToken.None);

        Assert.That(result.Limits.Single().Limit, Is.EqualTo(7));
    }

    [Test]
    public async Task CheckLimit_KnownSubject_IsOneCounterReadAndNothingElse()
    {
        await OnPlan("quinn", "starter");
        await Check("quinn", Interviews, 1);
        var (cacheCalls, databaseCalls) = (_world.Cache.Calls, _world.Database.Calls);

        var result = await Check("quinn", Interviews, 1);
        var remaining = await _one.Meter.GetRemainingAsync("quinn", [Interviews], CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(result.Allowed, Is.True);
            Assert.That(remaining.PlanId, Is.EqualTo("starter"));
            Assert.That(_world.Cache.Calls - cacheCalls, Is.EqualTo(2), "one check each, confirming subscription and catalog as it reads");
            Assert.That(_world.Database.Calls - databaseCalls, Is.Zero);
        });
    }

    [Test]
    public async Task CheckLimit_KnownSubjectButTheSharedCacheLostEverything_ReloadsAndAnswersRight()
    {
        await OnPlan("ruth", "starter");
        await Track("ruth", "e1", Interviews, 3);
        await Check("ruth", Interviews, 1);
        _world.Cache.Flush();

        var result = await Check("ruth", Interviews, 1);

        Assert.Multiple(() =>
        {
            Assert.That(result.Allowed, Is.False);
            Assert.That(result.Limits.Single().Used, Is.EqualTo(3));
            Assert.That(result.PlanId, Is.EqualTo("starter"));
        });
    }

    [Test]
    public async Task CheckLimit_KnownSubjectAndTheCacheDown_DecidesWithTheSubscriptionOfRecord()
    {
        await OnPlan("sara", "starter");
        await Track("sara", "e1", Interviews, 3);
        await Check("sara", Interviews, 1);
        _world.Cache.Down = true;
        await _world.Database.SaveAsync("sara", "pro", new BillingCalendar("UTC", 1), _world.Now, CancellationToken.None);

        var result = await Check("sara", Interviews, 1);

        Assert.Multiple(() =>
        {
            Assert.That(result.Degraded, Is.True);
            Assert.That(result.PlanId, Is.EqualTo("pro"));
            Assert.That(result.Allowed, Is.True);
        });
    }

    [Test]
    public async Task CheckLimit_UsageTypeAddedOnAnotherInstance_IsKnownAtOnce()
    {
        var other = await _world.NewInstance();
        await OnPlan("tara", "starter");
        await other.Meter.CheckLimitAsync(new CheckLimitCommand("tara", [new(Interviews, 1)], false, null), CancellationToken.None);

        await _one.Catalog.UpsertUsageTypeAsync(new UpsertUsageTypeCommand("seats", "seat", ResetPeriod.Month), CancellationToken.None);
        var result = await other.Meter.CheckLimitAsync(new CheckLimitCommand("tara", [new("seats", 1)], false, null), CancellationToken.None);

        Assert.That(result.Limits.Single().Decision, Is.EqualTo(Decision.NotInPlan));
    }

    [Test]
    public async Task CheckLimit_InvalidRequest_NamesEveryField()
    {
        var error = Assert.ThrowsAsync<InvalidRequestException>(() =>
            _one.Meter.CheckLimitAsync(new CheckLimitCommand("", [new("hours", 1)], false, null), CancellationToken.None))!;

        Assert.That(error.Violations.Select(v => v.Field), Is.EqualTo(new[] { "subject_id", "usage[0].usage_type" }));
    }

    [Test]
    public async Task GetRemaining_ReportsEveryUsageTypeOfTheCatalog()
    {
        await OnPlan("pia", "pro");
        await Track("pia", "e1", Minutes, 40);

        var result = await _one.Meter.GetRemainingAsync("pia", [], CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(result.PlanId, Is.EqualTo("pro"));
            Assert.That(result.Limits, Has.Count.EqualTo(4));
            Assert.That(result.Limits.Single(l => l.UsageType == Minutes).Remaining, Is.EqualTo(960));
        });
    }

    private Task OnPlan(string subject, string plan) =>
        _one.Subscriptions.SetAsync(new SetSubscriptionCommand(subject, plan, 1, "UTC"), CancellationToken.None);

    private Task<CheckLimitResult> Check(string subject, string usageType, long amount) =>
        _one.Meter.CheckLimitAsync(new CheckLimitCommand(subject, [new(usageType, amount)], false, null), CancellationToken.None);

    private Task<CheckLimitResult> Reserve(string subject, string usageType, long amount) =>
        _one.Meter.CheckLimitAsync(new CheckLimitCommand(subject, [new(usageType, amount)], true, null), CancellationToken.None);

    private Task<TrackUsageResult> Track(string subject, string key, string usageType, long amount) =>
        _one.Meter.TrackUsageAsync(Usage(subject, key, usageType, amount), CancellationToken.None);

    private static TrackUsageCommand Usage(string subject, string key, string usageType, long amount) =>
        new(subject, key, [new(usageType, amount)], null, null, false, NoAttributes, "test");
}
