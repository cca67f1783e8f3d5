using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

public sealed class TrackUsageTests : ServiceTest
{
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

}
