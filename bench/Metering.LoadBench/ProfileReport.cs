using System.Globalization;
using System.Text;
using Microsoft.Diagnostics.Tracing.Etlx;

namespace Metering.LoadBench;

/// <summary>
/// Reduces one EventPipe trace (thread-time samples of the sample profiler, read with TraceEvent's
/// <see cref="TraceLog"/>) to what a reader can act on: how many samples were threads parked in a wait, a breakdown of
/// the others by area, and the top frames by exclusive and by inclusive samples.
/// </summary>
internal sealed class ProfileReport
{
    private const string IdleWait = "idle-wait (threads parked: thread pool, epoll, timers)";
    private const string Runtime = "GC+runtime and BCL (thread pool dispatch, sockets, collections, allocation)";

    /// <summary>Areas by the module a frame belongs to, the first match wins (EF Core before Npgsql).</summary>
    private static readonly (string Area, string[] Modules)[] Areas =
    [
        ("Metering code", ["Metering."]),
        ("EF Core", ["Microsoft.EntityFrameworkCore", "Npgsql.EntityFrameworkCore"]),
        ("Npgsql", ["Npgsql"]),
        ("StackExchange.Redis", ["StackExchange.Redis", "Pipelines.Sockets.Unofficial"]),
        ("gRPC+ASP.NET Core+Kestrel", ["Grpc.", "Google.Protobuf", "Microsoft.AspNetCore."]),
        ("logging, telemetry, DI, options", ["Microsoft.Extensions.", "OpenTelemetry", "Polly"]),
    ];

    /// <summary>A sample whose innermost managed frame is one of these is a thread waiting for work, not working.</summary>
    private static readonly string[] Waits =
    [
        "LowLevelLifoSemaphore.Wait", "LowLevelMonitor.Wait", "Monitor.Wait", "Monitor.ObjWait", "WaitHandle.Wait",
        "Thread.Sleep", "WaitForSocketEvents", "ManualResetEventSlim.Wait", "SemaphoreSlim.Wait", "WaitSubsystem.Wait",
    ];

    /// <summary>Async and thread-pool plumbing under every stack: left out of the inclusive list, where it would fill every row.</summary>
    private static readonly string[] Plumbing = ["System.Threading.", "System.Runtime.CompilerServices."];

    private readonly Dictionary<string, long> _exclusive = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _inclusive = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _byArea = new(StringComparer.Ordinal);

    private ProfileReport()
    {
    }

    public long Samples { get; private set; }

    public long IdleSamples { get; private set; }

    public long BusySamples => Samples - IdleSamples;

    /// <summary>Reads the thread-time samples of <paramref name="nettrace"/> taken between <paramref name="fromUtc"/> and <paramref name="toUtc"/>.</summary>
    public static ProfileReport Read(string nettrace, DateTime fromUtc, DateTime toUtc)
    {
        var report = new ProfileReport();
        var etlx = TraceLog.CreateFromEventPipeDataFile(nettrace, Path.ChangeExtension(nettrace, ".etlx"));
        using (var log = new TraceLog(etlx))
        {
            foreach (var sample in log.Events)
            {
                if (sample.ProviderName != "Microsoft-DotNETCore-SampleProfiler" || sample.TimeStamp.ToUniversalTime() is var at && (at < fromUtc || at > toUtc))
                {
                    continue;
                }

                var frames = Frames(sample.CallStack());
                if (frames.Count > 0)
                {
                    report.Add(frames);
                }
            }
        }

        File.Delete(etlx);
        return report;
    }

    /// <summary>The report as Markdown: the area breakdown and the two top lists, in percent of the busy samples.</summary>
    public string ToMarkdown(int top)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"{Samples:N0} thread samples in the measured window; {Percent(IdleSamples, Samples)} of them idle-wait (threads parked), left out below: the percentages are of the {BusySamples:N0} busy samples.");
        text.AppendLine();
        text.AppendLine("| area (innermost frame outside the BCL) | busy samples |");
        text.AppendLine("|---|---:|");
        foreach (var (area, count) in _byArea.Where(a => a.Key != IdleWait).OrderByDescending(a => a.Value))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"| {area} | {Percent(count, BusySamples)} |");
        }

        text.AppendLine();
        text.AppendLine("| exclusive (self) | busy samples | inclusive (outside thread-pool and async plumbing) | busy samples |");
        text.AppendLine("|---|---:|---|---:|");
        var exclusive = _exclusive.OrderByDescending(f => f.Value).Take(top).ToArray();
        var inclusive = _inclusive.Where(f => !Plumbing.Any(p => f.Key.Contains('!' + p, StringComparison.Ordinal))).OrderByDescending(f => f.Value).Take(top).ToArray();
        for (var i = 0; i < Math.Max(exclusive.Length, inclusive.Length); i++)
        {
            var (self, selfText) = i < exclusive.Length ? (Escape(exclusive[i].Key), Percent(exclusive[i].Value, BusySamples)) : (string.Empty, string.Empty);
            var (all, allText) = i < inclusive.Length ? (Escape(inclusive[i].Key), Percent(inclusive[i].Value, BusySamples)) : (string.Empty, string.Empty);
            text.AppendLine(CultureInfo.InvariantCulture, $"| {self} | {selfText} | {all} | {allText} |");
        }

        return text.ToString();
    }

    /// <summary>The frames of a sample, innermost first, as <c>module!Namespace.Type.Method</c>.</summary>
    private static List<string> Frames(TraceCallStack? stack)
    {
        var frames = new List<string>();
        for (; stack is not null; stack = stack.Caller)
        {
            var method = stack.CodeAddress.FullMethodName;
            if (!string.IsNullOrEmpty(method))
            {
                var parameters = method.IndexOf('(', StringComparison.Ordinal);
                frames.Add($"{stack.CodeAddress.ModuleName}!{(parameters > 0 ? method[..parameters] : method)}");
            }
        }

        return frames;
    }

    private void Add(List<string> frames)
    {
        Samples++;
        var idle = Waits.Any(w => frames[0].Contains(w, StringComparison.Ordinal));
        if (idle)
        {
            IdleSamples++;
            Count(_byArea, IdleWait);
            return;
        }

        Count(_exclusive, frames[0]);
        foreach (var frame in frames.Distinct(StringComparer.Ordinal))
        {
            Count(_inclusive, frame);
        }

        Count(_byArea, frames.Select(AreaOf).FirstOrDefault(a => a is not null) ?? Runtime);
    }

    private static string? AreaOf(string frame) =>
        Areas.FirstOrDefault(a => a.Modules.Any(m => frame.StartsWith(m, StringComparison.Ordinal))).Area;

    private static void Count(Dictionary<string, long> counts, string key) =>
        counts[key] = counts.GetValueOrDefault(key) + 1;

    private static string Percent(long part, long whole) =>
        whole == 0 ? "—" : (100.0 * part / whole).ToString("0.0", CultureInfo.InvariantCulture) + " %";

    private static string Escape(string frame) => "`" + frame.Replace("|", "\\|", StringComparison.Ordinal) + "`";
}
