using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Grpc.Core;
using Grpc.Net.Client;
using Metering.Api.V1;
using Npgsql;

namespace Metering.LoadBench;

/// <summary>
/// One benchmark run: the local stores, the EVALSHA reference server and the Release service as child processes on
/// 127.0.0.1, the two references and the five scenarios measured one after the other, one table at the end.
/// </summary>
internal static class LoadRun
{
    private const string UsageType = "minutes_per_month";
    private const string Plan = "loadbench";

    public static async Task<int> RunAsync(BenchOptions options)
    {
        var root = RepositoryRoot();
        var serverDll = Path.Combine(root, "src", "Metering.Server", "bin", "Release", "net10.0", "Metering.Server.dll");
        if (!File.Exists(serverDll))
        {
            await Console.Error.WriteLineAsync($"{serverDll} does not exist: build the server first (dotnet build src/Metering.Server -c Release).");
            return 2;
        }

        var output = Path.Combine(root, "TestResults", "loadbench");
        Progress($"callers {options.Callers}, subjects {options.Subjects}, {options.Duration.TotalSeconds:0.#} s per scenario after {options.Warmup.TotalSeconds:0.#} s of warm-up");
        var loadBefore = LoadAverage();
        var stores = await LocalStores.PrepareAsync(root);
        var run = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var apiKey = "mtr_loadbench_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

        var referencePort = ChildServer.FreePort();
        await using var reference = ChildServer.Start(
            typeof(LoadRun).Assembly.Location,
            ["serve-reference", referencePort.ToString(CultureInfo.InvariantCulture), stores.Redis],
            new Dictionary<string, string> { ["ASPNETCORE_ENVIRONMENT"] = "Production" },
            referencePort,
            Path.Combine(output, "reference-server.log"));

        var serverPort = ChildServer.FreePort();
        await using var server = ChildServer.Start(
            serverDll,
            ["--urls", $"http://127.0.0.1:{serverPort.ToString(CultureInfo.InvariantCulture)}"],
            ServerEnvironment(stores, apiKey),
            serverPort,
            Path.Combine(output, "server.log"));

        using var referenceChannel = Channel(reference.Address);
        using var serviceChannel = Channel(server.Address);
        var headers = new Metadata { { "authorization", $"Bearer {apiKey}" } };
        var referenceClient = new MeteringService.MeteringServiceClient(referenceChannel);
        var service = new MeteringService.MeteringServiceClient(serviceChannel);
        await reference.WaitUntilReadyAsync(() => referenceClient.CheckLimitAsync(Check("ready"), headers).ResponseAsync, TimeSpan.FromSeconds(60), Path.Combine(output, "reference-server.log"));
        await server.WaitUntilReadyAsync(() => service.GetRemainingAsync(new GetRemainingRequest { SubjectId = "ready" }, headers).ResponseAsync, TimeSpan.FromSeconds(120), Path.Combine(output, "server.log"));
        Progress($"service pid {server.ProcessId} on {server.Address}, EVALSHA reference pid {reference.ProcessId} on {reference.Address}");
        await using var profile = options.ProfilePath is null ? null : await RunProfile.CreateAsync(root, Path.Combine(output, "profile"), stores, server.ProcessId, reference.ProcessId);
        MeasuredWindow? window = null;

        var subjects = Enumerable.Range(0, options.Subjects).Select(i => $"lb-{run}-{i}").ToArray();
        string AnySubject() => subjects[Random.Shared.Next(subjects.Length)];
        string Key(string kind, long sequence) => $"{run}-{kind}-{sequence.ToString(CultureInfo.InvariantCulture)}";
        Task<int> ServiceConnections() => stores.ConnectionsToAsync(LocalStores.ServiceDatabase);
        var rows = new List<Row>();

        async Task<Row> MeasureAsync(string name, string unit, Func<Degraded, Task<LoopResult>> loop, Func<Task<int>>? connections, ChildServer? process, Row? against)
        {
            Progress($"{name}...");
            var _degraded = new Degraded();
            window = profile is null ? null : await profile.BeginAsync(name, process == server);
            await using var sampler = Sampler.Start(connections, process is null ? null : process.ResidentBytes);
            var result = await loop(_degraded);
            var (peakConnections, peakResident) = await sampler.StopAsync();
            var row = new Row(name, unit, result, against, peakConnections, peakResident, _degraded.Count);
            rows.Add(row);
            Progress($"  {row.Summary()}");
            if (profile is not null)
            {
                await profile.EndAsync(name, string.Create(CultureInfo.InvariantCulture, $"{result.CallsPerSecond:N0} {unit}"), window!);
            }

            return row;
        }

        Task<LoopResult> ForDuration(Func<long, Task> call) => ClosedLoop.ForDurationAsync(options.Callers, options.Warmup, options.Duration, call, window);

        // References first, while the service idles.
        var evalSha = await MeasureAsync("reference: gRPC + one EVALSHA", "calls/s",
            _ => ForDuration(_ => referenceClient.CheckLimitAsync(Check(AnySubject()), headers).ResponseAsync), null, reference, null);

        var referenceSource = new NpgsqlDataSourceBuilder(new NpgsqlConnectionStringBuilder(stores.ReferencePostgres) { MaxPoolSize = options.Callers }.ConnectionString).Build();
        await using (referenceSource)
        {
            var durable = new DurableWrite(referenceSource);
            var durableRow = await MeasureAsync("reference: durable write (event + total, one transaction)", "writes/s",
                _ => ForDuration(sequence => durable.WriteAsync(AnySubject(), Key("d", sequence), 1)),
                () => stores.ConnectionsToAsync(LocalStores.ReferenceDatabase), null, null);

            // Every subject's first call (enrolment, counters built), not measured: the warm scenarios start from here.
            Progress($"touching {subjects.Length} subjects...");
            var touch = await ClosedLoop.ForCountAsync(options.Callers, subjects.Length, sequence => service.CheckLimitAsync(Check(subjects[sequence - 1]), headers).ResponseAsync);

            var warm = await MeasureAsync("CheckLimit, warm subject", "calls/s",
                _degraded => ForDuration(async _ => _degraded.Note((await service.CheckLimitAsync(Check(AnySubject()), headers)).Degraded)), ServiceConnections, server, evalSha);

            await MeasureAsync($"CheckLimit, cold: {options.Subjects} subjects never seen before", "calls/s", async _degraded =>
            {
                await ClosedLoop.ForCountAsync(options.Callers, Math.Min(200, options.Subjects), async sequence => _degraded.Note((await service.CheckLimitAsync(Check($"lb-{run}-warmup-cold-{sequence}"), headers)).Degraded));
                return await ClosedLoop.ForCountAsync(options.Callers, options.Subjects, async sequence => _degraded.Note((await service.CheckLimitAsync(Check($"lb-{run}-cold-{sequence}"), headers)).Degraded), window);
            }, ServiceConnections, server, warm);

            await MeasureAsync("GetRemaining", "calls/s",
                _degraded => ForDuration(async _ => _degraded.Note((await service.GetRemainingAsync(new GetRemainingRequest { SubjectId = AnySubject(), UsageTypes = { UsageType } }, headers)).Degraded)),
                ServiceConnections, server, evalSha);

            await MeasureAsync("TrackUsage, unique idempotency keys", "calls/s",
                _ => ForDuration(sequence => service.TrackUsageAsync(Track(AnySubject(), Key("t", sequence)), headers).ResponseAsync),
                ServiceConnections, server, durableRow);

            await MeasureAsync("session: CheckLimit reserve, then TrackUsage settling it", "sessions/s",
                _degraded => ForDuration(async sequence =>
                {
                    var subject = AnySubject();
                    var check = Check(subject);
                    check.Reserve = true;
                    check.RequestId = Key("r", sequence);
                    var hold = await service.CheckLimitAsync(check, headers).ResponseAsync.ConfigureAwait(false);
                    _degraded.Note(hold.Degraded);
                    if (!hold.Allowed || hold.ReservationId.Length == 0)
                    {
                        throw new BenchCallException("reserve refused");
                    }

                    var settle = Track(subject, Key("s", sequence));
                    settle.ReservationId = hold.ReservationId;
                    await service.TrackUsageAsync(settle, headers).ResponseAsync.ConfigureAwait(false);
                }),
                ServiceConnections, server, durableRow);

            if (touch.Errors.Count > 0)
            {
                rows.Add(new Row("(touching the subjects before the warm scenarios)", "calls/s", touch, null, null, null, null));
            }
        }

        var load = $"load average {loadBefore} before the run, {LoadAverage()} after it";
        var table = Table(rows, options, $"{await stores.DescribeAsync()}; {await stores.LedgerSizeAsync()}", load);
        Console.WriteLine();
        Console.WriteLine(table);
        if (options.TablePath is { } path)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            await File.WriteAllTextAsync(path, table);
        }

        if (profile is not null && options.ProfilePath is { } profilePath)
        {
            var profileText = profile.ToMarkdown(string.Create(CultureInfo.InvariantCulture, $"Profiled run: {options.Callers} callers over {options.Subjects} subjects, {options.Duration.TotalSeconds:0.#} s per scenario after {options.Warmup.TotalSeconds:0.#} s of warm-up, on {Cpu()}, {Environment.ProcessorCount} cores; {load}; run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC. Traces: `{Path.GetRelativePath(root, Path.Combine(output, "profile"))}/*.nettrace`."));
            Console.WriteLine(profileText);
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(profilePath))!);
            await File.WriteAllTextAsync(profilePath, profileText);
        }

        var failed = rows.Sum(r => r.Result.Errors.Values.Sum());
        if (failed > 0)
        {
            await Console.Error.WriteLineAsync($"{failed} call(s) failed; see the errors column (server log: {Path.Combine(output, "server.log")}).");
            return 1;
        }

        return 0;
    }

    private static Dictionary<string, string> ServerEnvironment(LocalStores stores, string apiKey) => new()
    {
        ["ASPNETCORE_ENVIRONMENT"] = "Production",
        ["ConnectionStrings__Postgres"] = stores.ServicePostgres,
        ["ConnectionStrings__Redis"] = stores.Redis,
        ["Metering__MigrateOnStart"] = "true",
        ["HttpApi__Port"] = "0",
        ["Metrics__Port"] = "0",
        ["Logging__LogLevel__Default"] = "Warning",
        ["Auth__ApiKeys__loadbench__Hash"] = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(apiKey))),
        ["Auth__ApiKeys__loadbench__Scopes"] = "metering.check metering.track metering.read",
        ["Auth__ApiKeys__loadbench__RequestsPerSecond"] = "1000000",
        ["Auth__ApiKeys__loadbench__Burst"] = "1000000",
        // A plan whose limits the run cannot exhaust (appended to the seeded catalog), every new subject's default.
        ["Metering__DefaultPlanId"] = Plan,
        ["Catalog__Plans__4__Id"] = Plan,
        ["Catalog__Plans__4__DisplayName"] = "Load benchmark",
        ["Catalog__Plans__4__Rank"] = "4",
        ["Catalog__Plans__4__Limits__minutes_per_month"] = "1000000000000",
        ["Catalog__Plans__4__Limits__interviews_per_day"] = "1000000000000",
        ["Catalog__Plans__4__Limits__detailed_analysis_per_month"] = "0",
        ["Catalog__Plans__4__Limits__video_review_per_month"] = "0",
    };

    private static CheckLimitRequest Check(string subject) => new() { SubjectId = subject, Usage = { new UsageAmount { UsageType = UsageType, Amount = 1 } } };

    private static TrackUsageRequest Track(string subject, string key) => new() { SubjectId = subject, IdempotencyKey = key, Usage = { new UsageAmount { UsageType = UsageType, Amount = 1 } } };

    /// <summary>One HTTP/2 channel per target, the same settings for the service and the reference.</summary>
    private static GrpcChannel Channel(Uri address) => GrpcChannel.ForAddress(address, new GrpcChannelOptions
    {
        HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true },
    });

    /// <summary>The 1-minute load average (/proc/loadavg): how much else the machine ran beside the benchmark.</summary>
    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";

    private static string Table(List<Row> rows, BenchOptions options, string stores, string load)
    {
        var text = new StringBuilder();
        text.AppendLine("| scenario | rate | p50 ms | p99 ms | ratio to its reference | errors by status | degraded answers | PostgreSQL connections (peak) | RSS MB (peak) |");
        text.AppendLine("|---|---:|---:|---:|---|---|---:|---:|---:|");
        foreach (var row in rows)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"| {row.Name} | {row.Result.CallsPerSecond:N0} {row.Unit} | {row.Result.P50Ms:0.0} | {row.Result.P99Ms:0.0} | {row.RatioText()} | {row.ErrorsText()} | {row.DegradedText()} | {row.Connections?.ToString(CultureInfo.InvariantCulture) ?? "—"} | {(row.Resident is { } bytes ? (bytes / 1048576.0).ToString("0", CultureInfo.InvariantCulture) : "—")} |");
        }

        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"{options.Callers} callers over {options.Subjects} subjects, {options.Duration.TotalSeconds:0.#} s per scenario after {options.Warmup.TotalSeconds:0.#} s of warm-up (the cold scenario: {options.Subjects} calls after 200 unrecorded ones), all on 127.0.0.1.");
        text.AppendLine(CultureInfo.InvariantCulture, $"Machine: {Cpu()}, {Environment.ProcessorCount} cores, {MemoryGiB()} GiB RAM, {RuntimeInformation.OSDescription}; .NET {Environment.Version}; {stores}; {load}; run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.");
        return text.ToString();
    }

    private static string Cpu() =>
        File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU"
            : "unknown CPU";

    private static string MemoryGiB()
    {
        var line = File.Exists("/proc/meminfo") ? File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)) : null;
        return line is null ? "?" : (long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1048576.0).ToString("0", CultureInfo.InvariantCulture);
    }

    private static string RepositoryRoot()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var directory = new DirectoryInfo(start); directory is not null; directory = directory.Parent)
            {
                if (File.Exists(Path.Combine(directory.FullName, "Metering.sln")))
                {
                    return directory.FullName;
                }
            }
        }

        throw new InvalidOperationException("Could not find the repository root (a folder with Metering.sln).");
    }

    private static void Progress(string message) => Console.Error.WriteLine($"bench-load: {message}");

    private sealed record Row(string Name, string Unit, LoopResult Result, Row? Reference, int? Connections, long? Resident, long? Degraded)
    {
        /// <summary>Answers flagged degraded (decided without Redis, from the ledger); "—" for calls that carry no flag.</summary>
        public string DegradedText() => Degraded?.ToString(CultureInfo.InvariantCulture) ?? "—";

        public string RatioText() => Reference is null
            ? "—"
            : string.Create(CultureInfo.InvariantCulture, $"{Result.CallsPerSecond / Reference.Result.CallsPerSecond:0.00} × {ReferenceName(Reference)}");

        /// <summary>How a ratio names what it is measured against: one of the two references, or another scenario (cold against warm).</summary>
        private static string ReferenceName(Row reference) => reference.Name.StartsWith("reference: ", StringComparison.Ordinal)
            ? (reference.Unit == "writes/s" ? "durable write" : "EVALSHA")
            : reference.Name;

        public string ErrorsText() => Result.Errors.Count == 0
            ? "0"
            : string.Join(", ", Result.Errors.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => $"{e.Key} {e.Value.ToString(CultureInfo.InvariantCulture)}"));

        public string Summary() => string.Create(CultureInfo.InvariantCulture, $"{Result.CallsPerSecond:N0} {Unit}, p50 {Result.P50Ms:0.0} ms, p99 {Result.P99Ms:0.0} ms, {RatioText()}, errors {ErrorsText()}, degraded {DegradedText()}, connections {Connections?.ToString(CultureInfo.InvariantCulture) ?? "—"}, RSS {(Resident is { } b ? (b / 1048576.0).ToString("0", CultureInfo.InvariantCulture) : "—")} MB");
    }
}

/// <summary>Counts answers flagged degraded (the service answered without Redis), among those that carry the flag.</summary>
internal sealed class Degraded
{
    private long _noted;
    private long _degraded;

    /// <summary>The degraded answers, or null when no answer of the scenario carries the flag.</summary>
    public long? Count => Interlocked.Read(ref _noted) == 0 ? null : Interlocked.Read(ref _degraded);

    public void Note(bool isDegraded)
    {
        Interlocked.Increment(ref _noted);
        if (isDegraded)
        {
            Interlocked.Increment(ref _degraded);
        }
    }
}
