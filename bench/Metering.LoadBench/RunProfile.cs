using System.Globalization;
using System.Text;

namespace Metering.LoadBench;

/// <summary>
/// The profile of one run (<c>--profile</c>): for every scenario, the CPU-seconds per second of each process the run
/// involves over its measured window, and for the service's scenarios a dotnet-trace of the service over that window,
/// reduced to its top frames (<see cref="ProfileReport"/>).
/// </summary>
internal sealed class RunProfile : IAsyncDisposable
{
    private const int TopFrames = 15;
    private readonly string _root;
    private readonly string _directory;
    private readonly int _servicePid;
    private readonly CpuSplit _cpu;
    private readonly List<Scenario> _scenarios = [];
    private TraceCapture? _trace;

    private RunProfile(string root, string directory, int servicePid, int referencePid, int postgresPid, int redisPid)
    {
        _root = root;
        _directory = directory;
        _servicePid = servicePid;
        _cpu = new CpuSplit(
        [
            new("Metering server", () => servicePid, false),
            new("EVALSHA reference", () => referencePid, false),
            new("PostgreSQL (all its processes)", () => postgresPid, true),
            new("redis-server", () => redisPid, false),
            new("load client (the benchmark)", () => Environment.ProcessId, false),
            new("dotnet-trace", () => _trace?.ProcessId, true),
        ]);
    }

    public static async Task<RunProfile> CreateAsync(string root, string directory, LocalStores stores, int servicePid, int referencePid)
    {
        var (postgres, redis) = await stores.ProcessIdsAsync().ConfigureAwait(false);
        return new RunProfile(root, directory, servicePid, referencePid, postgres, redis);
    }

    /// <summary>Starts a scenario: a window to measure, and a trace when it loads the service (<paramref name="traceService"/>).</summary>
    public async Task<MeasuredWindow> BeginAsync(string scenario, bool traceService)
    {
        if (traceService)
        {
            _trace = await TraceCapture.StartAsync(_root, _servicePid, Path.Combine(_directory, FileName(scenario) + ".nettrace")).ConfigureAwait(false);
        }

        return new MeasuredWindow(_cpu);
    }

    /// <summary>Ends a scenario: stops its trace and reduces the part of it inside the window.</summary>
    public async Task EndAsync(string scenario, string rate, MeasuredWindow window)
    {
        ProfileReport? report = null;
        if (_trace is { } trace)
        {
            await trace.StopAsync().ConfigureAwait(false);
            await trace.DisposeAsync().ConfigureAwait(false);
            _trace = null;
            report = ProfileReport.Read(trace.Path, window.OpenedUtc, window.ClosedUtc);
        }

        var cpu = window.AtOpen is { } from && window.AtClose is { } to ? CpuSplit.Rates(from, to) : [];
        _scenarios.Add(new Scenario(scenario, rate, cpu, report));
    }

    public string ToMarkdown(string run)
    {
        var text = new StringBuilder();
        text.AppendLine(run);
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"CPU-seconds per second over each scenario's measured window ({Environment.ProcessorCount} cores: at most {Environment.ProcessorCount}.0); \"rest of the machine\" is everything else running on it meanwhile:");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"| scenario | rate under the profiler | {string.Join(" | ", _cpu.Names.SkipLast(1))} | rest of the machine | whole machine |");
        text.AppendLine(CultureInfo.InvariantCulture, $"|---|---:|{string.Concat(Enumerable.Repeat("---:|", _cpu.Names.Count + 1))}");
        foreach (var scenario in _scenarios.Where(s => s.Cpu.Length > 0))
        {
            var rest = scenario.Cpu[^1] - scenario.Cpu.SkipLast(1).Sum();
            var cells = scenario.Cpu.SkipLast(1).Append(Math.Max(0, rest)).Append(scenario.Cpu[^1]).Select(c => c.ToString("0.00", CultureInfo.InvariantCulture));
            text.AppendLine(CultureInfo.InvariantCulture, $"| {scenario.Name} | {scenario.Rate} | {string.Join(" | ", cells)} |");
        }

        foreach (var scenario in _scenarios.Where(s => s.Report is not null))
        {
            text.AppendLine();
            text.AppendLine(CultureInfo.InvariantCulture, $"#### {scenario.Name} ({scenario.Rate} under the profiler)");
            text.AppendLine();
            text.Append(scenario.Report!.ToMarkdown(TopFrames));
        }

        return text.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        if (_trace is not null)
        {
            await _trace.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static string FileName(string scenario) =>
        new string([.. scenario.ToLowerInvariant().Select(c => char.IsAsciiLetterOrDigit(c) ? c : '-')]).Trim('-') is var name && name.Length > 48 ? name[..48] : name;

    private sealed record Scenario(string Name, string Rate, double[] Cpu, ProfileReport? Report);
}
