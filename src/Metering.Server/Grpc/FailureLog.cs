using System.Diagnostics;

namespace Metering.Server.Grpc;

/// <summary>
/// Logs calls that failed because a store was unavailable: the first failure of a store at once, then, while the
/// failures go on, at most one line per <see cref="Interval"/> that says how many calls failed meanwhile. An outage
/// costs a few lines, not one per call.
/// </summary>
internal sealed partial class FailureLog(ILogger<FailureLog> logger)
{
    /// <summary>The longest a store's failures go without a line while they continue.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);

    private readonly Dictionary<string, Window> _windows = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    /// <summary>A call failed with UNAVAILABLE because <paramref name="store"/> did not answer.</summary>
    public void Unavailable(string method, string store, string reason)
    {
        long suppressed;
        TimeSpan since;
        lock (_gate)
        {
            var now = Stopwatch.GetTimestamp();
            if (_windows.TryGetValue(store, out var window) && Stopwatch.GetElapsedTime(window.Started, now) < Interval)
            {
                window.Suppressed++;
                return;
            }

            suppressed = window?.Suppressed ?? 0;
            since = window is null ? TimeSpan.Zero : Stopwatch.GetElapsedTime(window.Started, now);
            _windows[store] = new Window(now);
        }

        if (suppressed == 0)
        {
            LogUnavailable(method, reason);
        }
        else
        {
            LogStillUnavailable(method, reason, suppressed, since.TotalSeconds);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Method} failed: {Reason}")]
    private partial void LogUnavailable(string method, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Method} failed: {Reason} ({Count} more calls failed the same way in the last {Seconds:0} s)")]
    private partial void LogStillUnavailable(string method, string reason, long count, double seconds);

    private sealed class Window(long started)
    {
        public long Started { get; } = started;

        public long Suppressed { get; set; }
    }
}
