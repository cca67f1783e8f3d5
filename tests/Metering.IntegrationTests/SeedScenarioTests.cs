using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>The product's seed scenarios, each as written.</summary>
public sealed class SeedScenarioTests : ServiceTest
{
    [Test]
    public async Task Scenario1_StarterWith295MinutesUsed_AsksFor10_IsDeniedWith5Remaining()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 295);

        var response = await CheckAsync(subject, Minutes, 10);

        var limit = response.Limits.Single();
        Assert.Multiple(() =>
        {
            Assert.That(response.Allowed, Is.False);
            Assert.That(limit.Decision, Is.EqualTo(Decision.LimitExceeded));
            Assert.That(limit.Remaining, Is.EqualTo(5));
            Assert.That(limit.Used, Is.EqualTo(295));
            Assert.That(limit.Limit, Is.EqualTo(300));
        });
    }

    [Test]
    public async Task Scenario2_StarterWith3InterviewsToday_IsDenied_ThenAllowedTheNextLocalDay()
    {
        // 2026-11-18 12:00 UTC is 07:00 in New York (EST, UTC-5); the local day ends at 2026-11-19 05:00 UTC.
        await using var host = await PrivateHostAsync();
        var subject = NewSubject();
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter", TimeZone = "America/New_York" });
        var interview = new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Interviews, 1) } };
        for (var i = 0; i < 3; i++)
        {
            await host.Metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = subject, IdempotencyKey = $"i{i}", Usage = { Usage(Interviews, 1) } });
        }

        var today = await host.Metering.CheckLimitAsync(interview);
        Assert.Multiple(() =>
        {
            Assert.That(today.Allowed, Is.False);
            Assert.That(today.Limits[0].Decision, Is.EqualTo(Decision.LimitExceeded));
            Assert.That(today.Limits[0].PeriodStart.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 11, 18, 5, 0, 0, TimeSpan.Zero)));
            Assert.That(today.Limits[0].ResetsAt.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 11, 19, 5, 0, 0, TimeSpan.Zero)));
        });

        host.Clock.SetUtcNow(new DateTimeOffset(2026, 11, 19, 5, 0, 0, TimeSpan.Zero));
        var tomorrow = await host.Metering.CheckLimitAsync(interview);
        Assert.Multiple(() =>
        {
            Assert.That(tomorrow.Allowed, Is.True);
            Assert.That(tomorrow.Limits[0].Used, Is.Zero);
            Assert.That(tomorrow.Limits[0].Remaining, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task Scenario3_PremiumUser_Doing105InterviewsInADay_IsAlwaysAllowedAndUnlimited()
    {
        var subject = await SubscribeAsync("premium");
        for (var i = 0; i < 105; i++)
        {
            var check = await CheckAsync(subject, Interviews, 1);
            Assert.That(check.Allowed, Is.True, $"interview {i + 1}");
            await TrackAsync(subject, Interviews, 1);
        }

        var status = await RemainingAsync(subject, Interviews);
        Assert.Multiple(() =>
        {
            Assert.That(status.Used, Is.EqualTo(105));
            Assert.That(status.Limit, Is.EqualTo(-1));
            Assert.That(status.Remaining, Is.EqualTo(-1));
            Assert.That(status.Decision, Is.EqualTo(Decision.Allowed));
        });
    }

    [Test]
    public async Task Scenario4_StarterAsksForDetailedAnalysis_IsNotInPlan_UntilUpgradedToPro()
    {
        var subject = await SubscribeAsync("starter");

        var check = await CheckAsync(subject, DetailedAnalysis, 1);
        Assert.Multiple(() =>
        {
            Assert.That(check.Allowed, Is.False);
            Assert.That(check.Limits[0].Decision, Is.EqualTo(Decision.NotInPlan));
            Assert.That(check.Limits[0].Limit, Is.Zero);
        });

        FailsWith(StatusCode.PermissionDenied, () => Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "analysis-1",
            Usage = { Usage(DetailedAnalysis, 1) },
            Enforce = true,
        }).ResponseAsync);
        Assert.That((await RemainingAsync(subject, DetailedAnalysis)).Used, Is.Zero, "nothing recorded");

        await SubscribeAsync("pro", subject);
        var upgraded = await CheckAsync(subject, DetailedAnalysis, 1);
        Assert.Multiple(() =>
        {
            Assert.That(upgraded.Allowed, Is.True);
            Assert.That(upgraded.PlanId, Is.EqualTo("pro"));
            Assert.That(upgraded.Limits[0].Limit, Is.EqualTo(20));
        });
    }

    [Test]
    public async Task Scenario5_InterviewFlow_ReserveThenSettleWithActual23Minutes_ShowsUsed23Reserved0()
    {
        var subject = await SubscribeAsync("starter");
        var check = await Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 10), Usage(Interviews, 1) },
            Reserve = true,
        });
        Assert.That(check.Allowed, Is.True);
        Assert.That(check.ReservationId, Is.Not.Empty);

        await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "session-1",
            ReservationId = check.ReservationId,
            Usage = { Usage(Minutes, 23), Usage(Interviews, 1) },
        });

        var remaining = await Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes, Interviews } });
        Assert.Multiple(() =>
        {
            Assert.That(remaining.Limits[0].UsageType, Is.EqualTo(Minutes));
            Assert.That(remaining.Limits[0].Used, Is.EqualTo(23));
            Assert.That(remaining.Limits[0].Reserved, Is.Zero);
            Assert.That(remaining.Limits[0].Remaining, Is.EqualTo(277));
            Assert.That(remaining.Limits[1].Used, Is.EqualTo(1));
            Assert.That(remaining.Limits[1].Reserved, Is.Zero);
        });
    }

    [Test]
    public async Task Scenario6_UsageOccurredInThePreviousMonthlyPeriod_DoesNotCountAgainstTheCurrentOne()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 250, occurredAt: new DateTimeOffset(2026, 10, 30, 9, 0, 0, TimeSpan.Zero));
        await TrackAsync(subject, Minutes, 40);

        var status = await RemainingAsync(subject, Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(status.Used, Is.EqualTo(40));
            Assert.That(status.Remaining, Is.EqualTo(260));
            Assert.That(status.PeriodStart.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero)));
            Assert.That(status.ResetsAt.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero)));
        });
    }
}
