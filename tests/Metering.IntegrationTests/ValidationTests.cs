using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>Every malformed request is INVALID_ARGUMENT naming the field, and changes nothing.</summary>
public sealed class ValidationTests : ServiceTest
{
    private static readonly string TooLongSubject = new('s', 129);

    public static IEnumerable<TestCaseData> BadTrackRequests()
    {
        TestCaseData Case(string name, string field, Action<TrackUsageRequest> spoil) =>
            new TestCaseData(field, spoil).SetName($"TrackUsage_{name}_IsInvalidArgumentNaming_{field.Replace('.', '_').Replace('[', '_').Replace(']', '_')}");

        yield return Case("EmptySubject", "subject_id", r => r.SubjectId = "");
        yield return Case("SubjectOver128Chars", "subject_id", r => r.SubjectId = TooLongSubject);
        yield return Case("SubjectWithBraces", "subject_id", r => r.SubjectId = "a{b}");
        yield return Case("EmptyIdempotencyKey", "idempotency_key", r => r.IdempotencyKey = "");
        yield return Case("IdempotencyKeyOver256Chars", "idempotency_key", r => r.IdempotencyKey = new string('k', 257));
        yield return Case("NoUsage", "usage", r => r.Usage.Clear());
        yield return Case("ZeroAmount", "usage[0].amount", r => r.Usage[0].Amount = 0);
        yield return Case("NegativeAmount", "usage[0].amount", r => r.Usage[0].Amount = -5);
        yield return Case("AbsurdAmount", "usage[0].amount", r => r.Usage[0].Amount = long.MaxValue);
        yield return Case("UnknownUsageType", "usage[0].usage_type", r => r.Usage[0].UsageType = "tokens_per_month");
        yield return Case("DuplicateUsageType", "usage[1].usage_type", r => r.Usage.Add(new UsageAmount { UsageType = Minutes, Amount = 1 }));
        yield return Case("OccurredAt36DaysAgo", "occurred_at", r => r.OccurredAt = Timestamp.FromDateTimeOffset(DefaultStart.AddDays(-36)));
        yield return Case("OccurredAt6MinutesAhead", "occurred_at", r => r.OccurredAt = Timestamp.FromDateTimeOffset(DefaultStart.AddMinutes(6)));
        yield return Case("OccurredAtOutOfRange", "occurred_at", r => r.OccurredAt = new Timestamp { Seconds = long.MaxValue });
        yield return Case("TooManyAttributes", "attributes", r =>
        {
            for (var i = 0; i < 17; i++)
            {
                r.Attributes[$"k{i}"] = "v";
            }
        });
    }

    [TestCaseSource(nameof(BadTrackRequests))]
    public async Task TrackUsage_BadField(string field, Action<TrackUsageRequest> spoil)
    {
        var subject = await SubscribeAsync("starter");
        var request = new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "key-1", Usage = { Usage(Minutes, 10) } };
        spoil(request);

        var error = FailsWith(StatusCode.InvalidArgument, () => Metering.TrackUsageAsync(request).ResponseAsync);

        Assert.That(FieldsOf(error), Does.Contain(field));
        Assert.That((await RemainingAsync(subject, Minutes)).Used, Is.Zero, "nothing recorded");
    }

    [Test]
    public void TrackUsage_SeveralBadFields_NamesEachOne()
    {
        var error = FailsWith(StatusCode.InvalidArgument, () => Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = "",
            IdempotencyKey = "",
            Usage = { Usage("nope", 0) },
        }).ResponseAsync);

        Assert.That(FieldsOf(error), Is.EquivalentTo(new[] { "subject_id", "idempotency_key", "usage[0].usage_type", "usage[0].amount" }));
    }

    [Test]
    public async Task CheckLimit_BadFields_AreInvalidArgumentAndHoldNothing()
    {
        var subject = await SubscribeAsync("starter");

        var ttl = FailsWith(StatusCode.InvalidArgument, () => Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 10) },
            Reserve = true,
            ReservationTtl = Duration.FromTimeSpan(TimeSpan.FromHours(25)),
        }).ResponseAsync);
        var zeroTtl = FailsWith(StatusCode.InvalidArgument, () => Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 10) },
            Reserve = true,
            ReservationTtl = new Duration(),
        }).ResponseAsync);
        var amount = FailsWith(StatusCode.InvalidArgument, () => CheckAsync(subject, Minutes, -1, reserve: true));
        var type = FailsWith(StatusCode.InvalidArgument, () => CheckAsync(subject, "", 1, reserve: true));
        var status = await RemainingAsync(subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(FieldsOf(ttl), Is.EqualTo(new[] { "reservation_ttl" }));
            Assert.That(FieldsOf(zeroTtl), Is.EqualTo(new[] { "reservation_ttl" }));
            Assert.That(FieldsOf(amount), Is.EqualTo(new[] { "usage[0].amount" }));
            Assert.That(FieldsOf(type), Is.EqualTo(new[] { "usage[0].usage_type" }));
            Assert.That(status.Reserved, Is.Zero);
        });
    }

    [Test]
    public void GetRemaining_UnknownUsageTypeOrSubject_IsInvalidArgument()
    {
        var type = FailsWith(StatusCode.InvalidArgument, () => Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = "u1", UsageTypes = { Minutes, "bogus" } }).ResponseAsync);
        var subject = FailsWith(StatusCode.InvalidArgument, () => Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = TooLongSubject }).ResponseAsync);

        Assert.Multiple(() =>
        {
            Assert.That(FieldsOf(type), Is.EqualTo(new[] { "usage_types[1]" }));
            Assert.That(FieldsOf(subject), Is.EqualTo(new[] { "subject_id" }));
        });
    }

    [Test]
    public void ReleaseReservation_EmptyReservationId_IsInvalidArgument()
    {
        var error = FailsWith(StatusCode.InvalidArgument, () => Metering.ReleaseReservationAsync(new ReleaseReservationRequest { SubjectId = "u1" }).ResponseAsync);

        Assert.That(FieldsOf(error), Is.EqualTo(new[] { "reservation_id" }));
    }

    [TestCase("plan_id", "gold", 1, "UTC")]
    [TestCase("plan_id", "", 1, "UTC")]
    [TestCase("billing_anchor_day", "pro", 32, "UTC")]
    [TestCase("billing_anchor_day", "pro", -1, "UTC")]
    [TestCase("time_zone", "pro", 1, "Mars/Olympus_Mons")]
    [TestCase("time_zone", "pro", 1, "EST5EDT,M3.2.0")]
    public async Task SetSubscription_BadField_IsInvalidArgumentAndKeepsTheSubscription(string field, string plan, int anchorDay, string timeZone)
    {
        var subject = await SubscribeAsync("starter");

        var error = FailsWith(StatusCode.InvalidArgument, () => Admin.SetSubscriptionAsync(new SetSubscriptionRequest
        {
            SubjectId = subject,
            PlanId = plan,
            BillingAnchorDay = anchorDay,
            TimeZone = timeZone,
        }).ResponseAsync);

        var subscription = (await Admin.GetSubscriptionAsync(new GetSubscriptionRequest { SubjectId = subject })).Subscription;
        Assert.Multiple(() =>
        {
            Assert.That(FieldsOf(error), Is.EqualTo(new[] { field }));
            Assert.That(subscription.PlanId, Is.EqualTo("starter"));
            Assert.That(subscription.BillingAnchorDay, Is.EqualTo(1));
            Assert.That(subscription.TimeZone, Is.EqualTo("UTC"));
        });
    }

    [Test]
    public async Task Service_AfterBadInput_KeepsServing()
    {
        for (var i = 0; i < 20; i++)
        {
            FailsWith(StatusCode.InvalidArgument, () => TrackAsync("", Minutes, -i));
        }

        var subject = await SubscribeAsync("starter");
        var response = await TrackAsync(subject, Minutes, 3);

        Assert.That(response.Limits[0].Used, Is.EqualTo(3));
    }

    private static string[] FieldsOf(RpcException error) =>
        [.. error.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations.Select(v => v.Field)];
}
