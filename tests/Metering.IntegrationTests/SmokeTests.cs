using System.Text.Json;
using Metering.IntegrationTests.Infrastructure;

namespace Metering.IntegrationTests;

/// <summary>
/// End to end, the way ops work: the real server process, called through server reflection with
/// <c>buf curl</c> (a grpcurl-like client). The calls are the README's examples.
/// </summary>
public sealed class SmokeTests
{
    /// <summary>The documented local key of appsettings.Development.json (every scope; Development only).</summary>
    public const string DevKey = "mtr_dev_local_key_not_secret";

    private static readonly Dictionary<string, string> WithDevKey = new() { ["authorization"] = $"Bearer {DevKey}" };

    private ServerProcess _server = null!;

    [OneTimeSetUp]
    public async Task StartServerAsync()
    {
        _server = await ServerProcess.StartAsync(ServerDll(), new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = await SharedLedger.ConnectionStringAsync(),
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
        });
    }

    [OneTimeTearDown]
    public async Task StopServerAsync() => await _server.DisposeAsync();

    [Test]
    public async Task Health_ReportsServing()
    {
        var health = await CallAsync("grpc.health.v1.Health/Check", "{}");

        Assert.That(health.GetProperty("status").GetString(), Is.EqualTo("SERVING"), _server.Output);
    }

    [Test]
    public async Task InterviewFlow_ThroughReflection_ReservesSettlesAndReports()
    {
        var subject = $"smoke-{Guid.NewGuid():N}";
        await CallAsync("metering.v1.AdminService/SetSubscription", $$"""{"subject_id":"{{subject}}","plan_id":"starter"}""");

        var check = await CallAsync(
            "metering.v1.MeteringService/CheckLimit",
            $$"""{"subject_id":"{{subject}}","usage":[{"usage_type":"minutes_per_month","amount":30},{"usage_type":"interviews_per_day","amount":1}],"reserve":true}""");
        var reservation = check.GetProperty("reservationId").GetString();
        Assert.Multiple(() =>
        {
            Assert.That(check.GetProperty("allowed").GetBoolean(), Is.True);
            Assert.That(check.GetProperty("planId").GetString(), Is.EqualTo("starter"));
            Assert.That(reservation, Does.StartWith("rsv_"));
        });

        var track = await CallAsync(
            "metering.v1.MeteringService/TrackUsage",
            $$"""{"subject_id":"{{subject}}","idempotency_key":"session-1","reservation_id":"{{reservation}}","usage":[{"usage_type":"minutes_per_month","amount":23},{"usage_type":"interviews_per_day","amount":1}]}""");
        Assert.That(track.GetProperty("duplicate").GetBoolean(), Is.False);

        var remaining = await CallAsync("metering.v1.MeteringService/GetRemaining", $$"""{"subject_id":"{{subject}}"}""");
        var minutes = remaining.GetProperty("limits").EnumerateArray().Single(l => l.GetProperty("usageType").GetString() == "minutes_per_month");
        Assert.Multiple(() =>
        {
            Assert.That(remaining.GetProperty("limits").GetArrayLength(), Is.EqualTo(4));
            Assert.That(minutes.GetProperty("used").GetString(), Is.EqualTo("23"));
            Assert.That(minutes.GetProperty("reserved").GetString(), Is.EqualTo("0"));
            Assert.That(minutes.GetProperty("remaining").GetString(), Is.EqualTo("277"));
            Assert.That(minutes.GetProperty("decision").GetString(), Is.EqualTo("DECISION_ALLOWED"));
        });
    }

    [Test]
    public async Task ListPlans_ThroughReflection_ListsTheFourPlans()
    {
        var plans = await CallAsync("metering.v1.AdminService/ListPlans", "{}");

        Assert.That(
            plans.GetProperty("plans").EnumerateArray().Select(p => p.GetProperty("planId").GetString()),
            Is.EqualTo(new[] { "free", "starter", "pro", "premium" }));
    }

    [Test]
    public async Task SupportFlow_ThroughReflection_CorrectsExplainsAndListsHistory()
    {
        var subject = $"smoke-{Guid.NewGuid():N}";
        await CallAsync("metering.v1.AdminService/SetSubscription", $$"""{"subject_id":"{{subject}}","plan_id":"pro","billing_anchor_day":15,"time_zone":"Europe/Berlin"}""");
        await CallAsync(
            "metering.v1.MeteringService/TrackUsage",
            $$"""{"subject_id":"{{subject}}","idempotency_key":"session-9f1c","usage":[{"usage_type":"minutes_per_month","amount":40},{"usage_type":"interviews_per_day","amount":1}]}""");

        var adjusted = await CallAsync(
            "metering.v1.AdminService/AdjustUsage",
            $$"""{"subject_id":"{{subject}}","usage_type":"minutes_per_month","amount":-23,"reason":"broken interview session-9f1c","idempotency_key":"refund-9f1c"}""");
        var reset = await CallAsync(
            "metering.v1.AdminService/ResetUsage",
            $$"""{"subject_id":"{{subject}}","usage_type":"interviews_per_day","reason":"support ticket 1234","idempotency_key":"reset-1234"}""");
        var events = await CallAsync("metering.v1.AdminService/ListUsageEvents", $$"""{"subject_id":"{{subject}}","page_size":20}""");
        var explained = await CallAsync("metering.v1.AdminService/ExplainUsage", $$"""{"subject_id":"{{subject}}","usage_type":"minutes_per_month"}""");
        var reconciled = await CallAsync("metering.v1.AdminService/ReconcileCounters", $$"""{"subject_id":"{{subject}}"}""");
        var changes = await CallAsync("metering.v1.AdminService/ListSubscriptionChanges", $$"""{"subject_id":"{{subject}}"}""");
        var plan = await CallAsync("metering.v1.AdminService/GetPlan", """{"plan_id":"pro"}""");
        var usageTypes = await CallAsync("metering.v1.AdminService/ListUsageTypes", "{}");

        Assert.Multiple(() =>
        {
            Assert.That(adjusted.GetProperty("limit").GetProperty("used").GetString(), Is.EqualTo("17"));
            Assert.That(reset.GetProperty("adjustedBy").GetString(), Is.EqualTo("-1"));
            Assert.That(
                events.GetProperty("events").EnumerateArray().Select(e => e.GetProperty("kind").GetString()),
                Is.EquivalentTo(new[] { "USAGE_EVENT_KIND_USAGE", "USAGE_EVENT_KIND_ADJUSTMENT", "USAGE_EVENT_KIND_RESET" }));
            Assert.That(explained.GetProperty("cacheState").GetString(), Is.EqualTo("CACHE_STATE_IN_SYNC"));
            Assert.That(explained.GetProperty("ledgerTotal").GetString(), Is.EqualTo("17"));
            Assert.That(explained.GetProperty("timeZone").GetString(), Is.EqualTo("Europe/Berlin"));
            Assert.That(reconciled.GetProperty("countersChecked").GetInt32(), Is.EqualTo(4));
            Assert.That(reconciled.TryGetProperty("repairs", out var repairs) ? repairs.GetArrayLength() : 0, Is.Zero, "nothing to repair");
            Assert.That(changes.GetProperty("changes").GetArrayLength(), Is.EqualTo(1));
            Assert.That(plan.GetProperty("plan").GetProperty("displayName").GetString(), Is.EqualTo("Pro"));
            Assert.That(usageTypes.GetProperty("usageTypes").GetArrayLength(), Is.EqualTo(4));
        });
    }

    [Test]
    public async Task BadInput_ThroughReflection_IsInvalidArgumentNamingTheField()
    {
        var result = await BufCurl.InvokeAsync(
            _server.Address,
            "metering.v1.MeteringService/TrackUsage",
            """{"subject_id":"smoke","idempotency_key":"k","usage":[{"usage_type":"minutes_per_month","amount":-3}]}""",
            WithDevKey);

        Assert.Multiple(() =>
        {
            Assert.That(result.GrpcStatusCode, Is.EqualTo(3), result.ToString());
            Assert.That(result.Stderr, Does.Contain("invalid_argument").And.Contain("usage[0].amount"));
        });
    }

    [Test]
    public async Task NoKey_ThroughReflection_IsUnauthenticated()
    {
        var result = await BufCurl.InvokeAsync(_server.Address, "metering.v1.MeteringService/GetRemaining", """{"subject_id":"smoke"}""");

        Assert.Multiple(() =>
        {
            Assert.That(result.GrpcStatusCode, Is.EqualTo(16), result.ToString());
            Assert.That(result.Stderr, Does.Contain("unauthenticated"));
        });
    }

    [Test]
    public void Production_WithoutKeys_RefusesToStartWithOneClearLine()
    {
        var error = Assert.ThrowsAsync<InvalidOperationException>(async () => await ServerProcess.StartAsync(ServerDll(), new Dictionary<string, string>
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["ConnectionStrings__Postgres"] = await SharedLedger.ConnectionStringAsync(),
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
        }))!;

        Assert.That(error.Message, Does.Contain("Metering refuses to start: no API keys are configured (Auth:ApiKeys, Auth:ApiKeysFile or Auth:ClientCertificates)"));
    }

    private async Task<JsonElement> CallAsync(string method, string json)
    {
        var result = await BufCurl.InvokeAsync(_server.Address, method, json, WithDevKey);
        Assert.That(result.Succeeded, Is.True, $"{result}\nserver output:\n{_server.Output}");
        return JsonDocument.Parse(result.Stdout).RootElement;
    }

    /// <summary>The server as built beside this test assembly (same configuration), run by its own runtime config.</summary>
    internal static string ServerDll() => ServerProcess.BuiltServerDll();
}
