using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

public sealed class TrackUsageTests : ServiceTest
{
    [Test]
    public async Task TrackUsage_SameCallSent20TimesConcurrently_CountsOnce()
    {
        var subject = await SubscribeAsync("pro");
        var request = new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "session-42",
            Usage = { Usage(Minutes, 17), Usage(Interviews, 1) },
            Attributes = { ["session_id"] = "42" },
        };

        var responses = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => Metering.TrackUsageAsync(request).ResponseAsync));

        var minutes = await RemainingAsync(subject, Minutes);
        var interviews = await RemainingAsync(subject, Interviews);
        Assert.Multiple(() =>
        {
            Assert.That(responses.Count(r => !r.Duplicate), Is.EqualTo(1));
            Assert.That(responses.Count(r => r.Duplicate), Is.EqualTo(19));
            Assert.That(minutes.Used, Is.EqualTo(17));
            Assert.That(interviews.Used, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task TrackUsage_RetryWithUsageInAnotherOrder_IsTheSamePayload()
    {
        var subject = await SubscribeAsync("pro");
        var first = await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "k",
            Usage = { Usage(Minutes, 5), Usage(Interviews, 1) },
        });

        var retry = await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "k",
            Usage = { Usage(Interviews, 1), Usage(Minutes, 5) },
        });

        Assert.Multiple(() =>
        {
            Assert.That(first.Duplicate, Is.False);
            Assert.That(retry.Duplicate, Is.True);
            Assert.That(retry.Limits.Single(l => l.UsageType == Minutes).Used, Is.EqualTo(5));
        });
    }

    [Test]
    public async Task TrackUsage_SameKeyDifferentPayload_IsAlreadyExistsAndChangesNothing()
    {
        var subject = await SubscribeAsync("pro");
        await TrackAsync(subject, Minutes, 10, key: "session-1");

        var error = FailsWith(StatusCode.AlreadyExists, () => TrackAsync(subject, Minutes, 11, key: "session-1"));

        var status = await RemainingAsync(subject, Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(error.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason, Is.EqualTo("IDEMPOTENCY_KEY_REUSED"));
            Assert.That(status.Used, Is.EqualTo(10));
        });
    }

    [Test]
    public async Task TrackUsage_SameKeyForTwoSubjects_CountsForEach()
    {
        var alice = await SubscribeAsync("pro");
        var bob = await SubscribeAsync("pro");

        var a = await TrackAsync(alice, Minutes, 10, key: "session-1");
        var b = await TrackAsync(bob, Minutes, 10, key: "session-1");

        Assert.Multiple(() =>
        {
            Assert.That(a.Duplicate, Is.False);
            Assert.That(b.Duplicate, Is.False);
            Assert.That(b.Limits[0].Used, Is.EqualTo(10));
        });
    }

    [TestCase(10, 40)]
    [TestCase(30, 5)]
    public async Task TrackUsage_SettlingAHold_RecordsTheActualAmountAndReleasesTheHold(long held, long actual)
    {
        var subject = await SubscribeAsync("starter");
        var check = await CheckAsync(subject, Minutes, held, reserve: true);
        Assert.That((await RemainingAsync(subject, Minutes)).Reserved, Is.EqualTo(held));

        var response = await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "settle",
            ReservationId = check.ReservationId,
            Usage = { Usage(Minutes, actual) },
        });

        Assert.Multiple(() =>
        {
            Assert.That(response.Limits[0].Used, Is.EqualTo(actual));
            Assert.That(response.Limits[0].Reserved, Is.Zero);
            Assert.That(response.Limits[0].Remaining, Is.EqualTo(300 - actual));
        });
    }

    [Test]
    public async Task TrackUsage_RetryOfASettle_CountsOnceAndLeavesOtherHoldsAlone()
    {
        var subject = await SubscribeAsync("starter");
        var settled = await CheckAsync(subject, Minutes, 20, reserve: true);
        await CheckAsync(subject, Minutes, 30, reserve: true);
        var request = new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "session-7",
            ReservationId = settled.ReservationId,
            Usage = { Usage(Minutes, 25) },
        };

        await Metering.TrackUsageAsync(request);
        var retry = await Metering.TrackUsageAsync(request);

        Assert.Multiple(() =>
        {
            Assert.That(retry.Duplicate, Is.True);
            Assert.That(retry.Limits[0].Used, Is.EqualTo(25));
            Assert.That(retry.Limits[0].Reserved, Is.EqualTo(30));
        });
    }

    [Test]
    public async Task TrackUsage_WithoutEnforce_RecordsUsagePastTheLimit()
    {
        var subject = await SubscribeAsync("free");

        var response = await TrackAsync(subject, Minutes, 45);

        Assert.Multiple(() =>
        {
            Assert.That(response.Limits[0].Used, Is.EqualTo(45));
            Assert.That(response.Limits[0].Remaining, Is.Zero);
            Assert.That(response.Limits[0].Decision, Is.EqualTo(Decision.LimitExceeded));
        });
    }

    [Test]
    public async Task TrackUsage_EnforcedPastTheLimit_IsResourceExhaustedWithDetails_AndRecordsNothing()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 290);

        var error = FailsWith(StatusCode.ResourceExhausted, () => Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "over",
            Usage = { Usage(Interviews, 1), Usage(Minutes, 11) },
            Enforce = true,
        }).ResponseAsync);

        var info = error.GetRpcStatus()!.GetDetail<ErrorInfo>();
        var minutes = await RemainingAsync(subject, Minutes);
        var interviews = await RemainingAsync(subject, Interviews);
        Assert.Multiple(() =>
        {
            Assert.That(info.Reason, Is.EqualTo("LIMIT_EXCEEDED"));
            Assert.That(info.Metadata["usage_type"], Is.EqualTo(Minutes));
            Assert.That(info.Metadata["limit"], Is.EqualTo("300"));
            Assert.That(info.Metadata["remaining"], Is.EqualTo("10"));
            Assert.That(minutes.Used, Is.EqualTo(290), "minutes unchanged");
            Assert.That(interviews.Used, Is.Zero, "all or nothing: the interview that fitted is not recorded either");
            Assert.That(minutes.Reserved + interviews.Reserved, Is.Zero, "no hold left behind");
        });
    }

    [Test]
    public async Task TrackUsage_EnforcedInParallel_NeverOverspends()
    {
        var subject = await SubscribeAsync("starter");

        var outcomes = await Task.WhenAll(Enumerable.Range(0, 12).Select(async i =>
        {
            try
            {
                await Metering.TrackUsageAsync(new TrackUsageRequest
                {
                    SubjectId = subject,
                    IdempotencyKey = $"interview-{i}",
                    Usage = { Usage(Interviews, 1) },
                    Enforce = true,
                });
                return StatusCode.OK;
            }
            catch (RpcException ex)
            {
                return ex.StatusCode;
            }
        }));

        var status = await RemainingAsync(subject, Interviews);
        Assert.Multiple(() =>
        {
            Assert.That(outcomes.Count(o => o == StatusCode.OK), Is.EqualTo(3));
            Assert.That(outcomes.Count(o => o == StatusCode.ResourceExhausted), Is.EqualTo(9));
            Assert.That(status.Used, Is.EqualTo(3));
            Assert.That(status.Reserved, Is.Zero);
        });
    }

    [Test]
    public async Task TrackUsage_EnforcedSettleOfItsOwnHold_DoesNotCountTheHoldAgainstItself()
    {
        var subject = await SubscribeAsync("starter");
        var check = await CheckAsync(subject, Interviews, 3, reserve: true);

        var response = await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "all-three",
            ReservationId = check.ReservationId,
            Usage = { Usage(Interviews, 3) },
            Enforce = true,
        });

        Assert.Multiple(() =>
        {
            Assert.That(response.Limits[0].Used, Is.EqualTo(3));
            Assert.That(response.Limits[0].Reserved, Is.Zero);
        });
    }

    [Test]
    public async Task TrackUsage_EnforcedAgainstAnotherCallersHold_IsDenied()
    {
        var subject = await SubscribeAsync("starter");
        await CheckAsync(subject, Interviews, 3, reserve: true);

        FailsWith(StatusCode.ResourceExhausted, () => Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "no-room",
            Usage = { Usage(Interviews, 1) },
            Enforce = true,
        }).ResponseAsync);

        Assert.That((await RemainingAsync(subject, Interviews)).Used, Is.Zero);
    }
}
