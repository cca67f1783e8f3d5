using System.Diagnostics;
using Metering.Testing;

namespace Metering.Client.Tests;

/// <summary>Tracking through the spool against the real server process, which crashes and comes back.</summary>
public sealed class SpoolDeliveryTests
{
    private const string Minutes = "minutes_per_month";
    private const string Interviews = "interviews_per_day";

    [Test]
    [CancelAfter(120_000)]
    public async Task TrackAsync_ServerKilledMidRunAndRestarted_All200SessionsRecordedExactlyOnce()
    {
        await using var server = await MeteringServer.StartAsync();
        await using var host = await ClientHost.StartAsync(server.Address);
        var prefix = $"crash-{Guid.NewGuid():N}"[..20];
        var subjects = Enumerable.Range(0, 10).Select(i => $"{prefix}-{i}").ToArray();
        var expectedMinutes = 0L;
        var slowest = TimeSpan.Zero;

        for (var i = 0; i < 200; i++)
        {
            if (i == 70)
            {
                await server.KillAsync(); // deliveries are in flight: some may have committed without their answer arriving
            }

            var minutes = 1 + (i % 7);
            expectedMinutes += minutes;
            var watch = Stopwatch.StartNew();
            var receipt = await host.Client.TrackAsync(new TrackRequest(subjects[i % subjects.Length], $"session-{i}", new Usage(Minutes, minutes), new Usage(Interviews, 1)));
            slowest = watch.Elapsed > slowest ? watch.Elapsed : slowest;
            Assert.That(receipt.Spooled, Is.True);
            if (i < 70)
            {
                await Task.Delay(5); // let the worker deliver part of the first sessions before the crash
            }
        }

        Assert.That(host.SpoolRecords(), Is.Positive, "the sessions tracked while the server was down wait in the spool");
        await server.RestartAsync();
        await host.WaitUntilDeliveredAsync(TimeSpan.FromSeconds(60));

        var (events, keys, sum) = await Ledger.TotalsAsync(subjects, Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(events, Is.EqualTo(200), "every session recorded");
            Assert.That(keys, Is.EqualTo(200), "each once");
            Assert.That(sum, Is.EqualTo(expectedMinutes), "with its minutes, counted once");
            Assert.That(host.DeadLetters(), Is.Zero, host.Logs.ToString());
            Assert.That(slowest, Is.LessThan(TimeSpan.FromSeconds(1)), "TrackAsync returns once spooled, whatever the server does");
            Assert.That(host.Logs.Lines.Count(l => l.Message.Contains("is unreachable", StringComparison.Ordinal)), Is.EqualTo(1), host.Logs.ToString());
        });
    }

    [Test]
    [CancelAfter(120_000)]
    public async Task Spool_NonEmptyWhenTheProcessStops_IsDeliveredAfterTheRestart()
    {
        var prefix = $"restart-{Guid.NewGuid():N}"[..20];
        var subjects = new[] { $"{prefix}-a", $"{prefix}-b" };
        var spool = ClientHost.NewSpoolDirectory();

        // The first run: Metering is not reachable (nothing listens at the address), so everything stays spooled.
        var nowhere = new Uri($"http://127.0.0.1:{TcpPorts.GetFreeLoopbackPort()}");
        await using (var first = await ClientHost.StartAsync(nowhere, spool))
        {
            for (var i = 0; i < 25; i++)
            {
                var receipt = await first.Client.TrackAsync(new TrackRequest(subjects[i % 2], $"restart-{i}", new Usage(Minutes, 2)));
                Assert.That(receipt.Spooled, Is.True);
            }

            Assert.That(first.SpoolRecords(), Is.EqualTo(25));
        }

        Assert.That(ClientHost.SpoolScalar(spool, "SELECT COUNT(*) FROM spool"), Is.EqualTo(25), "the spool outlives the process");

        // The next run, with Metering up, delivers what the first one left.
        await using var server = await MeteringServer.StartAsync();
        await using var second = await ClientHost.StartAsync(server.Address, spool);
        await second.WaitUntilDeliveredAsync(TimeSpan.FromSeconds(60));

        var (events, keys, sum) = await Ledger.TotalsAsync(subjects, Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(events, Is.EqualTo(25));
            Assert.That(keys, Is.EqualTo(25));
            Assert.That(sum, Is.EqualTo(50));
        });
    }

    [Test]
    [CancelAfter(60_000)]
    public async Task Spool_RecordTheServiceRefusesForGood_GoesToTheDeadLettersAndTheRestFlows()
    {
        await using var server = await MeteringServer.StartAsync();
        await using var host = await ClientHost.StartAsync(server.Address);
        var subject = $"dead-{Guid.NewGuid():N}";

        await host.Client.TrackAsync(new TrackRequest(subject, "bad", new Usage("no_such_usage_type", 1)));
        await host.Client.TrackAsync(new TrackRequest(subject, "good", new Usage(Minutes, 3)));
        await host.WaitUntilDeliveredAsync(TimeSpan.FromSeconds(30));

        var (events, _, sum) = await Ledger.TotalsAsync([subject], Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(events, Is.EqualTo(1));
            Assert.That(sum, Is.EqualTo(3));
            Assert.That(host.DeadLetters(), Is.EqualTo(1));
            Assert.That(host.Logs.ToString(), Does.Contain("Gave up delivering Track").And.Contain("InvalidArgument"));
        });
    }

    [Test]
    [CancelAfter(60_000)]
    public async Task TrackNowAsync_ReturnsTheAnswer_AndARetryWithTheSameKeyIsADuplicate()
    {
        await using var server = await MeteringServer.StartAsync();
        await using var host = await ClientHost.StartAsync(server.Address);
        var subject = $"now-{Guid.NewGuid():N}";
        var request = new TrackRequest(subject, "session-1", new Usage(Minutes, 12)) { OccurredAt = DateTimeOffset.UtcNow };

        var first = await host.Client.TrackNowAsync(request);
        var again = await host.Client.TrackNowAsync(request);
        var conflict = Assert.ThrowsAsync<MeteringException>(async () =>
            await host.Client.TrackNowAsync(request with { Usage = [new Usage(Minutes, 13)] }))!;

        Assert.Multiple(() =>
        {
            Assert.That(first.Duplicate, Is.False);
            Assert.That(first.Limits.Single().Used, Is.EqualTo(12));
            Assert.That(first.Limits.Single().Remaining, Is.EqualTo(18), "free plan: 30 minutes");
            Assert.That(again.Duplicate, Is.True);
            Assert.That(conflict.Code, Is.EqualTo(MeteringErrorCode.AlreadyExists));
        });
    }
}
