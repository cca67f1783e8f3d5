using System.Text.Json;
using Grpc.Net.Client;
using Metering.Api.V1;
using Metering.IntegrationTests;
using Metering.IntegrationTests.Infrastructure;

// Outside the Metering.IntegrationTests namespace on purpose: its [SetUpFixture] starts PostgreSQL and Redis, which the
// embedded storage does not need.
namespace Metering.EmbeddedTests;

/// <summary>
/// The real server process on the embedded storage (<c>Storage:Backend=embedded</c>, what <c>make run</c> serves on),
/// with no PostgreSQL or Redis anywhere: the README's examples through reflection with <c>buf curl</c>, a restart that
/// keeps what was acknowledged, a second process on the same file refused, and reserves decided exactly.
/// </summary>
[NonParallelizable]
public sealed class EmbeddedStorageTests
{
    private static readonly Dictionary<string, string> WithDevKey = new() { ["authorization"] = $"Bearer {SmokeTests.DevKey}" };

    private string _directory = null!;
    private ServerProcess _server = null!;

    private string DatabasePath => Path.Combine(_directory, "metering.db");

    [OneTimeSetUp]
    public async Task StartServerAsync()
    {
        _directory = Path.Combine(Path.GetTempPath(), $"metering-embedded-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_directory);
        _server = await StartAsync();
    }

    [OneTimeTearDown]
    public async Task StopServerAsync()
    {
        await _server.DisposeAsync();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // Left in the temp folder; nothing depends on it.
        }
    }

    [Test]
    [Order(1)]
    public async Task ReadmeExamples_OnEmbedded_AnswerThroughReflection()
    {
        var check = await CallAsync(
            "metering.v1.MeteringService/CheckLimit",
            """{"subject_id":"user-42","usage":[{"usage_type":"minutes_per_month","amount":30},{"usage_type":"interviews_per_day","amount":1}],"reserve":true}""");
        var reservation = check.GetProperty("reservationId").GetString();
        var track = $$"""{"subject_id":"user-42","idempotency_key":"session-9f1c","reservation_id":"{{reservation}}","usage":[{"usage_type":"minutes_per_month","amount":23},{"usage_type":"interviews_per_day","amount":1}]}""";
        var first = await CallAsync("metering.v1.MeteringService/TrackUsage", track);
        var retry = await CallAsync("metering.v1.MeteringService/TrackUsage", track);
        var remaining = await CallAsync("metering.v1.MeteringService/GetRemaining", """{"subject_id":"user-42"}""");
        var plans = await CallAsync("metering.v1.AdminService/ListPlans", "{}");
        var health = await CallAsync("grpc.health.v1.Health/Check", "{}");

        var minutes = remaining.GetProperty("limits").EnumerateArray().Single(l => l.GetProperty("usageType").GetString() == "minutes_per_month");
        Assert.Multiple(() =>
        {
            Assert.That(check.GetProperty("allowed").GetBoolean(), Is.True);
            Assert.That(check.GetProperty("planId").GetString(), Is.EqualTo("free"));
            Assert.That(reservation, Does.StartWith("rsv_"));
            Assert.That(first.GetProperty("duplicate").GetBoolean(), Is.False);
            Assert.That(retry.GetProperty("duplicate").GetBoolean(), Is.True, "the retry with the same key counts once");
            Assert.That(minutes.GetProperty("used").GetString(), Is.EqualTo("23"));
            Assert.That(minutes.GetProperty("reserved").GetString(), Is.EqualTo("0"), "the hold was settled");
            Assert.That(minutes.GetProperty("remaining").GetString(), Is.EqualTo("7"));
            Assert.That(
                plans.GetProperty("plans").EnumerateArray().Select(p => p.GetProperty("planId").GetString()),
                Is.EqualTo(new[] { "free", "starter", "pro", "premium" }),
                "the catalog is seeded from the same Catalog section as on PostgreSQL");
            Assert.That(health.GetProperty("status").GetString(), Is.EqualTo("SERVING"));
            Assert.That(_server.Output, Does.Contain("Storage backend: embedded"));
        });

        // The README's last example: a subscription change takes effect on the next call.
        var moved = await CallAsync(
            "metering.v1.AdminService/SetSubscription",
            """{"subject_id":"user-42","plan_id":"pro","billing_anchor_day":15,"time_zone":"Europe/Berlin"}""");
        var after = await CallAsync("metering.v1.MeteringService/GetRemaining", """{"subject_id":"user-42"}""");
        Assert.Multiple(() =>
        {
            Assert.That(moved.GetProperty("subscription").GetProperty("planId").GetString(), Is.EqualTo("pro"));
            Assert.That(after.GetProperty("planId").GetString(), Is.EqualTo("pro"));
            Assert.That(
                after.GetProperty("limits").EnumerateArray().Single(l => l.GetProperty("usageType").GetString() == "minutes_per_month").GetProperty("used").GetString(),
                Is.EqualTo("23"),
                "the event counts in the period of the new calendar");
        });
    }

    [Test]
    [Order(2)]
    public async Task ParallelReserves_AgainstThreeADay_GrantExactlyThree()
    {
        var subject = $"parallel-{Guid.NewGuid():N}";
        await CallAsync("metering.v1.AdminService/SetSubscription", $$"""{"subject_id":"{{subject}}","plan_id":"starter"}""");
        using var channel = GrpcChannel.ForAddress(_server.Address, new GrpcChannelOptions { HttpHandler = new BearerHandler(SmokeTests.DevKey, new SocketsHttpHandler()) });
        var client = new MeteringService.MeteringServiceClient(channel);

        var answers = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => client.CheckLimitAsync(
            new CheckLimitRequest { SubjectId = subject, Reserve = true, Usage = { new UsageAmount { UsageType = "interviews_per_day", Amount = 1 } } },
            deadline: DateTime.UtcNow.AddSeconds(30)).ResponseAsync));
        var remaining = await client.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject });

        var interviews = remaining.Limits.Single(l => l.UsageType == "interviews_per_day");
        Assert.Multiple(() =>
        {
            Assert.That(answers.Count(a => a.Allowed), Is.EqualTo(3), "the starter plan allows 3 interviews a day");
            Assert.That(answers.Where(a => a.Allowed).Select(a => a.ReservationId).Distinct().Count(), Is.EqualTo(3));
            Assert.That(answers.Where(a => !a.Allowed).All(a => a.ReservationId.Length == 0), Is.True);
            Assert.That(interviews.Reserved, Is.EqualTo(3));
            Assert.That(interviews.Remaining, Is.Zero);
        });
    }

    [Test]
    [Order(3)]
    public async Task SecondProcess_OnTheSameFile_IsRefusedWithOneClearLine()
    {
        var second = await ServerProcess.RunToEndAsync(
            SmokeTests.ServerDll(), ["--urls", "http://127.0.0.1:0"], Environment(), _directory, TimeSpan.FromSeconds(90));

        Assert.Multiple(() =>
        {
            Assert.That(second.ExitCode, Is.EqualTo(2), second.Output);
            Assert.That(second.Output, Does.Contain($"Metering cannot start: the embedded database {DatabasePath} is in use by another process"));
            Assert.That(_server.HasExited, Is.False, "the first process keeps serving");
        });
    }

    [Test]
    [Order(4)]
    public async Task Restart_AfterAKill_KeepsWhatWasAcknowledged()
    {
        var subject = $"restart-{Guid.NewGuid():N}";
        var track = $$"""{"subject_id":"{{subject}}","idempotency_key":"before-kill","usage":[{"usage_type":"minutes_per_month","amount":11}]}""";
        await CallAsync("metering.v1.MeteringService/TrackUsage", track);
        var held = await CallAsync(
            "metering.v1.MeteringService/CheckLimit",
            $$"""{"subject_id":"{{subject}}","usage":[{"usage_type":"minutes_per_month","amount":5}],"reserve":true}""");
        Assert.That(held.GetProperty("allowed").GetBoolean(), Is.True);

        // Killed, not stopped: nothing gets a chance to flush on the way out.
        await _server.DisposeAsync();
        _server = await StartAsync();

        var retry = await CallAsync("metering.v1.MeteringService/TrackUsage", track);
        var remaining = await CallAsync("metering.v1.MeteringService/GetRemaining", $$"""{"subject_id":"{{subject}}"}""");
        var readme = await CallAsync("metering.v1.MeteringService/GetRemaining", """{"subject_id":"user-42"}""");
        var minutes = remaining.GetProperty("limits").EnumerateArray().Single(l => l.GetProperty("usageType").GetString() == "minutes_per_month");
        Assert.Multiple(() =>
        {
            Assert.That(retry.GetProperty("duplicate").GetBoolean(), Is.True, "the key recorded before the kill is still taken");
            Assert.That(minutes.GetProperty("used").GetString(), Is.EqualTo("11"));
            Assert.That(minutes.GetProperty("reserved").GetString(), Is.EqualTo("5"), "the hold outlives the process");
            Assert.That(readme.GetProperty("planId").GetString(), Is.EqualTo("pro"), "the subscription changed before the restart");
        });
    }

    private Task<ServerProcess> StartAsync() => ServerProcess.StartAsync(SmokeTests.ServerDll(), Environment(), workingDirectory: _directory);

    private Dictionary<string, string> Environment() => new()
    {
        ["Storage__Backend"] = "embedded",
        ["Storage__Embedded__Path"] = DatabasePath,

        // Whatever the test host has, this process must not use them.
        ["ConnectionStrings__Postgres"] = "",
        ["ConnectionStrings__Redis"] = "",
    };

    private async Task<JsonElement> CallAsync(string method, string json)
    {
        var result = await BufCurl.InvokeAsync(_server.Address, method, json, WithDevKey);
        Assert.That(result.Succeeded, Is.True, $"{result}\nserver output:\n{_server.Output}");
        return JsonDocument.Parse(result.Stdout).RootElement;
    }
}
