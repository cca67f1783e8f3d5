using Grpc.Core;
using Grpc.Net.Client;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// The real server with its Prometheus endpoint on a port of its own: after a known set of calls, /metrics (no key)
/// reports exactly those calls, decisions, amounts, holds and refusals.
/// </summary>
public sealed class MetricsTests
{
    private const string RpcCount = "rpc_server_duration_seconds_count";

    [Test]
    public async Task Scrape_AfterKnownCalls_ReportsExactlyThem()
    {
        var metricsPort = TcpPorts.GetFreeLoopbackPort();
        var environment = new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = await SharedLedger.ConnectionStringAsync(),
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
            ["Metrics__Port"] = metricsPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Auth__ApiKeys__tiny__Hash"] = TestKeys.Hash("mtr_test_tiny"),
            ["Auth__ApiKeys__tiny__Scopes"] = "metering.read",
            ["Auth__ApiKeys__tiny__RequestsPerSecond"] = "1",
            ["Auth__ApiKeys__tiny__Burst"] = "1",
        };
        foreach (var (key, value) in TestKeys.Settings)
        {
            environment[key.Replace(":", "__", StringComparison.Ordinal)] = value!;
        }

        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), environment);
        using var channel = Channel(server.Address, TestKeys.All);
        var metering = new MeteringService.MeteringServiceClient(channel);
        var (a, b, c) = ($"metrics-a-{Guid.NewGuid():N}", $"metrics-b-{Guid.NewGuid():N}", $"metrics-c-{Guid.NewGuid():N}");

        // Three CheckLimits on the free plan (30 minutes, analyses not in the plan): allowed with a hold, not in plan, exceeded.
        var hold = await metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = a, Usage = { Amount(Minutes, 10) }, Reserve = true });
        await metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = a, Usage = { Amount(DetailedAnalysis, 1) } });
        await metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = a, Usage = { Amount(Minutes, 100) } });

        // Two TrackUsages that count (7 settling the hold, 5), one duplicate that does not.
        await metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = a, IdempotencyKey = "s1", ReservationId = hold.ReservationId, Usage = { Amount(Minutes, 7) } });
        await metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = b, IdempotencyKey = "k1", Usage = { Amount(Minutes, 5) } });
        var duplicate = await metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = b, IdempotencyKey = "k1", Usage = { Amount(Minutes, 5) } });

        // A hold given back.
        var second = await metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = c, Usage = { Amount(Minutes, 1) }, Reserve = true });
        var released = await metering.ReleaseReservationAsync(new ReleaseReservationRequest { SubjectId = c, ReservationId = second.ReservationId });

        // Refusals: no key, an unknown key, and a caller over its rate (burst 1).
        using var anonymousChannel = Channel(server.Address, null);
        using var unknownChannel = Channel(server.Address, "mtr_test_unknown");
        using var tinyChannel = Channel(server.Address, "mtr_test_tiny");
        var unauthenticated = 0;
        foreach (var refused in new[] { anonymousChannel, unknownChannel })
        {
            try
            {
                await new MeteringService.MeteringServiceClient(refused).GetRemainingAsync(new GetRemainingRequest { SubjectId = a });
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unauthenticated)
            {
                unauthenticated++;
            }
        }

        var (tinyOk, tinyLimited) = (0, 0);
        for (var i = 0; i < 3; i++)
        {
            try
            {
                await new MeteringService.MeteringServiceClient(tinyChannel).GetRemainingAsync(new GetRemainingRequest { SubjectId = a });
                tinyOk++;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.ResourceExhausted)
            {
                tinyLimited++;
            }
        }

        using var http = new HttpClient();
        var scrape = await PrometheusScrape.GetAsync(http, $"http://127.0.0.1:{metricsPort}/metrics");
        await TestContext.Out.WriteLineAsync(scrape.Text);

        Assert.Multiple(() =>
        {
            Assert.That(duplicate.Duplicate && released.Released && unauthenticated == 2 && tinyLimited >= 1, Is.True, "the calls went as planned");
            Assert.That(scrape.Sum(RpcCount, "rpc_method=CheckLimit", "rpc_grpc_status_code=0"), Is.EqualTo(4));
            Assert.That(scrape.Sum(RpcCount, "rpc_service=metering.v1.MeteringService", "rpc_method=TrackUsage", "rpc_grpc_status_code=0"), Is.EqualTo(3));
            Assert.That(scrape.Sum(RpcCount, "rpc_method=ReleaseReservation", "rpc_grpc_status_code=0"), Is.EqualTo(1));
            Assert.That(scrape.Sum(RpcCount, "rpc_method=GetRemaining", "rpc_grpc_status_code=16"), Is.EqualTo(2), "UNAUTHENTICATED, refused before the service");
            Assert.That(scrape.Sum(RpcCount, "rpc_method=GetRemaining", "rpc_grpc_status_code=8"), Is.EqualTo(tinyLimited), "RESOURCE_EXHAUSTED by the rate limit");
            Assert.That(scrape.Sum(RpcCount, "rpc_method=GetRemaining", "rpc_grpc_status_code=0"), Is.EqualTo(tinyOk));
            Assert.That(scrape.Sum("rpc_server_duration_seconds_bucket", "rpc_method=CheckLimit", "le=+Inf"), Is.EqualTo(4), "latency histogram");

            Assert.That(scrape.Sum("metering_decisions_total", $"metering_usage_type={Minutes}", "metering_decision=allowed"), Is.EqualTo(2));
            Assert.That(scrape.Sum("metering_decisions_total", $"metering_usage_type={Minutes}", "metering_decision=limit_exceeded"), Is.EqualTo(1));
            Assert.That(scrape.Sum("metering_decisions_total", $"metering_usage_type={DetailedAnalysis}", "metering_decision=not_in_plan"), Is.EqualTo(1));
            Assert.That(scrape.Sum("metering_usage_recorded_total", $"metering_usage_type={Minutes}"), Is.EqualTo(12), "7 + 5, the duplicate not counted");
            Assert.That(scrape.Sum("metering_holds_placed_total"), Is.EqualTo(2));
            Assert.That(scrape.Sum("metering_holds_settled_total"), Is.EqualTo(1));
            Assert.That(scrape.Sum("metering_holds_released_total"), Is.EqualTo(1));
            Assert.That(scrape.Sum("metering_calls_unauthenticated_total", "metering_reason=no_credentials"), Is.EqualTo(1));
            Assert.That(scrape.Sum("metering_calls_unauthenticated_total", "metering_reason=unknown_api_key"), Is.EqualTo(1));
            Assert.That(scrape.Sum("metering_calls_rate_limited_total", "metering_caller=tiny"), Is.EqualTo(tinyLimited));
            Assert.That(scrape.Names, Does.Contain("metering_degraded"), "gauges are exported before anything sets them");
        });
    }

    [Test]
    public async Task Metrics_AreNotServedOnTheGrpcPort()
    {
        var metricsPort = TcpPorts.GetFreeLoopbackPort();
        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = await SharedLedger.ConnectionStringAsync(),
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
            ["Metrics__Port"] = metricsPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
        });
        using var http2 = new HttpClient { DefaultRequestVersion = System.Net.HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var response = await http2.GetAsync(new Uri($"{server.Address}/metrics"));
        using var http = new HttpClient();
        using var metrics = await http.GetAsync(new Uri($"http://127.0.0.1:{metricsPort}/metrics"));

        Assert.Multiple(() =>
        {
            Assert.That((int)response.StatusCode, Is.EqualTo(404), "the gRPC port serves no /metrics");
            Assert.That((int)metrics.StatusCode, Is.EqualTo(200), "the metrics port does, over HTTP/1.1 and without a key");
        });
    }

    private static UsageAmount Amount(string usageType, long amount) => new() { UsageType = usageType, Amount = amount };

    private static GrpcChannel Channel(string address, string? apiKey) =>
        GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = new BearerHandler(apiKey, new SocketsHttpHandler()) });
}
