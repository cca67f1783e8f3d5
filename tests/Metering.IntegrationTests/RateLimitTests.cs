using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>Each key has its own request rate (a token bucket); past it, RESOURCE_EXHAUSTED with google.rpc.RetryInfo.</summary>
public sealed class RateLimitTests
{
    private const string SlowKey = "mtr_test_slow_key";

    private MeteringHost _host = null!;

    [OneTimeSetUp]
    public async Task StartHostAsync() => _host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, settings: new Dictionary<string, string?>
    {
        ["Auth:ApiKeys:slow:Hash"] = TestKeys.Hash(SlowKey),
        ["Auth:ApiKeys:slow:Scopes"] = "metering.track metering.read",
        ["Auth:ApiKeys:slow:RequestsPerSecond"] = "1",
        ["Auth:ApiKeys:slow:Burst"] = "3",
    });

    [OneTimeTearDown]
    public async Task StopHostAsync() => await _host.DisposeAsync();

    [Test]
    public async Task KeyOverItsRate_IsResourceExhaustedWithRetryInfo_AndRecordsNothing_WhileOtherKeysGoOn()
    {
        using var channel = _host.ChannelFor(SlowKey);
        var slow = new MeteringService.MeteringServiceClient(channel);
        var subject = $"rate-{Guid.NewGuid():N}";
        RpcException? refused = null;
        var recorded = 0;
        for (var i = 0; i < 20 && refused is null; i++)
        {
            try
            {
                await slow.TrackUsageAsync(new TrackUsageRequest
                {
                    SubjectId = subject,
                    IdempotencyKey = $"k-{i}",
                    Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } },
                });
                recorded++;
            }
            catch (RpcException ex)
            {
                refused = ex;
            }
        }

        var others = await _host.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } });

        Assert.That(refused, Is.Not.Null, "20 calls in a row at 1 per second with a burst of 3 were never refused");
        var status = refused!.GetRpcStatus()!;
        Assert.Multiple(() =>
        {
            Assert.That(refused.StatusCode, Is.EqualTo(StatusCode.ResourceExhausted), refused.Status.Detail);
            Assert.That(recorded, Is.InRange(3, 19), "the burst goes through first");
            Assert.That(status.GetDetail<ErrorInfo>().Reason, Is.EqualTo("RATE_LIMITED"));
            Assert.That(status.GetDetail<RetryInfo>().RetryDelay.ToTimeSpan(), Is.GreaterThan(TimeSpan.Zero).And.LessThanOrEqualTo(TimeSpan.FromSeconds(1)));
            Assert.That(others.Limits.Single().Used, Is.EqualTo(5 * recorded), "the refused call recorded nothing; another key is not limited by this one");
        });
    }
}
