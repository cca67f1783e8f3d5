using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>Corrections: recorded in the ledger as events of their own, through the same path as TrackUsage.</summary>
public sealed class AdjustUsageTests : ServiceTest
{
    [Test]
    public async Task AdjustUsage_GivingMinutesBack_UnblocksAUserWhoWasDenied()
    {
        var subject = await SubscribeAsync("free");
        await TrackAsync(subject, Minutes, 28);
        Assert.That((await CheckAsync(subject, Minutes, 20)).Allowed, Is.False, "denied before the correction");

        var adjusted = await AdjustAsync(subject, Minutes, -23, "broken interview session-9f1c", "refund-9f1c");
        var check = await CheckAsync(subject, Minutes, 20);

        Assert.Multiple(() =>
        {
            Assert.That(adjusted.Duplicate, Is.False);
            Assert.That(adjusted.Limit.Used, Is.EqualTo(5));
            Assert.That(adjusted.Limit.Remaining, Is.EqualTo(25));
            Assert.That(check.Allowed, Is.True);
        });
    }

    [Test]
    public async Task AdjustUsage_IsReflectedInTheCountersAtOnce_WithANewerVersion()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 100);
        var before = (await LedgerProbe.CountersAsync(Host, subject, Minutes)).Single();

        await AdjustAsync(subject, Minutes, 15, "manual correction", "fix-1");
        var after = (await LedgerProbe.CountersAsync(Host, subject, Minutes)).Single();

        Assert.Multiple(() =>
        {
            Assert.That(after.Total, Is.EqualTo(115));
            Assert.That(after.Version, Is.GreaterThan(before.Version));
        });
    }

    [Test]
    public async Task AdjustUsage_RetriedWithTheSameKey_CountsOnce()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 50);

        var first = await AdjustAsync(subject, Minutes, -10, "refund", "refund-1");
        var retry = await AdjustAsync(subject, Minutes, -10, "refund", "refund-1");

        Assert.Multiple(() =>
        {
            Assert.That(first.Duplicate, Is.False);
            Assert.That(retry.Duplicate, Is.True);
            Assert.That(retry.Limit.Used, Is.EqualTo(40));
        });
    }

    [Test]
    public async Task AdjustUsage_SameKeyOtherPayload_IsAlreadyExists()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 50, key: "session-1");
        await AdjustAsync(subject, Minutes, -10, "refund", "refund-1");

        FailsWith(StatusCode.AlreadyExists, () => AdjustAsync(subject, Minutes, -11, "refund", "refund-1"));
        FailsWith(StatusCode.AlreadyExists, () => AdjustAsync(subject, Minutes, -10, "refund", "session-1"));

        Assert.That((await RemainingAsync(subject, Minutes)).Used, Is.EqualTo(40));
    }

    [Test]
    public async Task AdjustUsage_RacingTrackUsage_LosesNothing()
    {
        var subject = await SubscribeAsync("premium");
        await TrackAsync(subject, Minutes, 1000);

        var tracks = Enumerable.Range(0, 30).Select(i => TrackAsync(subject, Minutes, 3, key: $"t{i}"));
        var adjustments = Enumerable.Range(0, 30).Select(i => AdjustAsync(subject, Minutes, -2, "correction", $"a{i}"));
        await Task.WhenAll(tracks.Cast<Task>().Concat(adjustments));

        var status = await RemainingAsync(subject, Minutes);
        var counter = (await LedgerProbe.CountersAsync(Host, subject, Minutes)).Single();
        Assert.Multiple(async () =>
        {
            Assert.That(status.Used, Is.EqualTo(1000 + (30 * 3) - (30 * 2)));
            Assert.That(counter.Total, Is.EqualTo(status.Used));
            Assert.That(await LedgerProbe.EventSumAsync(Host, subject, Minutes), Is.EqualTo(status.Used));
        });
    }

    [Test]
    public async Task AdjustUsage_BelowZero_IsFailedPrecondition_AndRecordsNothing()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 10);

        var error = FailsWith(StatusCode.FailedPrecondition, () => AdjustAsync(subject, Minutes, -11, "too much", "refund-1"));

        Assert.Multiple(async () =>
        {
            Assert.That(error.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason, Is.EqualTo("USAGE_BELOW_ZERO"));
            Assert.That((await RemainingAsync(subject, Minutes)).Used, Is.EqualTo(10));
            Assert.That(await LedgerProbe.EventCountAsync(Host, subject), Is.EqualTo(1));
        });
    }

    [Test]
    public async Task AdjustUsage_InvalidRequest_NamesEveryBadField_AndChangesNothing()
    {
        var subject = NewSubject();

        var error = FailsWith(StatusCode.InvalidArgument, () => Admin.AdjustUsageAsync(new AdjustUsageRequest
        {
            SubjectId = subject,
            UsageType = "hours",
            Amount = 0,
            Reason = " ",
            IdempotencyKey = "",
        }).ResponseAsync);

        var fields = error.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations.Select(v => v.Field);
        Assert.Multiple(async () =>
        {
            Assert.That(fields, Is.EquivalentTo(new[] { "usage_type", "amount", "reason", "idempotency_key" }));
            Assert.That(await LedgerProbe.EventCountAsync(Host, subject), Is.Zero);
        });
    }

    [Test]
    public async Task ResetUsage_ZeroesTheCurrentPeriod_AsARecordedAdjustment_KeepingEveryEvent()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 120);
        await TrackAsync(subject, Minutes, 60);

        var reset = await Admin.ResetUsageAsync(new ResetUsageRequest { SubjectId = subject, UsageType = Minutes, Reason = "goodwill", IdempotencyKey = "reset-1" });
        var after = await TrackAsync(subject, Minutes, 5);

        Assert.Multiple(async () =>
        {
            Assert.That(reset.Duplicate, Is.False);
            Assert.That(reset.AdjustedBy, Is.EqualTo(-180));
            Assert.That(reset.Limit.Used, Is.Zero);
            Assert.That(reset.Limit.Remaining, Is.EqualTo(300));
            Assert.That(after.Limits[0].Used, Is.EqualTo(5));
            Assert.That(await LedgerProbe.EventCountAsync(Host, subject), Is.EqualTo(4), "two usages, the reset and one more usage");
            Assert.That(await LedgerProbe.EventSumAsync(Host, subject, Minutes), Is.EqualTo(5));
        });
    }

    [Test]
    public async Task ResetUsage_RetriedWithTheSameKey_ResetsNothingAgain()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Interviews, 2);
        await Admin.ResetUsageAsync(new ResetUsageRequest { SubjectId = subject, UsageType = Interviews, Reason = "support", IdempotencyKey = "reset-1" });
        await TrackAsync(subject, Interviews, 1);

        var retry = await Admin.ResetUsageAsync(new ResetUsageRequest { SubjectId = subject, UsageType = Interviews, Reason = "support", IdempotencyKey = "reset-1" });

        Assert.Multiple(() =>
        {
            Assert.That(retry.Duplicate, Is.True);
            Assert.That(retry.AdjustedBy, Is.Zero);
            Assert.That(retry.Limit.Used, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task ResetUsage_RacingTrackUsage_LosesNothingAndCountersEqualTheLedger()
    {
        var subject = await SubscribeAsync("premium");
        await TrackAsync(subject, Minutes, 500);

        var tracks = Enumerable.Range(0, 40).Select(i => TrackAsync(subject, Minutes, 1, key: $"t{i}"));
        var reset = Admin.ResetUsageAsync(new ResetUsageRequest { SubjectId = subject, UsageType = Minutes, Reason = "support", IdempotencyKey = "reset" }).ResponseAsync;
        await Task.WhenAll(tracks.Cast<Task>().Append(reset));

        // Every usage either came before the reset (and was zeroed with it) or after it (and counts): the total is
        // exactly the usages recorded after the reset, and cache and ledger agree on it.
        var status = await RemainingAsync(subject, Minutes);
        var counter = (await LedgerProbe.CountersAsync(Host, subject, Minutes)).Single();
        var ledger = await LedgerProbe.EventSumAsync(Host, subject, Minutes);
        var adjustedBy = (await reset).AdjustedBy;
        Assert.Multiple(() =>
        {
            Assert.That(status.Used, Is.InRange(0, 40));
            Assert.That(status.Used, Is.EqualTo(500 + 40 + adjustedBy));
            Assert.That(counter.Total, Is.EqualTo(status.Used));
            Assert.That(ledger, Is.EqualTo(status.Used));
        });
    }

    private async Task<AdjustUsageResponse> AdjustAsync(string subject, string usageType, long amount, string reason, string key) =>
        await Admin.AdjustUsageAsync(new AdjustUsageRequest
        {
            SubjectId = subject,
            UsageType = usageType,
            Amount = amount,
            Reason = reason,
            IdempotencyKey = key,
        });
}
