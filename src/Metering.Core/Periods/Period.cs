using NodaTime;

namespace Metering.Core.Periods;

/// <summary>The half-open interval [<see cref="Start"/>, <see cref="End"/>) of one limit period.</summary>
/// <param name="Start">The first instant of the period (inclusive).</param>
/// <param name="End">The first instant after the period (exclusive); the start of the next period.</param>
public readonly record struct Period(Instant Start, Instant End)
{
    /// <summary>Whether <paramref name="instant"/> lies in the period: <c>Start &lt;= instant &lt; End</c>.</summary>
    /// <param name="instant">The instant to test.</param>
    /// <returns><see langword="true"/> if the instant is at or after <see cref="Start"/> and before <see cref="End"/>.</returns>
    public bool Contains(Instant instant) => Start <= instant && instant < End;

    /// <summary>The elapsed time from <see cref="Start"/> to <see cref="End"/>; 23 or 25 hours for a daily period on a DST change day.</summary>
    public Duration Length => End - Start;
}
