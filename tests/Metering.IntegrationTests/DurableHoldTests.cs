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
    public async Task Reserve_RequestIdReusedForOtherAmounts_IsAlreadyExistsNamingIt()
    {
        var subject = await SubscribeAsync("starter");
        var request = new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Minutes, 100) }, Reserve = true, RequestId = "session-1" };
        var first = await Metering.CheckLimitAsync(request);
        var retry = await Metering.CheckLimitAsync(request);

        var other = FailsWith(StatusCode.AlreadyExists, () => Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 50) },
            Reserve = true,
            RequestId = "session-1",
        }).ResponseAsync);

        Assert.Multiple(() =>
        {
            Assert.That(retry.ReservationId, Is.EqualTo(first.ReservationId), "the retry is answered with the first hold");
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
