using Google.Protobuf.WellKnownTypes;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

public sealed class CheckLimitTests : ServiceTest
{
    [Test]
    public async Task CheckLimit_50ParallelReservesWith3Left_GrantsExactly3()
    {
        var subject = await SubscribeAsync("starter");

        var responses = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => CheckAsync(subject, Interviews, 1, reserve: true)));

        var granted = responses.Where(r => r.Allowed).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(granted, Has.Count.EqualTo(3));
            Assert.That(granted.Select(r => r.ReservationId).Distinct().Count(), Is.EqualTo(3));
            Assert.That(responses.Where(r => !r.Allowed).Select(r => r.ReservationId), Is.All.Empty);
        });
        var status = await RemainingAsync(subject, Interviews);
        Assert.Multiple(() =>
        {
            Assert.That(status.Reserved, Is.EqualTo(3));
            Assert.That(status.Remaining, Is.Zero);
        });
    }

    [Test]
    public async Task CheckLimit_ReserveWhenOneAmountDoesNotFit_HoldsNothing()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Interviews, 3);

        var response = await Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 10), Usage(Interviews, 1) },
            Reserve = true,
        });

        Assert.Multiple(() =>
        {
            Assert.That(response.Allowed, Is.False);
            Assert.That(response.ReservationId, Is.Empty);
            Assert.That(response.Limits[0].Decision, Is.EqualTo(Decision.Allowed));
            Assert.That(response.Limits[1].Decision, Is.EqualTo(Decision.LimitExceeded));
        });
        Assert.That((await RemainingAsync(subject, Minutes)).Reserved, Is.Zero);
    }

    [Test]
    public async Task CheckLimit_WithoutReserve_HoldsNothing()
    {
        var subject = await SubscribeAsync("starter");

        var response = await CheckAsync(subject, Minutes, 100);

        Assert.Multiple(() =>
        {
            Assert.That(response.Allowed, Is.True);
            Assert.That(response.ReservationId, Is.Empty);
            Assert.That(response.Limits[0].Reserved, Is.Zero);
            Assert.That(response.Limits[0].Remaining, Is.EqualTo(300));
        });
    }

    [Test]
    public async Task CheckLimit_HoldCountsUntilItsTtlOnTheLedgersClock_ThenStopsCounting()
    {
        var subject = await SubscribeAsync("starter");
        var sent = DateTimeOffset.UtcNow;
        var check = await Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 200) },
            Reserve = true,
            ReservationTtl = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
        });
        var expiresAt = check.ReservationExpiresAt.ToDateTimeOffset();

        var during = await CheckAsync(subject, Minutes, 101, reserve: true);
        await Task.Delay(expiresAt - DateTimeOffset.UtcNow + TimeSpan.FromMilliseconds(50));
        var after = await CheckAsync(subject, Minutes, 101, reserve: true);

        Assert.Multiple(() =>
        {
            // The ledger's clock (PostgreSQL, on this machine) decides, not the instance's (the fixture's fake clock).
            Assert.That(expiresAt, Is.EqualTo(sent.AddSeconds(1)).Within(TimeSpan.FromSeconds(1)));
            Assert.That(during.Allowed, Is.False, "a reserve while the hold lives is refused");
            Assert.That(during.Limits[0].Reserved, Is.EqualTo(200));
            Assert.That(during.Limits[0].Remaining, Is.EqualTo(100));
            Assert.That(after.Allowed, Is.True, "the hold stopped counting at its expiry");
            Assert.That(after.Limits[0].Reserved, Is.EqualTo(101), "only the new hold is held");
        });
    }

    [Test]
    public async Task CheckLimit_Reserve_ReportsTheStateWithItsOwnHold()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 100);

        var response = await CheckAsync(subject, Minutes, 150, reserve: true);

        Assert.That(response.Limits.Single(), Is.EqualTo(new LimitStatus
        {
            UsageType = Minutes,
            Limit = 300,
            Used = 100,
            Reserved = 150,
            Remaining = 50,
            Decision = Decision.Allowed,
            PercentUsed = 100.0 * 250 / 300,
            Level = UsageLevel.Warning,
            PeriodStart = response.Limits[0].PeriodStart,
            ResetsAt = response.Limits[0].ResetsAt,
        }));
    }

    [Test]
    public async Task CheckLimit_DefaultHoldTtl_IsTwoHours()
    {
        var subject = await SubscribeAsync("starter");

        var sent = DateTimeOffset.UtcNow;
        var check = await CheckAsync(subject, Minutes, 5, reserve: true);

        Assert.That(check.ReservationExpiresAt.ToDateTimeOffset(), Is.EqualTo(sent.AddHours(2)).Within(TimeSpan.FromSeconds(2)));
    }

    [Test]
    public async Task ReleaseReservation_GivesTheHoldBackOnce()
    {
        var subject = await SubscribeAsync("starter");
        var check = await CheckAsync(subject, Interviews, 3, reserve: true);
        Assert.That((await RemainingAsync(subject, Interviews)).Remaining, Is.Zero);

        var first = await Metering.ReleaseReservationAsync(new ReleaseReservationRequest { SubjectId = subject, ReservationId = check.ReservationId });
        var second = await Metering.ReleaseReservationAsync(new ReleaseReservationRequest { SubjectId = subject, ReservationId = check.ReservationId });
        var unknown = await Metering.ReleaseReservationAsync(new ReleaseReservationRequest { SubjectId = subject, ReservationId = "rsv_unknown" });

        var after = await RemainingAsync(subject, Interviews);
        Assert.Multiple(() =>
        {
            Assert.That(first.Released, Is.True);
            Assert.That(second.Released, Is.False);
            Assert.That(unknown.Released, Is.False);
            Assert.That(after.Remaining, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task CheckLimit_UnknownSubject_IsEnrolledOnTheDefaultFreePlan()
    {
        var subject = NewSubject();

        var response = await CheckAsync(subject, Minutes, 31);

        Assert.Multiple(() =>
        {
            Assert.That(response.PlanId, Is.EqualTo("free"));
            Assert.That(response.Allowed, Is.False);
            Assert.That(response.Limits[0].Limit, Is.EqualTo(30));
        });
    }
}
