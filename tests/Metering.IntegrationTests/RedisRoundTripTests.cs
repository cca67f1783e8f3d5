using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// What a warm read costs in Redis commands, as Redis itself sees them: <c>redis-cli MONITOR</c> on a redis-server of
/// the test's own prints every command a client sends (commands a script runs inside are marked <c>lua</c> and are not
/// the client's).
/// </summary>
[NonParallelizable]
public sealed class RedisRoundTripTests
{
    private const int Calls = 20;

    private LocalServer _redis = null!;
    private MeteringHost _host = null!;

    [SetUp]
    public async Task StartAsync()
    {
        _redis = await LocalServer.StartRedisAsync();
        // The generous test budget: a call that overran the shipped one on a busy machine would be retried from the
        // stores of record, and count commands this test is not about.
        _host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, settings: new Dictionary<string, string?>
        {
            ["ConnectionStrings:Redis"] = _redis.ConnectionString,
            ["Redis:OperationTimeout"] = TestBudgets.RedisOperationTimeout,
        });
    }

    [TearDown]
    public async Task StopAsync()
    {
        await _host.DisposeAsync();
        await _redis.DisposeAsync();
    }

    [Test]
    public async Task CheckLimit_ForASubjectThisInstanceKnows_IsOneScriptCall()
    {
        var subject = await WarmSubjectAsync();
        var request = new CheckLimitRequest { SubjectId = subject, Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } } };

        var sent = await CommandsSentDuringAsync(async () =>
        {
            for (var i = 0; i < Calls; i++)
            {
                Assert.That((await _host.Metering.CheckLimitAsync(request)).Allowed, Is.True);
            }
        });

        Assert.That(sent, Has.Count.EqualTo(Calls).And.All.EqualTo("evalsha"), string.Join(", ", sent));
    }

    [Test]
    public async Task GetRemaining_ForASubjectThisInstanceKnows_IsOneScriptCall()
    {
        var subject = await WarmSubjectAsync();
        var request = new GetRemainingRequest { SubjectId = subject };

        var sent = await CommandsSentDuringAsync(async () =>
        {
            for (var i = 0; i < Calls; i++)
            {
                Assert.That((await _host.Metering.GetRemainingAsync(request)).Degraded, Is.False);
            }
        });

        Assert.That(sent, Has.Count.EqualTo(Calls).And.All.EqualTo("evalsha"), string.Join(", ", sent));
    }

    /// <summary>A subject with usage, read once, so that this instance knows it and its counters are built.</summary>
    private async Task<string> WarmSubjectAsync()
    {
        var subject = $"rtt-{Guid.NewGuid():N}";
        await _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await _host.Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = Guid.NewGuid().ToString("N"),
            Usage = { new UsageAmount { UsageType = Minutes, Amount = 3 } },
        });
        await _host.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject });
        return subject;
    }

    /// <summary>
    /// The commands (lower case) clients sent while <paramref name="calls"/> ran, leaving out connection upkeep
    /// (PING, ECHO, INFO, CLIENT, CLUSTER) and anything a script ran inside. Waits first until the service's
    /// background work (the outbox drain of the set-up's writes) has gone quiet.
    /// </summary>
    private async Task<List<string>> CommandsSentDuringAsync(Func<Task> calls)
    {
        var lines = new ConcurrentQueue<string>();
        var start = new ProcessStartInfo("redis-cli", ["-h", "127.0.0.1", "-p", _redis.Port.ToString(CultureInfo.InvariantCulture), "monitor"])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        using var monitor = Process.Start(start) ?? throw new InvalidOperationException("redis-cli could not be started.");
        monitor.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lines.Enqueue(line);
            }
        };
        monitor.BeginOutputReadLine();
        try
        {
            // MONITOR answers OK first; then wait for a quiet half second (nothing from the set-up left to drain).
            var quietSince = Stopwatch.StartNew();
            var seen = 0;
            var deadline = Stopwatch.StartNew();
            while (quietSince.Elapsed < TimeSpan.FromMilliseconds(500) || lines.IsEmpty)
            {
                Assert.That(deadline.Elapsed, Is.LessThan(TimeSpan.FromSeconds(15)), "Redis never went quiet before the calls.");
                await Task.Delay(50);
                if (lines.Count != seen)
                {
                    seen = lines.Count;
                    quietSince.Restart();
                }
            }

            var before = lines.Count;
            await calls();
            await Task.Delay(300);
            return [.. lines.Skip(before).Select(ClientCommand).OfType<string>()];
        }
        finally
        {
            monitor.Kill();
            await monitor.WaitForExitAsync();
        }
    }

    /// <summary>The command of a MONITOR line sent by a client, or null (a script's own command, upkeep, the OK).</summary>
    private static string? ClientCommand(string line)
    {
        // 1732912345.123456 [0 127.0.0.1:51234] "EVALSHA" "..." / 1732912345.123457 [0 lua] "HGETALL" "..."
        var source = line.IndexOf('[', StringComparison.Ordinal);
        var command = line.IndexOf("] \"", StringComparison.Ordinal);
        if (source < 0 || command < 0 || line.AsSpan(source, command - source).Contains(" lua", StringComparison.Ordinal))
        {
            return null;
        }

        var name = line[(command + 3)..].Split('"')[0].ToLowerInvariant();
        return name is "ping" or "echo" or "info" or "client" or "cluster" ? null : name;
    }
}
