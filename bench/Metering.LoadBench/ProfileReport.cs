using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Diagnostics.Tracing.Etlx;

namespace Metering.LoadBench;

/// <summary>
/// Reduces one EventPipe trace (thread-time samples of the sample profiler, read with TraceEvent's
/// <see cref="TraceLog"/>) to what a reader can act on: how many samples were threads parked in a wait, a breakdown of
/// the others by area, and the top frames by exclusive and by inclusive samples.
/// </summary>
internal sealed partial class ProfileReport
{
    private const string IdleWait = "idle-wait (threads parked: thread pool, epoll, timers)";
    private const string Runtime = "runtime and BCL (thread pool, sockets, spinning, collections, allocation)";
    private const string Gc = "GC (threads stopped while a collection runs)";
    private const string Contention = "lock contention (waiting to enter a lock)";

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

    /// <summary>
    /// A sample whose innermost managed frame is one of these is a thread waiting for work (an idle thread-pool worker,
    /// the epoll thread, timer, file-watcher and console-logger threads, the main thread), unless it is waiting to enter a lock.
    /// </summary>
    private static readonly string[] Waits =
    [
        "LowLevelLifoSemaphore.Wait", "LowLevelMonitor.Wait", "Monitor.Wait", "WaitHandle.Wait", "Thread.Sleep",
        "ManualResetEventSlim.Wait", "SemaphoreSlim.Wait", "SocketAsyncEngine.EventLoop", "WorkerThreadStart",
        "System.IO.FileSystem.Watcher!", "ConsoleLoggerProcessor.TryDequeue",
    ];

    private static readonly string[] LockEntries = ["Monitor.Enter", "Monitor.TryEnter", "Monitor.ReliableEnter", "Lock.TryEnterSlow", "Lock.Enter"];

    /// <summary>
    /// Async and thread-pool plumbing under every stack, and the resilience pipelines around every store call: left out
    /// of the inclusive list, where they would fill every row (their own time stays in the exclusive list).
    /// </summary>
    private static readonly string[] Plumbing = ["System.Threading.", "System.Runtime.CompilerServices.", "Polly."];

    private readonly Dictionary<string, long> _exclusive = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _inclusive = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _byArea = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _underMetering = new(StringComparer.Ordinal);

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
        text.AppendLine("| area (of the innermost frame outside the BCL) | busy samples |");
        text.AppendLine("|---|---:|");
        foreach (var (area, count) in _byArea.Where(a => a.Key != IdleWait).OrderByDescending(a => a.Value))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"| {area} | {Percent(count, BusySamples)} |");
        }

        text.AppendLine();
        text.AppendLine("| innermost Metering frame (the Metering code the sample ran under) | busy samples |");
        text.AppendLine("|---|---:|");
        foreach (var (frame, count) in _underMetering.OrderByDescending(f => f.Value).Take(top / 2))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"| {Escape(frame)} | {Percent(count, BusySamples)} |");
        }

        text.AppendLine();
        text.AppendLine("| exclusive (self) | busy samples | inclusive (without thread-pool, async and Polly plumbing) | busy samples |");
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

    /// <summary>The frames of a sample, innermost first, as <c>module!Namespace.Type.Method</c> (see <see cref="MethodName"/>).</summary>
    private static List<string> Frames(TraceCallStack? stack)
    {
        var frames = new List<string>();
        for (; stack is not null; stack = stack.Caller)
        {
            var method = stack.CodeAddress.FullMethodName;
            if (!string.IsNullOrEmpty(method))
            {
                frames.Add($"{stack.CodeAddress.ModuleName}!{MethodName(method)}");
            }
        }

        return frames;
    }

    /// <summary>
    /// A method without its parameters, generic arguments and arity, an async method's state machine as the method:
    /// <c>Polly.ResiliencePipeline+&lt;ExecuteAsync&gt;d__9`2[System.__Canon,…].MoveNext(…)</c> becomes <c>Polly.ResiliencePipeline.ExecuteAsync (async)</c>.
    /// </summary>
    internal static string MethodName(string fullName)
    {
        var name = new StringBuilder();
        var depth = 0;
        foreach (var c in fullName)
        {
            if (c == '(' && depth == 0)
            {
                break;
            }

            depth += c == '[' ? 1 : c == ']' ? -1 : 0;
            if (depth == 0 && c != ']')
            {
                name.Append(c);
            }
        }

        var plain = BacktickArity().Replace(name.ToString(), string.Empty);
        plain = AsyncLambda().Replace(plain, ".$1 (lambda, async)");
        plain = AsyncLocalFunction().Replace(plain, ".$1.$2 (local function, async)");
        return AsyncStateMachine().Replace(plain, ".$1 (async)");
    }

    [GeneratedRegex("`[0-9]+")]
    private static partial Regex BacktickArity();

    [GeneratedRegex(@"\+<([^>]+)>d(?:__[0-9]+)?\.MoveNext$")]
    private static partial Regex AsyncStateMachine();

    /// <summary>An async lambda: <c>Type+&lt;&gt;c__21+&lt;&lt;RunAsync&gt;b__21_0&gt;d.MoveNext</c> (or in a <c>&lt;&gt;c__DisplayClass</c>).</summary>
    [GeneratedRegex(@"\+<>c(?:__DisplayClass)?[0-9_]*\+<<([^>]+)>b__[0-9_]+>d\.MoveNext$")]
    private static partial Regex AsyncLambda();

    /// <summary>An async local function: <c>Type+&lt;&lt;ExecuteCore&gt;g__ConvertValueTaskAsync|4_0&gt;d.MoveNext</c>.</summary>
    [GeneratedRegex(@"\+<<([^>]+)>g__([^|]+)\|[0-9_]+>d\.MoveNext$")]
    private static partial Regex AsyncLocalFunction();

    private void Add(List<string> frames)
    {
        Samples++;
        var contention = frames.Any(f => LockEntries.Any(l => f.Contains(l, StringComparison.Ordinal)));
        var idle = !contention && Waits.Any(w => frames[0].Contains(w, StringComparison.Ordinal));
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

        var area = frames[0].Contains("PollGC", StringComparison.Ordinal) ? Gc
            : contention ? Contention
            : frames.Select(AreaOf).FirstOrDefault(a => a is not null) ?? Runtime;
        Count(_byArea, area);
        Count(_underMetering, frames.FirstOrDefault(f => f.StartsWith("Metering.", StringComparison.Ordinal)) ?? "(no Metering frame on the stack)");
    }

    private static string? AreaOf(string frame) =>
        Areas.FirstOrDefault(a => a.Modules.Any(m => frame.StartsWith(m, StringComparison.Ordinal))).Area;

    private static void Count(Dictionary<string, long> counts, string key) =>
        counts[key] = counts.GetValueOrDefault(key) + 1;

    private static string Percent(long part, long whole) =>
        whole == 0 ? "—" : (100.0 * part / whole).ToString("0.0", CultureInfo.InvariantCulture) + " %";

    private static string Escape(string frame) => "`" + frame.Replace("|", "\\|", StringComparison.Ordinal) + "`";
}
