using System.Diagnostics;
using System.IO.Compression;
using Google.Protobuf;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// Thousands of random, mutated and malformed requests (fixed seed, bounded in count and time) against the real server
/// over a real loopback HTTP/2 connection. The service must keep answering, answer only the codes a caller can cause,
/// never INTERNAL or UNKNOWN, and its ledger and counters must hold exactly what the accepted calls recorded.
/// </summary>
public sealed class HostileInputTests
{
    private const int Seed = 20261128;
    private const int MaxRequests = 3000;
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(120);

    private static readonly Dictionary<string, string> Key = new() { ["authorization"] = $"Bearer {SmokeTests.DevKey}" };

    private static readonly string[] Paths =
    [
        "/metering.v1.MeteringService/CheckLimit",
        "/metering.v1.MeteringService/TrackUsage",
        "/metering.v1.MeteringService/GetRemaining",
        "/metering.v1.MeteringService/ReleaseReservation",
        "/metering.v1.AdminService/ListPlans",
        "/metering.v1.AdminService/GetSubscription",
        "/metering.v1.AdminService/SetSubscription",
    ];

    /// <summary>What a caller can cause with a well-formed frame: OK, bad input, no key, limits, key reuse, not in plan.</summary>
    private static readonly int[] CallerCodes =
    [
        (int)StatusCode.OK, (int)StatusCode.InvalidArgument, (int)StatusCode.Unauthenticated, (int)StatusCode.ResourceExhausted,
        (int)StatusCode.AlreadyExists, (int)StatusCode.PermissionDenied,
    ];

    private ServerProcess _server = null!;

    [OneTimeSetUp]
    public async Task StartServerAsync()
    {
        _server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = await SharedLedger.ConnectionStringAsync(),
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
            ["Auth__ApiKeys__local-dev__RequestsPerSecond"] = "1000000",
            ["Logging__LogLevel__Default"] = "Warning",
        });
    }

    [OneTimeTearDown]
    public async Task StopServerAsync() => await _server.DisposeAsync();

    [Test]
    [CancelAfter(300_000)]
    public async Task Fuzz_RandomMutatedAndMalformedRequests_OnlyCallerCodesAndExactLedger(CancellationToken cancellationToken)
    {
        var rng = new Random(Seed);
        var prefix = $"fz{Guid.NewGuid():N}"[..12];
        string[] pool = [$"{prefix}-a", $"{prefix}-b", $"{prefix}-c"];
        using var raw = new RawGrpc(_server.Address);
        foreach (var subject in pool)
        {
            var set = await raw.CallAsync(Paths[6], RawGrpc.Frame(new SetSubscriptionRequest { SubjectId = subject, PlanId = "premium" }.ToByteArray()), Key, cancellationToken);
            Assert.That(set.GrpcStatus, Is.Zero, set.Message);
        }

        var expected = new Dictionary<(string Subject, string UsageType), long>();
        var pastEvents = new HashSet<string>(StringComparer.Ordinal);
        var sentValidTracks = new List<byte[]>();
        var codes = new Dictionary<string, int>();
        var failures = new List<string>();
        var watch = Stopwatch.StartNew();
        var sent = 0;
        for (; sent < MaxRequests && watch.Elapsed < Budget; sent++)
        {
            var kind = rng.Next(100);
            var path = Paths[rng.Next(Paths.Length)];
            byte[] body;
            IReadOnlyDictionary<string, string> headers = Key;
            string family;
            int[] allowed;
            if (kind < 25)
            {
                family = "valid";
                var message = ValidRequest(rng, path, pool, prefix);
                body = RawGrpc.Frame(message.ToByteArray());
                allowed = [(int)StatusCode.OK];
                if (message is TrackUsageRequest)
                {
                    sentValidTracks.Add(body);
                }
            }
            else if (kind < 30 && sentValidTracks.Count > 0)
            {
                family = "retry";
                path = Paths[1];
                body = sentValidTracks[rng.Next(sentValidTracks.Count)];
                allowed = [(int)StatusCode.OK];
            }
            else if (kind < 55)
            {
                family = "mutated";
                body = RawGrpc.Frame(Mutate(rng, ValidRequest(rng, path, pool, prefix).ToByteArray()));
                allowed = CallerCodes;
            }
            else if (kind < 65)
            {
                family = "random-bytes";
                var bytes = new byte[rng.Next(0, 200)];
                rng.NextBytes(bytes);
                body = RawGrpc.Frame(bytes);
                allowed = CallerCodes;
            }
            else if (kind < 80)
            {
                family = "bad-frame";
                (body, headers, allowed) = BadFrame(rng, ValidRequest(rng, path, pool, prefix).ToByteArray());
            }
            else if (kind < 90)
            {
                family = "bad-key";
                body = RawGrpc.Frame(ValidRequest(rng, path, pool, prefix).ToByteArray());
                headers = BadKey(rng);
                allowed = [(int)StatusCode.Unauthenticated];
            }
            else
            {
                family = "bad-field";
                path = Paths[1];
                body = RawGrpc.Frame(BadTrack(rng, pool).ToByteArray());
                allowed = [(int)StatusCode.InvalidArgument];
            }

            RawGrpcResult result;
            try
            {
                result = await raw.CallAsync(path, body, headers, cancellationToken);
            }
            catch (HttpRequestException ex)
            {
                failures.Add($"#{sent} {family} {path}: the connection failed: {ex.Message}");
                continue;
            }

            var code = result.GrpcStatus ?? -1;
            codes[$"{family} {(StatusCode)code}"] = codes.GetValueOrDefault($"{family} {(StatusCode)code}") + 1;
            if (!allowed.Contains(code))
            {
                failures.Add($"#{sent} {family} {path}: {(StatusCode)code} {result.Message}");
            }

            if (code == 0 && path == Paths[1])
            {
                var request = TrackUsageRequest.Parser.ParseFrom(Unframe(body));
                var response = TrackUsageResponse.Parser.ParseFrom(result.ResponsePayload);
                if (family == "retry" && !response.Duplicate)
                {
                    failures.Add($"#{sent} retry of a recorded TrackUsage was not answered duplicate");
                }

                if (!response.Duplicate)
                {
                    foreach (var usage in request.Usage)
                    {
                        expected[(request.SubjectId, usage.UsageType)] = expected.GetValueOrDefault((request.SubjectId, usage.UsageType)) + usage.Amount;
                    }

                    if (request.OccurredAt is not null)
                    {
                        pastEvents.Add(request.SubjectId);
                    }
                }
            }
        }

        TestContext.Out.WriteLine($"{sent} requests in {watch.Elapsed.TotalSeconds:0.0} s:\n  {string.Join("\n  ", codes.OrderBy(c => c.Key).Select(c => $"{c.Key}: {c.Value}"))}");
        Assert.That(failures, Is.Empty, $"{failures.Count} unexpected outcomes; server output:\n{Tail(_server.Output)}");
        Assert.That(sent, Is.GreaterThanOrEqualTo(1000), "the budget allowed too few requests to mean anything");

        // Still serving, and the ledger and the counters hold exactly what the accepted calls recorded.
        var ledger = await LedgerTotalsAsync(prefix, expected.Keys.Select(k => k.Subject));
        Assert.That(ledger, Is.EquivalentTo(expected.Where(e => e.Value != 0)), "ledger totals per subject and usage type");
        foreach (var subject in expected.Keys.Select(k => k.Subject).Distinct().Where(s => !pastEvents.Contains(s)))
        {
            var remaining = await raw.CallAsync(Paths[2], RawGrpc.Frame(new GetRemainingRequest { SubjectId = subject }.ToByteArray()), Key, cancellationToken);
            Assert.That(remaining.GrpcStatus, Is.Zero, remaining.Message);
            foreach (var limit in GetRemainingResponse.Parser.ParseFrom(remaining.ResponsePayload).Limits)
            {
                Assert.That(limit.Used, Is.EqualTo(expected.GetValueOrDefault((subject, limit.UsageType))), $"counter {subject} {limit.UsageType}");
            }
        }
    }

    [TestCase("0S")]
    [TestCase("0n")]
    [TestCase("1n")]
    public async Task TrackUsage_WhoseDeadlineHasPassed_IsDeadlineExceededAndRecordsNothing(string timeout)
    {
        using var raw = new RawGrpc(_server.Address);
        var subject = $"late-{Guid.NewGuid():N}";
        var request = new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "k", Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } } };

        var late = await raw.CallAsync(Paths[1], RawGrpc.Frame(request.ToByteArray()), new Dictionary<string, string>(Key) { ["grpc-timeout"] = timeout });
        var remaining = await raw.CallAsync(Paths[2], RawGrpc.Frame(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } }.ToByteArray()), Key);

        Assert.Multiple(() =>
        {
            Assert.That(late.GrpcStatus, Is.EqualTo((int)StatusCode.DeadlineExceeded), late.Message);
            Assert.That(GetRemainingResponse.Parser.ParseFrom(remaining.ResponsePayload).Limits.Single().Used, Is.Zero, "nothing recorded");
        });
    }

    private static IMessage ValidRequest(Random rng, string path, string[] pool, string prefix)
    {
        var subject = pool[rng.Next(pool.Length)];
        return path switch
        {
            "/metering.v1.MeteringService/CheckLimit" => new CheckLimitRequest { SubjectId = subject, Usage = { Amounts(rng) }, Reserve = rng.Next(2) == 0 },
            "/metering.v1.MeteringService/TrackUsage" => new TrackUsageRequest
            {
                SubjectId = subject,
                IdempotencyKey = $"fz-{rng.NextInt64():x}",
                Usage = { Amounts(rng) },
                Attributes = { ["session"] = $"s{rng.Next(1000)}" },
            },
            "/metering.v1.MeteringService/GetRemaining" => new GetRemainingRequest { SubjectId = subject },
            "/metering.v1.MeteringService/ReleaseReservation" => new ReleaseReservationRequest { SubjectId = subject, ReservationId = $"rsv_{rng.Next():x}" },
            "/metering.v1.AdminService/ListPlans" => new ListPlansRequest(),
            "/metering.v1.AdminService/GetSubscription" => new GetSubscriptionRequest { SubjectId = subject },
            _ => new SetSubscriptionRequest { SubjectId = $"{prefix}-admin-{rng.Next(5)}", PlanId = rng.Next(2) == 0 ? "pro" : "starter" },
        };
    }

    private static IEnumerable<UsageAmount> Amounts(Random rng)
    {
        yield return new UsageAmount { UsageType = Minutes, Amount = rng.Next(1, 1000) };
        if (rng.Next(2) == 0)
        {
            yield return new UsageAmount { UsageType = Interviews, Amount = 1 };
        }
    }

    private static byte[] Mutate(Random rng, byte[] message)
    {
        var bytes = new List<byte>(message);
        for (var i = rng.Next(1, 4); i > 0; i--)
        {
            switch (rng.Next(5))
            {
                case 0 when bytes.Count > 0:
                    bytes[rng.Next(bytes.Count)] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1 when bytes.Count > 0:
                    bytes[rng.Next(bytes.Count)] = (byte)rng.Next(256);
                    break;
                case 2:
                    bytes.Insert(rng.Next(bytes.Count + 1), (byte)rng.Next(256));
                    break;
                case 3 when bytes.Count > 0:
                    bytes.RemoveAt(rng.Next(bytes.Count));
                    break;
                default:
                    var cut = rng.Next(bytes.Count + 1);
                    bytes.RemoveRange(cut, bytes.Count - cut);
                    break;
            }
        }

        return [.. bytes];
    }

    /// <summary>A broken gRPC frame, with the headers to send it with and the codes it may get.</summary>
    private static (byte[] Body, IReadOnlyDictionary<string, string> Headers, int[] Allowed) BadFrame(Random rng, byte[] message)
    {
        int[] invalid = [(int)StatusCode.InvalidArgument];
        var frame = RawGrpc.Frame(message);
        switch (rng.Next(9))
        {
            case 0:
                return ([], Key, invalid);
            case 1:
                return (frame[..rng.Next(1, 5)], Key, invalid);
            case 2:
                return (frame[..^1], Key, invalid);
            case 3:
                return ([.. frame, .. RawGrpc.Frame(message)], Key, invalid);
            case 4:
                frame[0] = (byte)rng.Next(2, 256);
                return (frame, Key, invalid);
            case 5:
                return (RawGrpc.Frame(message, compressed: true), Key, invalid);
            case 6:
                var garbage = new byte[rng.Next(1, 64)];
                rng.NextBytes(garbage);
                return (RawGrpc.Frame(garbage, compressed: true), new Dictionary<string, string>(Key) { ["grpc-encoding"] = "gzip" }, invalid);
            case 7:
                using (var zipped = new MemoryStream())
                {
                    using (var gzip = new GZipStream(zipped, CompressionLevel.Fastest, leaveOpen: true))
                    {
                        gzip.Write(new byte[200_000]); // a small bomb: 200 kB of zeros in a few hundred bytes
                    }

                    return (RawGrpc.Frame(zipped.ToArray(), compressed: true), new Dictionary<string, string>(Key) { ["grpc-encoding"] = "gzip" }, [(int)StatusCode.ResourceExhausted]);
                }

            default:
                var huge = new byte[5 + 70_000];
                huge[3] = 0x01; // declares 65536 + 4464 bytes
                huge[4] = 0x11;
                return (huge, Key, [(int)StatusCode.ResourceExhausted]);
        }
    }

    private static Dictionary<string, string> BadKey(Random rng) => rng.Next(5) switch
    {
        0 => [],
        1 => new() { ["authorization"] = "Bearer mtr_fuzz_unknown_key" },
        2 => new() { ["authorization"] = $"Basic {SmokeTests.DevKey}" },
        3 => new() { ["authorization"] = $"Bearer {SmokeTests.DevKey}x" },
        _ => new() { ["authorization"] = "Bearer " },
    };

    private static TrackUsageRequest BadTrack(Random rng, string[] pool)
    {
        var request = new TrackUsageRequest { SubjectId = pool[rng.Next(pool.Length)], IdempotencyKey = $"bad-{rng.NextInt64():x}", Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } } };
        switch (rng.Next(10))
        {
            case 0:
                request.Usage[0].Amount = long.MaxValue;
                break;
            case 1:
                request.Usage[0].Amount = long.MinValue;
                break;
            case 2:
                request.Usage[0].Amount = 1_000_000_001;
                break;
            case 3:
                request.SubjectId = new string('x', 129);
                break;
            case 4:
                request.SubjectId = "a\u0000b";
                break;
            case 5:
                request.Attributes["k"] = "nul\u0000here";
                break;
            case 6:
                request.Attributes["bad key!"] = "v";
                break;
            case 7:
                request.IdempotencyKey = "has space";
                break;
            case 8:
                for (var i = 0; i < 17; i++)
                {
                    request.Usage.Add(new UsageAmount { UsageType = $"t{i}", Amount = 1 });
                }

                break;
            default:
                request.Usage[0].UsageType = "tokens\u0007";
                break;
        }

        return request;
    }

    private static byte[] Unframe(byte[] frame) => frame[5..];

    private static async Task<Dictionary<(string Subject, string UsageType), long>> LedgerTotalsAsync(string prefix, IEnumerable<string> subjects)
    {
        await using var connection = new NpgsqlConnection(await SharedLedger.ConnectionStringAsync());
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT subject_id, usage_type, SUM(amount)::bigint FROM usage_event_lines WHERE subject_id LIKE @p OR subject_id = ANY(@s) GROUP BY 1, 2",
            connection);
        command.Parameters.AddWithValue("p", prefix + "%");
        command.Parameters.AddWithValue("s", subjects.Distinct().ToArray());
        var totals = new Dictionary<(string, string), long>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            totals[(reader.GetString(0), reader.GetString(1))] = reader.GetInt64(2);
        }

        return totals;
    }

    private static string Tail(string output) => output.Length <= 8000 ? output : output[^8000..];
}
