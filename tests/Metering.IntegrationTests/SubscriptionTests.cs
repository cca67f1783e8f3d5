using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

public sealed class SubscriptionTests : ServiceTest
{
    [Test]
    public async Task GetSubscription_UnknownSubject_EnrollsOnFreeWithDefaults()
    {
        var subject = NewSubject();

        var subscription = (await Admin.GetSubscriptionAsync(new GetSubscriptionRequest { SubjectId = subject })).Subscription;

        Assert.Multiple(() =>
        {
            Assert.That(subscription.SubjectId, Is.EqualTo(subject));
            Assert.That(subscription.PlanId, Is.EqualTo("free"));
            Assert.That(subscription.BillingAnchorDay, Is.EqualTo(1));
            Assert.That(subscription.TimeZone, Is.EqualTo("UTC"));
            Assert.That(subscription.UpdatedAt.ToDateTimeOffset(), Is.EqualTo(Start));
        });
    }

    [Test]
    public async Task ListPlans_ReturnsTheSeededPlansInRankOrder()
    {
        var plans = (await Admin.ListPlansAsync(new ListPlansRequest())).Plans;

        string Limits(Plan plan) => string.Join(" / ", new[] { Minutes, Interviews, DetailedAnalysis, VideoReview }
            .Select(t => plan.Limits.Single(l => l.UsageType == t).Limit));
        Assert.Multiple(() =>
        {
            Assert.That(plans.Select(p => p.PlanId), Is.EqualTo(new[] { "free", "starter", "pro", "premium" }));
            Assert.That(plans.Select(Limits), Is.EqualTo(new[] { "30 / 1 / 0 / 0", "300 / 3 / 0 / 0", "1000 / 10 / 20 / 10", "-1 / -1 / -1 / -1" }));
        });
    }

    [Test]
    public async Task SetSubscription_Downgrade_KeepsUsageAndNeverShowsNegativeRemaining()
    {
        var subject = await SubscribeAsync("pro");
        await TrackAsync(subject, Minutes, 500);

        await SubscribeAsync("starter", subject);
        var status = await RemainingAsync(subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(status.Limit, Is.EqualTo(300));
            Assert.That(status.Used, Is.EqualTo(500));
            Assert.That(status.Remaining, Is.Zero);
            Assert.That(status.Decision, Is.EqualTo(Decision.LimitExceeded));
        });
    }

    [Test]
    public async Task SetSubscription_ImmediatelyFollowedByCalls_AlwaysDecidesWithTheNewPlan()
    {
        // Many subjects upgrade at once while their caches are warm; every call after the upgrade sees it.
        var subjects = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => SubscribeAsync("free")));
        await Task.WhenAll(subjects.Select(s => CheckAsync(s, Minutes, 1)));

        var plansSeen = await Task.WhenAll(subjects.Select(async subject =>
        {
            await SubscribeAsync("premium", subject);
            return (await CheckAsync(subject, Minutes, 5000)).PlanId;
        }));

        Assert.That(plansSeen, Is.All.EqualTo("premium"));
    }

    [Test]
    public async Task SetSubscription_AnchorDay_MovesTheMonthlyPeriod()
    {
        // Clock: 2026-11-18 12:00 UTC. Anchor 20 in Tokyo (UTC+9): the period began on 2026-10-20 00:00 JST.
        var subject = await SubscribeAsync("pro", anchorDay: 20, timeZone: "Asia/Tokyo");

        var status = await RemainingAsync(subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(status.PeriodStart.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 10, 19, 15, 0, 0, TimeSpan.Zero)));
            Assert.That(status.ResetsAt.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 11, 19, 15, 0, 0, TimeSpan.Zero)));
        });
    }

    [Test]
    public async Task SetSubscription_CalendarChange_RecountsUsageInTheNewPeriod()
    {
        var subject = await SubscribeAsync("pro");
        await TrackAsync(subject, Minutes, 100, occurredAt: new DateTimeOffset(2026, 11, 3, 0, 0, 0, TimeSpan.Zero));
        await TrackAsync(subject, Minutes, 10, occurredAt: new DateTimeOffset(2026, 11, 16, 0, 0, 0, TimeSpan.Zero));
        Assert.That((await RemainingAsync(subject, Minutes)).Used, Is.EqualTo(110));

        // Anchor 15: the current period starts on Nov 15, so only the 10 minutes of Nov 16 are in it.
        await SubscribeAsync("pro", subject, anchorDay: 15);
        var status = await RemainingAsync(subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(status.Used, Is.EqualTo(10));
            Assert.That(status.PeriodStart.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 11, 15, 0, 0, 0, TimeSpan.Zero)));
        });
    }

    [Test]
    public async Task SetSubscription_CalendarChangesWhileUsageIsTrackedAndRead_LoseNoEvent()
    {
        var subject = await SubscribeAsync("pro");
        const int Events = 150;
        using var stop = new CancellationTokenSource();

        // Readers rebuild counters under whatever calendar is current while events and calendar changes race.
        var reader = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await AsACallerWouldAsync(() => RemainingAsync(subject, Minutes));
            }
        });
        var changes = Task.Run(async () =>
        {
            for (var round = 0; round < 12; round++)
            {
                var (anchor, zone) = (round % 3) switch { 0 => (10, "Europe/Berlin"), 1 => (17, "America/New_York"), _ => (1, "UTC") };
                await AsACallerWouldAsync(() => SubscribeAsync("pro", subject, anchorDay: anchor, timeZone: zone));
            }
        });
        await Task.WhenAll(Enumerable.Range(0, Events).Select(i => AsACallerWouldAsync(() => TrackAsync(subject, Minutes, 1, key: $"e{i}"))));
        await changes;
        await stop.CancelAsync();
        await reader;

        // The last calendar is anchor 1 in UTC: the period is November, and every event happened at the clock's instant, Nov 18.
        var status = await RemainingAsync(subject, Minutes);
        Assert.That(status.Used, Is.EqualTo(Events));
    }

    /// <summary>
    /// Retries what the contract says to retry (UNAVAILABLE, ABORTED), with the same request, as a caller does: under
    /// this much contention a call may be told to retry, but every event must count exactly once in the end.
    /// </summary>
    private static async Task<T> AsACallerWouldAsync<T>(Func<Task<T>> call)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await call();
            }
            catch (Grpc.Core.RpcException e) when (attempt < 20 && e.StatusCode is Grpc.Core.StatusCode.Unavailable or Grpc.Core.StatusCode.Aborted)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(50 * attempt));
            }
        }
    }
}
