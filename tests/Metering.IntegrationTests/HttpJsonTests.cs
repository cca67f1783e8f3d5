using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Metering.IntegrationTests.Infrastructure;

namespace Metering.IntegrationTests;

/// <summary>
/// HTTP/JSON (gRPC JSON transcoding) on the real server process's own HTTP port, called with a plain HttpClient over
/// HTTP/1.1: the README's routes answer, and every refusal has the HTTP status its gRPC code maps to.
/// </summary>
public sealed class HttpJsonTests
{
    private const string ReadOnlyKey = "mtr_test_http_read_only";
    private const string SlowKey = "mtr_test_http_one_per_second";

    private ServerProcess _server = null!;
    private HttpClient _http = null!;

    [OneTimeSetUp]
    public async Task StartServerAsync()
    {
        var httpPort = TcpPorts.GetFreeLoopbackPort();
        _server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = await SharedLedger.ConnectionStringAsync(),
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
            ["HttpApi__Port"] = httpPort.ToString(CultureInfo.InvariantCulture),
            ["Auth__ApiKeys__web__Hash"] = TestKeys.Hash(ReadOnlyKey),
            ["Auth__ApiKeys__web__Scopes"] = "metering.read",
            ["Auth__ApiKeys__slow__Hash"] = TestKeys.Hash(SlowKey),
            ["Auth__ApiKeys__slow__Scopes"] = "metering.read",
            ["Auth__ApiKeys__slow__RequestsPerSecond"] = "1",
            ["Auth__ApiKeys__slow__Burst"] = "1",
        });
        _http = new HttpClient
        {
            BaseAddress = new Uri($"http://127.0.0.1:{httpPort.ToString(CultureInfo.InvariantCulture)}"),
            DefaultRequestVersion = HttpVersion.Version11,
            Timeout = TimeSpan.FromSeconds(30),
        };
        await WaitForHttpPortAsync(httpPort);
    }

    [OneTimeTearDown]
    public async Task StopServerAsync()
    {
        _http.Dispose();
        await _server.DisposeAsync();
    }

    [Test]
    public async Task CheckThenRemaining_OverHttp11_AnswersAsTheGrpcCallsDo()
    {
        var subject = $"web-{Guid.NewGuid():N}";

        var (checkStatus, check) = await SendAsync(HttpMethod.Post, $"/v1/subjects/{subject}:check", SmokeTests.DevKey,
            """{"usage":[{"usage_type":"minutes_per_month","amount":20},{"usage_type":"interviews_per_day","amount":1}],"reserve":true}""");
        var (remainingStatus, remaining) = await SendAsync(HttpMethod.Get, $"/v1/subjects/{subject}/remaining?usage_types=minutes_per_month", SmokeTests.DevKey);
        var minutes = remaining.GetProperty("limits").EnumerateArray().Single();

        Assert.Multiple(() =>
        {
            Assert.That(checkStatus, Is.EqualTo(HttpStatusCode.OK), check.ToString());
            Assert.That(check.GetProperty("allowed").GetBoolean(), Is.True);
            Assert.That(check.GetProperty("reservationId").GetString(), Does.StartWith("rsv_"));
            Assert.That(remainingStatus, Is.EqualTo(HttpStatusCode.OK), remaining.ToString());
            Assert.That(remaining.GetProperty("planId").GetString(), Is.EqualTo("free"));
            Assert.That(minutes.GetProperty("reserved").GetInt64(), Is.EqualTo(20));
            Assert.That(minutes.GetProperty("remaining").GetInt64(), Is.EqualTo(10));
            Assert.That(minutes.GetProperty("level").GetString(), Is.EqualTo("USAGE_LEVEL_OK"));
        });
    }

    [Test]
    public async Task DeniedCheck_IsAnAnswerWithUpgradeOptions_NotAnError()
    {
        var (status, body) = await SendAsync(HttpMethod.Post, $"/v1/subjects/web-{Guid.NewGuid():N}:check", SmokeTests.DevKey,
            """{"usage":[{"usage_type":"minutes_per_month","amount":45}]}""");

        Assert.Multiple(() =>
        {
            Assert.That(status, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(body.GetProperty("allowed").GetBoolean(), Is.False);
            Assert.That(body.GetProperty("upgradeOptions").EnumerateArray().Select(o => o.GetProperty("planId").GetString()), Is.EqualTo(new[] { "starter", "pro", "premium" }));
        });
    }

    [Test]
    public async Task AdminReads_AnswerOnTheirRoutes()
    {
        var subject = $"web-{Guid.NewGuid():N}";
        var (plansStatus, plans) = await SendAsync(HttpMethod.Get, "/v1/plans", ReadOnlyKey);
        var (planStatus, plan) = await SendAsync(HttpMethod.Get, "/v1/plans/pro", ReadOnlyKey);
        var (typesStatus, types) = await SendAsync(HttpMethod.Get, "/v1/usage-types", ReadOnlyKey);
        var (subscriptionStatus, subscription) = await SendAsync(HttpMethod.Get, $"/v1/subjects/{subject}/subscription", ReadOnlyKey);
        var (changesStatus, changes) = await SendAsync(HttpMethod.Get, $"/v1/subjects/{subject}/subscription-changes", ReadOnlyKey);
        var (eventsStatus, _) = await SendAsync(HttpMethod.Get, $"/v1/subjects/{subject}/events?page_size=10", ReadOnlyKey);
        var (explainStatus, explain) = await SendAsync(HttpMethod.Get, $"/v1/subjects/{subject}/usage/minutes_per_month:explain", ReadOnlyKey);

        Assert.Multiple(() =>
        {
            Assert.That(new[] { plansStatus, planStatus, typesStatus, subscriptionStatus, changesStatus, eventsStatus, explainStatus }, Is.All.EqualTo(HttpStatusCode.OK));
            Assert.That(plans.GetProperty("plans").GetArrayLength(), Is.EqualTo(4));
            Assert.That(plan.GetProperty("plan").GetProperty("displayName").GetString(), Is.EqualTo("Pro"));
            Assert.That(types.GetProperty("usageTypes").GetArrayLength(), Is.EqualTo(4));
            Assert.That(subscription.GetProperty("subscription").GetProperty("planId").GetString(), Is.EqualTo("free"));
            Assert.That(changes.GetProperty("changes").GetArrayLength(), Is.EqualTo(1));
            Assert.That(explain.GetProperty("cacheState").GetString(), Is.Not.Empty);
        });
    }

    [Test]
    public async Task Refusals_MapToTheirHttpStatus_WithTheGrpcStatusAsJson()
    {
        var subject = $"web-{Guid.NewGuid():N}";
        var (invalid, invalidBody) = await SendAsync(HttpMethod.Post, $"/v1/subjects/{subject}:check", SmokeTests.DevKey, """{"usage":[{"usage_type":"minutes_per_month","amount":-1}]}""");
        var (noKey, noKeyBody) = await SendAsync(HttpMethod.Get, $"/v1/subjects/{subject}/remaining", apiKey: null);
        var (wrongKey, _) = await SendAsync(HttpMethod.Get, $"/v1/subjects/{subject}/remaining", "mtr_not_a_key");
        var (noScope, noScopeBody) = await SendAsync(HttpMethod.Post, $"/v1/subjects/{subject}:check", ReadOnlyKey, """{"usage":[{"usage_type":"minutes_per_month","amount":1}]}""");
        var (notFound, notFoundBody) = await SendAsync(HttpMethod.Get, "/v1/plans/no-such-plan", ReadOnlyKey);
        var (first, _) = await SendAsync(HttpMethod.Get, "/v1/plans", SlowKey);
        var (limited, limitedBody) = await SendAsync(HttpMethod.Get, "/v1/plans", SlowKey);

        Assert.Multiple(() =>
        {
            Assert.That(invalid, Is.EqualTo(HttpStatusCode.BadRequest), invalidBody.ToString());
            Assert.That(invalidBody.GetProperty("code").GetInt32(), Is.EqualTo(3));
            Assert.That(invalidBody.ToString(), Does.Contain("usage[0].amount"), "the BadRequest detail names the field");
            Assert.That(noKey, Is.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(noKeyBody.GetProperty("code").GetInt32(), Is.EqualTo(16));
            Assert.That(wrongKey, Is.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(noScope, Is.EqualTo(HttpStatusCode.Forbidden));
            Assert.That(noScopeBody.ToString(), Does.Contain("MISSING_SCOPE").And.Contain("metering.check"));
            Assert.That(notFound, Is.EqualTo(HttpStatusCode.NotFound), notFoundBody.ToString());
            Assert.That(notFoundBody.GetProperty("code").GetInt32(), Is.EqualTo(5));
            Assert.That(first, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(limited, Is.EqualTo(HttpStatusCode.TooManyRequests));
            Assert.That(limitedBody.ToString(), Does.Contain("RATE_LIMITED"));
        });
    }

    [Test]
    public async Task OpenApiDocument_DescribesTheRoutes()
    {
        using var response = await _http.GetAsync(new Uri("/openapi/v1.json", UriKind.Relative));
        var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        var paths = document.GetProperty("paths").EnumerateObject().Select(p => p.Name).ToList();

        Assert.Multiple(() =>
        {
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(paths, Does.Contain("/v1/subjects/{subjectId}/remaining"));
            Assert.That(paths, Does.Contain("/v1/subjects/{subjectId}:check"));
            Assert.That(paths, Does.Contain("/v1/plans"));
        });
    }

    [Test]
    public async Task GrpcPort_StillServesGrpc_AndTheHttpPortIsItsOwn()
    {
        var subject = $"web-{Guid.NewGuid():N}";
        var grpc = await BufCurl.InvokeAsync(_server.Address, "metering.v1.MeteringService/GetRemaining", $$"""{"subject_id":"{{subject}}"}""",
            new Dictionary<string, string> { ["authorization"] = $"Bearer {SmokeTests.DevKey}" });

        Assert.Multiple(() =>
        {
            Assert.That(grpc.Succeeded, Is.True, grpc.ToString());
            Assert.That(_http.BaseAddress!.Port, Is.Not.EqualTo(_server.Port));
        });
    }

    private async Task<(HttpStatusCode Status, JsonElement Body)> SendAsync(HttpMethod method, string path, string? apiKey, string? json = null)
    {
        using var request = new HttpRequestMessage(method, new Uri(path, UriKind.Relative));
        if (apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }

        if (json is not null)
        {
            request.Content = new StringContent(json, Encoding.UTF8, "application/json");
        }

        using var response = await _http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.That(response.Content.Headers.ContentType?.MediaType, Is.EqualTo("application/json"), $"{(int)response.StatusCode}: {text}\n{_server.Output}");
        return (response.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }

    private static async Task WaitForHttpPortAsync(int port)
    {
        for (var attempt = 0; attempt < 100 && !await TcpPorts.CanConnectAsync("127.0.0.1", port, TimeSpan.FromSeconds(1)); attempt++)
        {
            await Task.Delay(100);
        }
    }
}
