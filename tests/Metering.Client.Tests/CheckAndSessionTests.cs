using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Metering.Client.Tests;

/// <summary>Checks and sessions against the real server process: its answers, and the fail policy when it is gone.</summary>
public sealed class CheckAndSessionTests
{
    private const string Minutes = "minutes_per_month";
    private const string Interviews = "interviews_per_day";
    private const string Analysis = "detailed_analysis_per_month";

    private MeteringServer _server = null!;

    [OneTimeSetUp]
    public async Task StartAsync() => _server = await MeteringServer.StartAsync();

    [OneTimeTearDown]
    public async Task StopAsync() => await _server.DisposeAsync();

    [Test]
    [CancelAfter(90_000)]
    public async Task CheckAsync_DuringAnOutage_FollowsEachUsageTypesFailPolicy_AndLogsOncePerOutage()
    {
        var own = await MeteringServer.StartAsync();
        await using var _ = own;
        await using var host = await ClientHost.StartAsync(own.Address, configure: options =>
        {
            options.FailPolicies[Minutes] = FailPolicy.Allow;
            options.FailPolicies[Analysis] = FailPolicy.Deny;
        });
        var subject = $"outage-{Guid.NewGuid():N}";

        var before = await host.Client.CheckAsync(new CheckRequest(subject, new Usage(Minutes, 5)));
        await own.KillAsync();
        var watch = Stopwatch.StartNew();
        var open = new List<CheckResult>();
        for (var i = 0; i < 5; i++)
        {
            open.Add(await host.Client.CheckAsync(new CheckRequest(subject, new Usage(Minutes, 5))));
        }

        var closed = await host.Client.CheckAsync(new CheckRequest(subject, new Usage(Analysis, 1)));
        var mixed = await host.Client.CheckAsync(new CheckRequest(subject, new Usage(Minutes, 5), new Usage(Analysis, 1)));
        var elapsed = watch.Elapsed;
        var outageLines = host.Logs.Lines.Count(l => l.Message.Contains("is unreachable", StringComparison.Ordinal));

        await own.RestartAsync();
        var after = await host.Client.CheckAsync(new CheckRequest(subject, new Usage(Minutes, 5)));
        for (var waited = Stopwatch.StartNew(); after.Degraded && waited.Elapsed < TimeSpan.FromSeconds(15);)
        {
            await Task.Delay(200); // the channel reconnects within its reconnect backoff (at most 5 s)
            after = await host.Client.CheckAsync(new CheckRequest(subject, new Usage(Minutes, 5)));
        }

        Assert.Multiple(() =>
        {
            Assert.That(before is { Allowed: true, Degraded: false, PlanId: "free" }, Is.True, before.ToString());
            Assert.That(open.All(r => r is { Allowed: true, Degraded: true } && r.Limits.Count == 0), Is.True, "minutes fail open");
            Assert.That(open[0].DegradedReason, Does.StartWith("Unavailable"));
            Assert.That(closed is { Allowed: false, Degraded: true }, Is.True, "detailed analyses fail closed");
            Assert.That(mixed is { Allowed: false, Degraded: true }, Is.True, "one closed line denies the whole check");
            Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(3)), "seven degraded checks answer at once");
            Assert.That(outageLines, Is.EqualTo(1), host.Logs.ToString());
            Assert.That(after is { Allowed: true, Degraded: false }, Is.True);
            Assert.That(host.Logs.ToString(), Does.Contain("answers again").And.Contain("checks were answered by their fail policy"));
        });
    }

    [Test]
    [CancelAfter(30_000)]
    public async Task CheckAsync_ServiceThatNeverAnswers_FailsByPolicyAtTheCheckDeadline()
    {
        // A listener that accepts connections and never answers: a hung service, not a refused connection.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var accepted = new List<TcpClient>();
        _ = Task.Run(async () =>
        {
            while (true)
            {
                accepted.Add(await silent.AcceptTcpClientAsync());
            }
        });
        var address = new Uri($"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}");
        await using var host = await ClientHost.StartAsync(address, configure: options =>
        {
            options.CheckTimeout = new MeteringClientOptions().CheckTimeout; // the default, 300 ms
            options.FailPolicies[Analysis] = FailPolicy.Deny;
        });

        var watch = Stopwatch.StartNew();
        var minutes = await host.Client.CheckAsync(new CheckRequest("hung-1", new Usage(Minutes, 5)));
        var analysis = await host.Client.CheckAsync(new CheckRequest("hung-1", new Usage(Analysis, 1)));
        var elapsed = watch.Elapsed;

        Assert.Multiple(() =>
        {
            Assert.That(minutes is { Allowed: true, Degraded: true }, Is.True);
            Assert.That(minutes.DegradedReason, Does.StartWith("DeadlineExceeded"));
            Assert.That(analysis is { Allowed: false, Degraded: true }, Is.True);
            Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(2)), "two checks, each bounded by the 300 ms default deadline");
        });
        foreach (var client in accepted)
        {
            client.Dispose();
        }
    }

    [Test]
    [CancelAfter(60_000)]
    public async Task Sessions_TenInParallelAgainstThreeADay_GrantExactlyThree_SettleAndRelease()
    {
        // The server's decisions are under test: a generous deadline, and no fail-open grant if one is missed anyway.
        await using var host = await ClientHost.StartAsync(_server.Address, configure: options =>
        {
            options.CheckTimeout = TimeSpan.FromSeconds(30);
            options.DefaultFailPolicy = FailPolicy.Deny;
        });
        var subject = $"sessions-{Guid.NewGuid():N}";
        await _server.SubscribeAsync(subject, "starter"); // 3 interviews a day, 300 minutes a month

        var sessions = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => host.Client.BeginSessionAsync(subject, minutes: 30, interviews: 1)));
        var allowed = sessions.Where(s => s.Allowed).ToList();
        var denied = sessions.Where(s => !s.Allowed).ToList();

        Assert.Multiple(() =>
        {
            Assert.That(allowed, Has.Count.EqualTo(3), "exactly three holds granted");
            Assert.That(allowed.All(s => s.ReservationId is not null && !s.Degraded), Is.True);
            Assert.That(denied.All(s => s.UpgradeOptions.Select(o => o.PlanId).SequenceEqual(["pro", "premium"])), Is.True, "denied with upgrade options");
            Assert.That(denied.All(s => s.Limit(Interviews)!.Decision == Decision.LimitExceeded), Is.True);
        });

        // Two sessions end with what they measured; the third is abandoned and gives its hold back.
        await allowed[0].EndAsync(actualMinutes: 23);
        await allowed[1].EndAsync(actualMinutes: 7);
        await allowed[2].DisposeAsync();
        foreach (var session in sessions)
        {
            await session.DisposeAsync(); // ended or denied sessions have nothing to release
        }

        await host.WaitUntilDeliveredAsync(TimeSpan.FromSeconds(30));
        var remaining = await host.Client.GetRemainingAsync(subject, [Minutes, Interviews]);
        var minutes = remaining.Limits.Single(l => l.UsageType == Minutes);
        var interviews = remaining.Limits.Single(l => l.UsageType == Interviews);
        var (events, _, sum) = await Ledger.TotalsAsync([subject], Minutes);
        await using var fourth = await host.Client.BeginSessionAsync(subject, minutes: 30);

        Assert.Multiple(() =>
        {
            Assert.That((minutes.Used, minutes.Reserved, minutes.Remaining), Is.EqualTo((30L, 0L, 270L)), "settled with the measured minutes, nothing left held");
            Assert.That((interviews.Used, interviews.Reserved, interviews.Remaining), Is.EqualTo((2L, 0L, 1L)), "the released session's interview is free again");
            Assert.That(remaining.PlanId, Is.EqualTo("starter"));
            Assert.That((events, sum), Is.EqualTo((2L, 30L)));
            Assert.That(fourth.Allowed, Is.True, "the released slot can be used");
        });
    }
}
