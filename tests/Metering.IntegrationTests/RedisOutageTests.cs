using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>What the service does while Redis is unreachable: the ledger keeps recording, the hot path fails closed.</summary>
public sealed class RedisOutageTests : ServiceTest
{
    private MeteringHost _withoutRedis = null!;

    [OneTimeSetUp]
    public async Task StartHostWithoutRedisAsync()
    {
        _withoutRedis = await MeteringHost.StartAsync(Start, settings: new Dictionary<string, string?>
        {
            ["ConnectionStrings:Redis"] = $"127.0.0.1:{TcpPorts.GetFreeLoopbackPort()},connectTimeout=200",
            ["Redis:OperationTimeout"] = "00:00:00.500",
        });
    }

    [OneTimeTearDown]
    public async Task StopHostWithoutRedisAsync() => await _withoutRedis.DisposeAsync();

    [Test]
    public async Task TrackUsage_WhileRedisIsDown_IsRecordedInTheLedgerAndCountedOnceRedisIsBack()
    {
        var subject = await SubscribeAsync("starter");
        var request = new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "during-outage", Usage = { Usage(Minutes, 42) } };

        var response = await _withoutRedis.Metering.TrackUsageAsync(request);
        var retry = await Metering.TrackUsageAsync(request);

        Assert.Multiple(() =>
        {
            Assert.That(response.Duplicate, Is.False);
            Assert.That(response.Limits[0].Used, Is.EqualTo(42), "reported from the ledger");
            Assert.That(retry.Duplicate, Is.True, "the healthy instance knows the event");
            Assert.That(retry.Limits[0].Used, Is.EqualTo(42));
        });
    }

    [Test]
    public void CheckLimit_WhileRedisIsDown_IsUnavailable()
    {
        var error = FailsWith(StatusCode.Unavailable, () => _withoutRedis.Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = NewSubject(),
            Usage = { Usage(Interviews, 1) },
            Reserve = true,
        }).ResponseAsync);

        Assert.That(error.Status.Detail, Does.Contain("counter store is unavailable"));
    }

    [Test]
    public async Task TrackUsage_EnforcedWhileRedisIsDown_IsUnavailableAndRecordsNothing()
    {
        var subject = await SubscribeAsync("starter");

        FailsWith(StatusCode.Unavailable, () => _withoutRedis.Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "enforced-during-outage",
            Usage = { Usage(Minutes, 5) },
            Enforce = true,
        }).ResponseAsync);

        Assert.That((await RemainingAsync(subject, Minutes)).Used, Is.Zero);
    }
}
