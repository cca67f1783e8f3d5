using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// What the service does while Redis is unreachable: the ledger keeps recording and deciding grants; checks without a
/// hold follow each usage type's degraded policy and say so.
/// </summary>
public sealed class RedisOutageTests : ServiceTest
{
    private MeteringHost _withoutRedis = null!;

    /// <summary>The policy tests change the catalog.</summary>
    protected override bool OwnDatabase => true;

    [OneTimeSetUp]
    public async Task StartHostWithoutRedisAsync()
    {
        _withoutRedis = await MeteringHost.StartAsync(Start, Host.PostgresConnectionString, new Dictionary<string, string?>
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
    public async Task CheckLimit_WhileRedisIsDown_IsDecidedFromTheLedgerAndSaysItIsDegraded()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 295);

        var ten = await _withoutRedis.Metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Minutes, 10) } });
        var five = await _withoutRedis.Metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Minutes, 5) } });
        var remaining = await _withoutRedis.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } });

        Assert.Multiple(() =>
        {
            Assert.That(ten.Allowed, Is.False);
            Assert.That(ten.Degraded, Is.True);
            Assert.That(ten.Limits[0].Used, Is.EqualTo(295));
            Assert.That(ten.Limits[0].Decision, Is.EqualTo(Decision.LimitExceeded));
            Assert.That(five.Allowed, Is.True);
            Assert.That(five.Degraded, Is.True);
            Assert.That(remaining.Degraded, Is.True);
            Assert.That(remaining.Limits[0].Remaining, Is.EqualTo(5));
        });
    }

    [Test]
    public async Task CheckLimit_WhileRedisIsDown_FollowsTheUsageTypesPolicy()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 295);
        var check = new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Minutes, 10) } };
        try
        {
            await SetMinutesPolicyAsync(DegradedPolicy.Allow);
            var allowed = await _withoutRedis.Metering.CheckLimitAsync(check);
            var healthy = await Metering.CheckLimitAsync(check);

            await SetMinutesPolicyAsync(DegradedPolicy.Deny);
            var denied = FailsWith(StatusCode.Unavailable, () => _withoutRedis.Metering.CheckLimitAsync(check).ResponseAsync);

            Assert.Multiple(() =>
            {
                Assert.That(allowed.Allowed, Is.True, "ALLOW fails open");
                Assert.That(allowed.Degraded, Is.True);
                Assert.That(allowed.Limits[0].Used, Is.EqualTo(295), "with the ledger's figures");
                Assert.That(healthy.Allowed, Is.False, "the policy applies only while the counters are unavailable");
                Assert.That(healthy.Degraded, Is.False);
                Assert.That(denied.Status.Detail, Does.Contain("counter store is unavailable"));
            });
        }
        finally
        {
            await SetMinutesPolicyAsync(DegradedPolicy.Ledger);
        }
    }

    [Test]
    public async Task UpsertUsageType_WithoutAPolicy_KeepsTheOneItHas()
    {
        try
        {
            await SetMinutesPolicyAsync(DegradedPolicy.Deny);
            await Admin.UpsertUsageTypeAsync(new UpsertUsageTypeRequest { Name = Minutes, Unit = "minute", ResetPeriod = ResetPeriod.Month });

            var listed = (await Admin.ListUsageTypesAsync(new ListUsageTypesRequest())).UsageTypes;

            Assert.Multiple(() =>
            {
                Assert.That(listed.Single(t => t.Name == Minutes).DegradedPolicy, Is.EqualTo(DegradedPolicy.Deny));
                Assert.That(listed.Single(t => t.Name == Interviews).DegradedPolicy, Is.EqualTo(DegradedPolicy.Ledger), "the default");
            });
        }
        finally
        {
            await SetMinutesPolicyAsync(DegradedPolicy.Ledger);
        }
    }

    [Test]
    public async Task ParallelReserves_WhileRedisIsDown_GrantExactlyWhatFits()
    {
        var subject = await SubscribeAsync("starter");

        var answers = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => _withoutRedis.Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Interviews, 1) },
            Reserve = true,
        }).ResponseAsync));

        Assert.Multiple(async () =>
        {
            Assert.That(answers.Count(a => a.Allowed), Is.EqualTo(3), "holds are decided by the ledger, Redis or not");
            Assert.That(answers.All(a => !a.Degraded), Is.True, "a reserve is never a degraded answer");
            Assert.That((await RemainingAsync(subject, Interviews)).Reserved, Is.EqualTo(3), "the healthy instance sees the same holds");
        });
    }

    [Test]
    public async Task TrackUsage_EnforcedWhileRedisIsDown_IsDecidedFromTheLedger()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Interviews, 2);
        TrackUsageRequest Enforced(string key) => new() { SubjectId = subject, IdempotencyKey = key, Usage = { Usage(Interviews, 1) }, Enforce = true };

        var fits = await _withoutRedis.Metering.TrackUsageAsync(Enforced("third"));
        var over = FailsWith(StatusCode.ResourceExhausted, () => _withoutRedis.Metering.TrackUsageAsync(Enforced("fourth")).ResponseAsync);

        Assert.Multiple(async () =>
        {
            Assert.That(fits.Duplicate, Is.False);
            Assert.That(over.GetRpcStatus()!.GetDetail<Google.Rpc.ErrorInfo>().Reason, Is.EqualTo("LIMIT_EXCEEDED"));
            Assert.That(await LedgerProbe.EventSumAsync(Host, subject, Interviews), Is.EqualTo(3));
        });
    }

    private async Task SetMinutesPolicyAsync(DegradedPolicy policy) =>
        await Admin.UpsertUsageTypeAsync(new UpsertUsageTypeRequest { Name = Minutes, Unit = "minute", ResetPeriod = ResetPeriod.Month, DegradedPolicy = policy });
}
