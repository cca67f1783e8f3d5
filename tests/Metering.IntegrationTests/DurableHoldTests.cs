using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using StackExchange.Redis;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// Holds are ledger records, decided under the subject's lock: they survive whatever happens to Redis, keep their
/// period, and every instance (whatever its clock) sees them.
/// </summary>
public sealed class DurableHoldTests : ServiceTest
{
    [Test]
    public async Task Reserve_AfterRedisLostItsData_StillCountsEveryAcknowledgedHold()
    {
        var subject = await SubscribeAsync("starter");
        for (var i = 0; i < 3; i++)
        {
            Assert.That((await CheckAsync(subject, Interviews, 1, reserve: true)).Allowed, Is.True);
        }

        await Host.ForgetInRedisAsync(subject);
        var fourth = await CheckAsync(subject, Interviews, 1, reserve: true);
        var plain = await CheckAsync(subject, Interviews, 1);

        Assert.Multiple(() =>
        {
            Assert.That(fourth.Allowed, Is.False, "the three holds are in the ledger, not only in the flushed cache");
            Assert.That(fourth.Limits[0].Reserved, Is.EqualTo(3));
            Assert.That(plain.Allowed, Is.False, "the rebuilt counter shows the holds too");
            Assert.That(plain.Limits[0].Reserved, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task Reserve_RetriedWithTheSameRequestId_ReturnsTheSameHoldAndHoldsOnce()
    {
        var subject = await SubscribeAsync("starter");
        var request = new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Minutes, 100) }, Reserve = true, RequestId = "session-1" };

        var answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Metering.CheckLimitAsync(request).ResponseAsync));
        var other = FailsWith(StatusCode.AlreadyExists, () => Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 50) },
            Reserve = true,
            RequestId = "session-1",
        }).ResponseAsync);

        Assert.Multiple(async () =>
        {
            Assert.That(answers.Select(a => a.ReservationId).Distinct().Count(), Is.EqualTo(1), "one reservation for every retry");
            Assert.That(answers.All(a => a.Allowed && a.Limits[0].Reserved == 100), Is.True);
            Assert.That((await RemainingAsync(subject, Minutes)).Reserved, Is.EqualTo(100), "held once");
            Assert.That(other.Status.Detail, Does.Contain("session-1"));
        });
    }

    [Test]
    public async Task Reserve_BeyondTheLiveHoldsBound_IsResourceExhaustedUntilOneEnds()
    {
        await using var host = await MeteringHost.StartAsync(Start, settings: new Dictionary<string, string?> { ["Metering:MaxLiveHoldsPerSubject"] = "3" });
        var subject = NewSubject();
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "premium" });
        var reserve = new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Minutes, 10) }, Reserve = true };
        var held = new List<CheckLimitResponse>();
        for (var i = 0; i < 3; i++)
        {
            held.Add(await host.Metering.CheckLimitAsync(reserve));
        }

        var error = Assert.ThrowsAsync<RpcException>(() => host.Metering.CheckLimitAsync(reserve).ResponseAsync)!;
        await host.Metering.ReleaseReservationAsync(new ReleaseReservationRequest { SubjectId = subject, ReservationId = held[0].ReservationId });
        var afterRelease = await host.Metering.CheckLimitAsync(reserve);

        Assert.Multiple(() =>
        {
            Assert.That(error.StatusCode, Is.EqualTo(StatusCode.ResourceExhausted));
            Assert.That(error.GetRpcStatus()!.GetDetail<Google.Rpc.ErrorInfo>().Reason, Is.EqualTo("TOO_MANY_HOLDS"));
            Assert.That(afterRelease.Allowed, Is.True);
        });
    }

    [Test]
    public async Task Hold_PlacedBeforeACalendarChange_KeepsCountingUnderTheNewCalendar()
    {
        var subject = await SubscribeAsync("starter");
        Assert.That((await CheckAsync(subject, Interviews, 2, reserve: true)).Allowed, Is.True);

        await SubscribeAsync("starter", subject, timeZone: "Asia/Tokyo");
        var again = await CheckAsync(subject, Interviews, 2, reserve: true);
        var one = await CheckAsync(subject, Interviews, 1, reserve: true);

        Assert.Multiple(() =>
        {
            Assert.That(again.Allowed, Is.False, "2 held + 2 > 3 a day, whatever the day's bounds now are");
            Assert.That(again.Limits[0].Reserved, Is.EqualTo(2));
            Assert.That(one.Allowed, Is.True);
        });
    }

    [Test]
    public async Task Settle_WithoutOccurredAt_CountsInThePeriodTheHoldWasPlacedIn()
    {
        // 23:58 UTC: three interviews held today; 00:01: three more held tomorrow; then all six settled.
        var evening = new DateTimeOffset(2026, 11, 18, 23, 58, 0, TimeSpan.Zero);
        await using var host = await MeteringHost.StartAsync(evening);
        var subject = NewSubject();
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        var reserve = new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Interviews, 1) }, Reserve = true };
        var holds = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            holds.Add((await host.Metering.CheckLimitAsync(reserve)).ReservationId);
        }

        host.Clock.Advance(TimeSpan.FromMinutes(3));
        for (var i = 0; i < 3; i++)
        {
            var next = await host.Metering.CheckLimitAsync(reserve);
            Assert.That(next.Allowed, Is.True, "a new day");
            holds.Add(next.ReservationId);
        }

        foreach (var hold in holds)
        {
            await host.Metering.TrackUsageAsync(new TrackUsageRequest
            {
                SubjectId = subject,
                IdempotencyKey = hold,
                ReservationId = hold,
                Usage = { Usage(Interviews, 1) },
            });
        }

        var today = (await host.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Interviews } })).Limits[0];
        Assert.Multiple(async () =>
        {
            Assert.That(today.Used, Is.EqualTo(3), "the day's own three, not six on a three-a-day plan");
            Assert.That(today.Reserved, Is.Zero);
            Assert.That(await LedgerProbe.EventSumAsync(host, subject, Interviews), Is.EqualTo(6), "all six recorded");
        });
    }

    [Test]
    public async Task Settle_NotFinal_KeepsTheRestOfTheHold_ThenTheFinalSettleEndsIt()
    {
        var subject = await SubscribeAsync("starter");
        var hold = await Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 30), Usage(Interviews, 1) },
            Reserve = true,
        });

        await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "part-1",
            ReservationId = hold.ReservationId,
            Usage = { Usage(Minutes, 10) },
            Final = false,
        });
        var midway = await Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes, Interviews } });
        await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "part-2",
            ReservationId = hold.ReservationId,
            Usage = { Usage(Minutes, 12), Usage(Interviews, 1) },
        });
        var end = await Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes, Interviews } });

        Assert.Multiple(() =>
        {
            Assert.That(midway.Limits[0].Used, Is.EqualTo(10));
            Assert.That(midway.Limits[0].Reserved, Is.EqualTo(20), "the rest of the minutes stays held");
            Assert.That(midway.Limits[1].Reserved, Is.EqualTo(1), "and the interview slot");
            Assert.That(end.Limits[0].Used, Is.EqualTo(22));
            Assert.That(end.Limits[0].Reserved, Is.Zero);
            Assert.That(end.Limits[1].Used, Is.EqualTo(1));
            Assert.That(end.Limits[1].Reserved, Is.Zero);
        });
    }

    [Test]
    public async Task Hold_ExpiresOnTheLedgersClock_NotOnAFastInstanceClock()
    {
        // An instance whose clock runs three hours ahead must not treat a two-hour hold placed elsewhere as expired.
        await using var fast = await MeteringHost.StartAsync(Start.AddHours(3));
        var subject = await SubscribeAsync("starter");
        Assert.That((await CheckAsync(subject, Minutes, 250, reserve: true)).Allowed, Is.True);

        var fromFastInstance = await fast.Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 100) },
            Reserve = true,
        });

        Assert.That(fromFastInstance.Allowed, Is.False);
        Assert.That(fromFastInstance.Limits[0].Reserved, Is.EqualTo(250));
    }

    [Test]
    public async Task ParallelReserves_GrantExactlyWhatFits()
    {
        var subject = await SubscribeAsync("starter");
        var answers = await Task.WhenAll(Enumerable.Range(0, 30).Select(_ => CheckAsync(subject, Interviews, 1, reserve: true)));

        Assert.Multiple(async () =>
        {
            Assert.That(answers.Count(a => a.Allowed), Is.EqualTo(3));
            Assert.That((await RemainingAsync(subject, Interviews)).Reserved, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task EnforcedTrackUsage_RetriedWhileTheOriginalRuns_IsADuplicateNotRefused()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Interviews, 2);
        var request = new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "last-slot", Usage = { Usage(Interviews, 1) }, Enforce = true };

        var answers = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => Metering.TrackUsageAsync(request).ResponseAsync));

        Assert.Multiple(async () =>
        {
            Assert.That(answers.Count(a => !a.Duplicate), Is.EqualTo(1));
            Assert.That(answers.Count(a => a.Duplicate), Is.EqualTo(9), "every retry is answered as one, none refused");
            Assert.That(await LedgerProbe.EventSumAsync(Host, subject, Interviews), Is.EqualTo(3));
        });
    }

    [Test]
    public async Task TrackUsage_RetriedAfterTheEventAgedPastTheLateWindow_IsADuplicate()
    {
        await using var host = await MeteringHost.StartAsync(Start);
        var subject = NewSubject();
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" });
        var request = new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "late",
            Usage = { Usage(Minutes, 5) },
            OccurredAt = Timestamp.FromDateTimeOffset(Start.AddDays(-34)),
        };
        await host.Metering.TrackUsageAsync(request);

        host.Clock.Advance(TimeSpan.FromDays(2));
        var retry = await host.Metering.TrackUsageAsync(request);

        Assert.That(retry.Duplicate, Is.True);
    }

    [Test]
    public async Task Duplicate_AfterTheOriginalDiedBeforeUpdatingTheCounter_AppliesTheLedgerValue()
    {
        var subject = await SubscribeAsync("pro");
        var request = new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "k", Usage = { Usage(Minutes, 40) } };
        await Metering.TrackUsageAsync(request);
        await LedgerProbe.OutboxDrainedAsync(Host, subject);

        // What a counter looks like when the call that committed died before applying: an older version, an older total.
        var key = await CounterKeyAsync(subject, Minutes);
        var version = (long)await Host.Redis.HashGetAsync(key, "v");
        await Host.Redis.HashSetAsync(key, [new HashEntry("t", 0), new HashEntry("v", version - 1)]);

        var retry = await Metering.TrackUsageAsync(request);

        Assert.Multiple(async () =>
        {
            Assert.That(retry.Duplicate, Is.True);
            Assert.That(retry.Limits[0].Used, Is.EqualTo(40));
            Assert.That((long)await Host.Redis.HashGetAsync(key, "t"), Is.EqualTo(40), "the duplicate brought the counter up to the ledger");
        });
    }

    private async Task<RedisKey> CounterKeyAsync(string subject, string usageType)
    {
        var start = (await RemainingAsync(subject, usageType)).PeriodStart.ToDateTimeOffset().ToUnixTimeSeconds();
        return $"mtr:{{{subject}}}:c:{usageType}:{start}";
    }
}
