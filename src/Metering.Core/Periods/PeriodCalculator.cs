using NodaTime;
using NodaTime.TimeZones;

namespace Metering.Core.Periods;

/// <summary>Computes the limit period that contains a given instant for a subscription.</summary>
/// <remarks>
/// Periods are bounded by local starts of day in the subscription's time zone. The start of a local date is its
/// local midnight or, where a transition skips midnight, the first instant of that date (as
/// <see cref="DateTimeZone.AtStartOfDay(LocalDate)"/>). Consecutive periods tile the time line without gaps or overlaps.
/// </remarks>
public static class PeriodCalculator
{
    /// <summary>The largest possible change of UTC offset at one transition (offsets lie within ±18 hours).</summary>
    private static readonly Duration MaxOffsetChange =
        Duration.FromSeconds((long)Offset.MaxValue.Seconds - Offset.MinValue.Seconds);

    /// <summary>Returns the period of the given kind that contains <paramref name="instant"/>.</summary>
    /// <param name="kind">Whether the limit resets daily or monthly.</param>
    /// <param name="instant">The instant whose period is wanted; the result satisfies <c>Start &lt;= instant &lt; End</c>.</param>
    /// <param name="zone">The subscription's time zone.</param>
    /// <param name="billingAnchorDay">
    /// The day of the month (1..31) on which monthly periods start; in a month with fewer days the period starts on the
    /// month's last day. Ignored for <see cref="ResetPeriod.Day"/>.
    /// </param>
    /// <returns>The containing period.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="zone"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="kind"/> is not a defined <see cref="ResetPeriod"/>, or it is <see cref="ResetPeriod.Month"/> and
    /// <paramref name="billingAnchorDay"/> is outside 1..31.
    /// </exception>
    public static Period Containing(ResetPeriod kind, Instant instant, DateTimeZone zone, int billingAnchorDay)
    {
        ArgumentNullException.ThrowIfNull(zone);
        return kind switch
        {
            ResetPeriod.Day => ContainingDay(instant, zone),
            ResetPeriod.Month => ContainingMonth(instant, zone, billingAnchorDay),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown reset period."),
        };
    }

    private static Period ContainingDay(Instant instant, DateTimeZone zone)
    {
        ZoneInterval interval = zone.GetZoneInterval(instant);
        LocalDate date = instant.WithOffset(interval.WallOffset).Date;
        Instant start = StartOfDay(zone, date, interval);
        Instant end = StartOfDay(zone, date.PlusDays(1), interval);

        // Only where a transition turns the clock back across midnight (e.g. America/St_Johns until 2010, 00:01 -> 23:01)
        // does the instant's local date lag behind the day that has already started.
        while (end <= instant)
        {
            date = date.PlusDays(1);
            start = end;
            end = StartOfDay(zone, date.PlusDays(1), interval);
        }

        return new Period(start, end);
    }

    private static Period ContainingMonth(Instant instant, DateTimeZone zone, int billingAnchorDay)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(billingAnchorDay, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(billingAnchorDay, 31);

        ZoneInterval interval = zone.GetZoneInterval(instant);
        LocalDate date = instant.WithOffset(interval.WallOffset).Date;
        YearMonth month = date.ToYearMonth();
        if (date < AnchorDate(month, billingAnchorDay))
        {
            month = month.PlusMonths(-1);
        }

        Instant start = StartOfDay(zone, AnchorDate(month, billingAnchorDay), interval);
        Instant end = StartOfDay(zone, AnchorDate(month.PlusMonths(1), billingAnchorDay), interval);

        // As for days: a backward transition across the anchor day's midnight.
        while (end <= instant)
        {
            month = month.PlusMonths(1);
            start = end;
            end = StartOfDay(zone, AnchorDate(month.PlusMonths(1), billingAnchorDay), interval);
        }

        return new Period(start, end);
    }

    /// <summary>The anchor day in <paramref name="month"/>, or the month's last day if the month is shorter.</summary>
    private static LocalDate AnchorDate(YearMonth month, int anchorDay) =>
        month.OnDayOfMonth(Math.Min(anchorDay, month.Calendar.GetDaysInMonth(month.Year, month.Month)));

    /// <summary>
    /// The first instant of <paramref name="date"/> in <paramref name="zone"/>: the same as
    /// <c>zone.AtStartOfDay(date).ToInstant()</c>, except that for a date skipped entirely (Pacific/Apia, 2011-12-30)
    /// it returns the first instant after it instead of throwing.
    /// </summary>
    /// <param name="zone">The time zone.</param>
    /// <param name="date">The local date.</param>
    /// <param name="hint">A zone interval near the date; if it maps the date's midnight unambiguously, no allocation is needed.</param>
    private static Instant StartOfDay(DateTimeZone zone, LocalDate date, ZoneInterval hint)
    {
        LocalDateTime midnight = date.AtMidnight();
        Instant candidate = midnight.WithOffset(hint.WallOffset).ToInstant();

        // Midnight maps to the candidate within the hint interval. It is the only mapping (so the earliest) when the
        // interval began long enough before it that no earlier offset could map midnight as well.
        bool farFromStart = !hint.HasStart || hint.Start <= candidate - MaxOffsetChange;
        bool beforeEnd = !hint.HasEnd || candidate < hint.End;
        if (farFromStart && beforeEnd)
        {
            return candidate;
        }

        ZoneLocalMapping mapping = zone.MapLocal(midnight);
        return mapping.Count == 0 ? mapping.LateInterval.Start : mapping.First().ToInstant();
    }
}
