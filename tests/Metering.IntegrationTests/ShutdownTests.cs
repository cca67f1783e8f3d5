using System.Collections.Concurrent;
using System.Diagnostics;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// SIGTERM under load against the real server process: readiness turns NOT_SERVING at once, calls keep being answered
/// during the shutdown delay, calls in flight finish, the process exits 0, no call failed before the signal, and every
/// acknowledged TrackUsage is in the ledger.
/// </summary>
public sealed class ShutdownTests
{
    private const int Workers = 8;

    [Test]
    public async Task Sigterm_UnderLoad_DrainsAndKeepsEveryAcknowledgedCall()
    {
        if (OperatingSystem.IsWindows())
        {
            Assert.Ignore("POSIX signals only.");
        }

        var ledger = await SharedLedger.ConnectionStringAsync();
        var environment = new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = ledger,
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
            ["Metering__ShutdownDelay"] = "00:00:01.500",
            ["Metering__DrainTimeout"] = "00:00:20",
        };
        foreach (var (key, value) in TestKeys.Settings)
        {
            environment[key.Replace(":", "__", StringComparison.Ordinal)] = value!;
        }

        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), environment);
        using var channel = GrpcChannel.ForAddress(server.Address, new GrpcChannelOptions { HttpHandler = new BearerHandler(TestKeys.All, new SocketsHttpHandler()) });
        var client = new MeteringService.MeteringServiceClient(channel);
        var health = new Health.HealthClient(channel);
        var run = Guid.NewGuid().ToString("N");
        var clock = Stopwatch.StartNew();
        var acknowledged = new ConcurrentBag<(string Subject, string Key)>();
        var failures = new ConcurrentBag<(TimeSpan At, StatusCode Code, string Detail)>();
        long sigtermAt = long.MaxValue;

        async Task WorkerAsync(int worker)
        {
            var subject = $"drain-{run}-{worker}";
            for (var i = 0; clock.Elapsed < TimeSpan.FromSeconds(60); i++)
            {
                var key = $"k{i}";
                try
                {
                    await client.TrackUsageAsync(
                        new TrackUsageRequest { SubjectId = subject, IdempotencyKey = key, Usage = { new UsageAmount { UsageType = Minutes, Amount = 1 } } },
                        deadline: DateTime.UtcNow.AddSeconds(10));
                    acknowledged.Add((subject, key));
                }
                catch (RpcException e)
                {
                    failures.Add((clock.Elapsed, e.StatusCode, e.Status.Detail));
                    return; // the server is going away: this worker is done
                }
            }
        }

        var load = Enumerable.Range(0, Workers).Select(w => Task.Run(() => WorkerAsync(w))).ToArray();
        while (acknowledged.Count < 4 * Workers && failures.IsEmpty && clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            await Task.Delay(50); // warmed up and under load
        }

        await Task.Delay(TimeSpan.FromMilliseconds(500));
        var beforeSignal = acknowledged.Count;
        Interlocked.Exchange(ref sigtermAt, clock.Elapsed.Ticks);
        Assert.That(server.Signal(Signals.Terminate), Is.True, "SIGTERM sent");

        await Task.Delay(TimeSpan.FromMilliseconds(300));
        var readiness = await health.CheckAsync(new HealthCheckRequest { Service = "readiness" });
        var duringDelay = acknowledged.Count;

        var exited = await server.WaitForExitAsync(TimeSpan.FromSeconds(40));
        await Task.WhenAll(load);
        var signalled = TimeSpan.FromTicks(Interlocked.Read(ref sigtermAt));

        var acks = acknowledged.ToList();
        var missing = await MissingFromLedgerAsync(ledger, acks);
        await TestContext.Out.WriteLineAsync(
            $"acknowledged: {beforeSignal} before SIGTERM, {acks.Count} in all; failed after it: {failures.Count} ({string.Join(", ", failures.Select(f => f.Code).Distinct())})");
        Assert.Multiple(() =>
        {
            Assert.That(exited, Is.True, $"the server exited within the drain time. Output:\n{server.Output}");
            Assert.That(server.ExitCode, Is.Zero, server.Output);
            Assert.That(readiness.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.NotServing), "readiness right after SIGTERM");
            Assert.That(beforeSignal, Is.GreaterThan(Workers), "load ran before the signal");
            Assert.That(duringDelay, Is.GreaterThan(beforeSignal), "calls were still answered during the shutdown delay");
            Assert.That(failures.Where(f => f.At < signalled), Is.Empty, "no call failed before the signal");
            Assert.That(failures.Select(f => f.Code), Is.All.EqualTo(StatusCode.Unavailable), "calls after the listener closed fail as UNAVAILABLE (retry elsewhere)");
            Assert.That(missing, Is.Empty, $"every one of the {acks.Count} acknowledged TrackUsage calls is in the ledger");
            Assert.That(server.Output, Does.Contain("Stopping: health is NOT_SERVING"));
        });
    }

    private static async Task<List<(string Subject, string Key)>> MissingFromLedgerAsync(string ledger, List<(string Subject, string Key)> acknowledged)
    {
        await using var connection = new NpgsqlConnection(ledger);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT subject_id, idempotency_key FROM usage_events WHERE subject_id = ANY(@subjects)", connection);
        command.Parameters.AddWithValue("subjects", acknowledged.Select(a => a.Subject).Distinct().ToArray());
        var stored = new HashSet<(string, string)>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            stored.Add((reader.GetString(0), reader.GetString(1)));
        }

        return [.. acknowledged.Where(a => !stored.Contains(a))];
    }
}
