using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>Every log entry a host writes, kept in memory so that a test can count and read them.</summary>
public sealed class CapturedLog : ILoggerProvider
{
    private readonly ConcurrentQueue<LogLine> _lines = new();

    public IReadOnlyList<LogLine> Lines => [.. _lines];

    /// <summary>How many entries there are so far: pass it to <see cref="Since"/> to read the ones written after.</summary>
    public int Mark => _lines.Count;

    /// <summary>The entries at <paramref name="minimum"/> or above written after <paramref name="mark"/>.</summary>
    public IReadOnlyList<LogLine> Since(int mark, LogLevel minimum = LogLevel.Warning) =>
        [.. _lines.Skip(mark).Where(l => l.Level >= minimum)];

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _lines);

    public void Dispose()
    {
    }

    private sealed class Logger(string category, ConcurrentQueue<LogLine> lines) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            lines.Enqueue(new LogLine(category, logLevel, formatter(state, exception), DateTimeOffset.UtcNow));
    }
}

/// <summary>One log entry.</summary>
public sealed record LogLine(string Category, LogLevel Level, string Message, DateTimeOffset At)
{
    public override string ToString() => $"{At:HH:mm:ss.fff} {Level} {Category}: {Message}";
}
