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

    /// <summary>
    /// The store instruments are recorded by the server itself: every Redis and ledger call by its guard, every group
    /// commit, and the gauges of live holds and of the outbox by the background drain. An own database, so that the
    /// gauges count this test's rows only; a drain every 2 s, so that a backlog stays visible between two drains.
    /// </summary>
    [Test]
    public async Task StoreInstruments_AreRecordedByRealCalls()
    {
        var metricsPort = TcpPorts.GetFreeLoopbackPort();
        var environment = new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = await Servers.Instance.CreateDatabaseAsync("store_metrics"),
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
            ["Metrics__Port"] = metricsPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Metering__OutboxDrainInterval"] = "00:00:02",
        };
        foreach (var (key, value) in TestKeys.Settings)
        {
            environment[key.Replace(":", "__", StringComparison.Ordinal)] = value!;
        }

        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), environment);
        using var channel = Channel(server.Address, TestKeys.All);
        var metering = new MeteringService.MeteringServiceClient(channel);
        using var http = new HttpClient();
        var url = $"http://127.0.0.1:{metricsPort}/metrics";
        var (a, b) = ($"store-a-{Guid.NewGuid():N}", $"store-b-{Guid.NewGuid():N}");

        await metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = a, Usage = { Amount(Minutes, 1) } });
        var afterCheck = await PrometheusScrape.GetAsync(http, url);
        await metering.TrackUsageAsync(new TrackUsageRequest { SubjectId = a, IdempotencyKey = "k1", Usage = { Amount(Minutes, 5) } });
        var afterTrack = await PrometheusScrape.GetAsync(http, url);
        var hold = await metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = b, Usage = { Amount(Minutes, 3) }, Reserve = true });

        // The gauges follow the drain: the holds counted once a second, the outbox before each drain takes its entries.
        var liveHolds = await PollAsync(http, url, s => s.Sum("metering_holds_live") == 1);
        var backlog = await PollAsync(http, url, s => s.Sum("metering_outbox_backlog") >= 1);
        var drained = await PollAsync(http, url, s => s.Sum("metering_outbox_backlog") == 0);
        await TestContext.Out.WriteLineAsync(drained.Text);

        const string StoreCount = "db_client_operation_duration_seconds_count";
        Assert.Multiple(() =>
        {
            Assert.That(hold.ReservationId, Is.Not.Empty, "the reserve placed a hold");
            Assert.That(afterCheck.Sum(StoreCount, "db_system_name=redis", "db_operation_name=check"), Is.GreaterThanOrEqualTo(1), "CheckLimit's script");
            Assert.That(afterCheck.Sum(StoreCount, "db_system_name=postgresql", "db_operation_name=get_or_enroll"), Is.GreaterThanOrEqualTo(1), "the subject enrolled");
            Assert.That(afterCheck.Sum("db_client_operation_duration_seconds_sum", "db_system_name=redis"), Is.GreaterThan(0).And.LessThan(60));
            Assert.That(afterCheck.Sum("metering_ledger_batch_size_count"), Is.Zero, "no usage recorded yet");
            Assert.That(afterTrack.Sum(StoreCount, "db_system_name=postgresql", "db_operation_name=record"), Is.EqualTo(1), "TrackUsage's ledger write");
            Assert.That(afterTrack.Sum("metering_ledger_batch_size_count"), Is.EqualTo(1), "one group commit");
            Assert.That(afterTrack.Sum("metering_ledger_batch_size_sum"), Is.EqualTo(1), "of one event");
            Assert.That(afterTrack.Sum("metering_ledger_commit_duration_seconds_count"), Is.EqualTo(1));
            Assert.That(afterTrack.Sum("metering_ledger_commit_duration_seconds_sum"), Is.GreaterThan(0).And.LessThan(60));
            Assert.That(liveHolds.Sum("metering_holds_live"), Is.EqualTo(1), "the hold of b");
            Assert.That(backlog.Sum("metering_outbox_backlog"), Is.GreaterThanOrEqualTo(1), "the entries of the last writes, before a drain took them");
            Assert.That(drained.Sum(StoreCount, "db_system_name=postgresql", "db_operation_name=drain_outbox"), Is.GreaterThanOrEqualTo(1));
            Assert.That(drained.Sum("metering_store_errors_total"), Is.Zero, "no store call failed");
        });
    }

    /// <summary>Scrapes every 100 ms until <paramref name="condition"/> holds (at most 15 s); returns the last scrape.</summary>
    private static async Task<PrometheusScrape> PollAsync(HttpClient http, string url, Func<PrometheusScrape, bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (true)
        {
            var scrape = await PrometheusScrape.GetAsync(http, url);
            if (condition(scrape) || DateTime.UtcNow > deadline)
            {
                return scrape;
            }

            await Task.Delay(100);
        }
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
