namespace Metering.Server.Hosting;

/// <summary>
/// The system clock moved by a fixed offset: <c>Metering:Testing:ClockOffset</c>, honoured in the Development
/// environment only, so that fault tests can run instances whose clocks differ or that cross a period boundary.
/// </summary>
internal sealed class OffsetTimeProvider(TimeSpan offset) : TimeProvider
{
    public const string Setting = "Metering:Testing:ClockOffset";

    public TimeSpan Offset { get; } = offset;

    public override DateTimeOffset GetUtcNow() => System.GetUtcNow() + Offset;

    /// <summary>The system clock, or the system clock moved by the configured offset in Development.</summary>
    public static TimeProvider For(IConfiguration configuration, IHostEnvironment environment)
    {
        var offset = configuration.GetValue<TimeSpan?>(Setting);
        return offset is { } value && value != TimeSpan.Zero && environment.IsDevelopment()
            ? new OffsetTimeProvider(value)
            : System;
    }
}
