using Grpc.Core;
using Metering.Api.V1;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// Base of the tests that call the service over gRPC: one in-process host per fixture, fresh subjects per test.
/// </summary>
public abstract class ServiceTest
{
    /// <summary>Where the fixture's clock starts: mid-month, mid-day UTC, far from any boundary.</summary>
    protected static readonly DateTimeOffset DefaultStart = new(2026, 11, 18, 12, 0, 0, TimeSpan.Zero);

    /// <summary>The same instant, for tests that host the service without deriving from this class.</summary>
    public static DateTimeOffset DefaultStartForTests => DefaultStart;

    protected MeteringHost Host { get; private set; } = null!;

    protected MeteringService.MeteringServiceClient Metering => Host.Metering;

    protected AdminService.AdminServiceClient Admin => Host.Admin;

    /// <summary>The instant the fixture's clock starts at.</summary>
    protected virtual DateTimeOffset Start => DefaultStart;

    /// <summary>True for a fixture whose calls change the shared catalog: it gets a ledger database of its own.</summary>
    protected virtual bool OwnDatabase => false;

    [OneTimeSetUp]
    public async Task StartHostAsync() =>
        Host = await MeteringHost.StartAsync(Start, OwnDatabase ? await Servers.Instance.CreateDatabaseAsync(GetType().Name.ToLowerInvariant()) : null);

    [OneTimeTearDown]
    public async Task StopHostAsync() => await Host.DisposeAsync();

    /// <summary>A host of its own, for a test that moves the clock (a fake clock only moves forward).</summary>
    protected async Task<MeteringHost> PrivateHostAsync() => await MeteringHost.StartAsync(Start);

    protected static string NewSubject(string prefix = "user") => $"{prefix}-{Guid.NewGuid():N}";

    protected static UsageAmount Usage(string usageType, long amount) => new() { UsageType = usageType, Amount = amount };

    protected async Task<string> SubscribeAsync(string plan, string? subject = null, int anchorDay = 0, string timeZone = "")
    {
        subject ??= NewSubject(plan);
        await Admin.SetSubscriptionAsync(new SetSubscriptionRequest
        {
            SubjectId = subject,
            PlanId = plan,
            BillingAnchorDay = anchorDay,
            TimeZone = timeZone,
        });
        return subject;
    }

    protected async Task<TrackUsageResponse> TrackAsync(string subject, string usageType, long amount, DateTimeOffset? occurredAt = null, string? key = null) =>
        await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = key ?? Guid.NewGuid().ToString("N"),
            Usage = { Usage(usageType, amount) },
            OccurredAt = occurredAt is { } at ? Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(at) : null,
        });

    protected async Task<CheckLimitResponse> CheckAsync(string subject, string usageType, long amount, bool reserve = false) =>
        await Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(usageType, amount) },
            Reserve = reserve,
        });

    protected async Task<LimitStatus> RemainingAsync(string subject, string usageType) =>
        (await Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { usageType } })).Limits.Single();

    /// <summary>Asserts that the call fails with <paramref name="code"/> and returns the exception for further checks.</summary>
    protected static RpcException FailsWith(StatusCode code, AsyncTestDelegate call)
    {
        var exception = Assert.ThrowsAsync<RpcException>(call)!;
        Assert.That(exception.StatusCode, Is.EqualTo(code), exception.Status.Detail);
        return exception;
    }
}

/// <summary>The catalog's usage type names.</summary>
public static class UsageTypes
{
    public const string Minutes = "minutes_per_month";
    public const string Interviews = "interviews_per_day";
    public const string DetailedAnalysis = "detailed_analysis_per_month";
    public const string VideoReview = "video_review_per_month";
}
