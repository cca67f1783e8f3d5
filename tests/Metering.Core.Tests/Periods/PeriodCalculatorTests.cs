using System.Globalization;
using Metering.Core.Periods;
using NodaTime;
using NodaTime.Text;
// NodaTime has a Period type of its own.
using Period = Metering.Core.Periods.Period;

namespace Metering.Core.Tests.Periods;

/// <summary>
/// Tests for <see cref="PeriodCalculator"/>, <see cref="Period"/> and <see cref="TimeZones"/>. Expected instants are
/// written out in UTC; the comments give the local wall time and UTC offset they correspond to. The data comes from
/// the tzdb embedded in NodaTime (2026f in NodaTime 3.3.7).
/// </summary>
[TestFixture]
public sealed class PeriodCalculatorTests
{
    private static readonly Duration Tick = Duration.Epsilon;

    // ---------------------------------------------------------------- Period

    [Test]
    public void Contains_StartEndAndNeighbours_IsHalfOpen()
    {
        var period = new Period(Utc("2026-05-14T00:00:00Z"), Utc("2026-05-15T00:00:00Z"));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(period.Contains(Utc("2026-05-14T00:00:00Z")), Is.True, "Start is inside");
            Assert.That(period.Contains(Utc("2026-05-14T12:34:56Z")), Is.True, "middle is inside");
            Assert.That(period.Contains(Utc("2026-05-14T23:59:59.9999999Z")), Is.True, "last tick is inside");
            Assert.That(period.Contains(Utc("2026-05-15T00:00:00Z")), Is.False, "End is outside");
            Assert.That(period.Contains(Utc("2026-05-13T23:59:59.9999999Z")), Is.False, "tick before Start is outside");
        }
    }

    [Test]
    public void Length_OfSpringForwardDayInBerlin_Is23Hours()
    {
        // 2026-03-29 00:00 CET (+01) to 2026-03-30 00:00 CEST (+02).
        var period = new Period(Utc("2026-03-28T23:00:00Z"), Utc("2026-03-29T22:00:00Z"));

        Assert.That(period.Length, Is.EqualTo(Duration.FromHours(23)));
    }

    // ---------------------------------------------------------------- Daily: fixed offsets

    [TestCase("2026-05-14T13:45:00Z", "2026-05-14T00:00:00Z", "2026-05-15T00:00:00Z")]
    [TestCase("2026-02-28T23:59:59Z", "2026-02-28T00:00:00Z", "2026-03-01T00:00:00Z")]
    [TestCase("2028-02-29T12:00:00Z", "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z")]
    [TestCase("2026-12-31T18:00:00Z", "2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z")]
    public void Containing_DayInUtc_RunsFromUtcMidnightToNextUtcMidnight(string instant, string start, string end)
    {
        Period period = Day("UTC", Utc(instant));

        Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
    }

    // Asia/Tokyo +09: 2026-05-14T20:00Z is 2026-05-15 05:00 local; that day starts 2026-05-14 15:00Z.
    [TestCase("Asia/Tokyo", "2026-05-14T20:00:00Z", "2026-05-14T15:00:00Z", "2026-05-15T15:00:00Z")]
    // Asia/Kolkata +05:30: 2026-05-14T20:00Z is 2026-05-15 01:30 local.
    [TestCase("Asia/Kolkata", "2026-05-14T20:00:00Z", "2026-05-14T18:30:00Z", "2026-05-15T18:30:00Z")]
    // Pacific/Chatham +12:45 (standard time in May): 2026-05-14T12:00Z is 2026-05-15 00:45 local.
    [TestCase("Pacific/Chatham", "2026-05-14T12:00:00Z", "2026-05-14T11:15:00Z", "2026-05-15T11:15:00Z")]
    // Pacific/Kiritimati +14: 2026-05-14T09:59Z is 2026-05-14 23:59 local.
    [TestCase("Pacific/Kiritimati", "2026-05-14T09:59:00Z", "2026-05-13T10:00:00Z", "2026-05-14T10:00:00Z")]
    public void Containing_DayInPositiveOffsetZone_RunsBetweenLocalMidnights(string zone, string instant, string start, string end)
    {
        Period period = Day(zone, Utc(instant));

        Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
    }

    // Pacific/Honolulu -10: 2026-05-15T05:00Z is 2026-05-14 19:00 local.
    [TestCase("Pacific/Honolulu", "2026-05-15T05:00:00Z", "2026-05-14T10:00:00Z", "2026-05-15T10:00:00Z")]
    // America/Bogota -05: 2026-05-15T03:00Z is 2026-05-14 22:00 local.
    [TestCase("America/Bogota", "2026-05-15T03:00:00Z", "2026-05-14T05:00:00Z", "2026-05-15T05:00:00Z")]
    // America/Los_Angeles PDT -07: 2026-07-01T03:00Z is 2026-06-30 20:00 local.
    [TestCase("America/Los_Angeles", "2026-07-01T03:00:00Z", "2026-06-30T07:00:00Z", "2026-07-01T07:00:00Z")]
    // America/Los_Angeles PST -08: 2026-01-01T07:59:59Z is 2025-12-31 23:59:59 local.
    [TestCase("America/Los_Angeles", "2026-01-01T07:59:59Z", "2025-12-31T08:00:00Z", "2026-01-01T08:00:00Z")]
    public void Containing_DayInNegativeOffsetZone_RunsBetweenLocalMidnights(string zone, string instant, string start, string end)
    {
        Period period = Day(zone, Utc(instant));

        Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
    }

    // The instant of local midnight starting 2026-05-15, and the start of 2026-05-16.
    [TestCase("UTC", "2026-05-15T00:00:00Z", "2026-05-16T00:00:00Z")]
    [TestCase("Asia/Tokyo", "2026-05-14T15:00:00Z", "2026-05-15T15:00:00Z")] // +09
    [TestCase("Pacific/Honolulu", "2026-05-15T10:00:00Z", "2026-05-16T10:00:00Z")] // -10
    [TestCase("Asia/Kolkata", "2026-05-14T18:30:00Z", "2026-05-15T18:30:00Z")] // +05:30
    public void Containing_DayAtExactLocalMidnight_BelongsToTheNewDay(string zone, string midnight, string nextStart)
    {
        Period period = Day(zone, Utc(midnight));

        Assert.That(period, Is.EqualTo(new Period(Utc(midnight), Utc(nextStart))));
    }

    // The instant of local midnight starting 2026-05-15, and the start of 2026-05-14.
    [TestCase("UTC", "2026-05-15T00:00:00Z", "2026-05-14T00:00:00Z")]
    [TestCase("Asia/Tokyo", "2026-05-14T15:00:00Z", "2026-05-13T15:00:00Z")] // +09
    [TestCase("Pacific/Honolulu", "2026-05-15T10:00:00Z", "2026-05-14T10:00:00Z")] // -10
    [TestCase("Asia/Kolkata", "2026-05-14T18:30:00Z", "2026-05-13T18:30:00Z")] // +05:30
    public void Containing_DayOneTickBeforeLocalMidnight_BelongsToThePreviousDay(string zone, string midnight, string previousStart)
    {
        Period period = Day(zone, Utc(midnight) - Tick);

        Assert.That(period, Is.EqualTo(new Period(Utc(previousStart), Utc(midnight))));
    }

    [TestCase(0)]
    [TestCase(32)]
    [TestCase(-7)]
    public void Containing_DayWithAnchorOutsideRange_IgnoresAnchor(int anchor)
    {
        Period period = PeriodCalculator.Containing(ResetPeriod.Day, Utc("2026-05-14T13:45:00Z"), TimeZones.Get("UTC"), anchor);

        Assert.That(period, Is.EqualTo(new Period(Utc("2026-05-14T00:00:00Z"), Utc("2026-05-15T00:00:00Z"))));
    }

    // ---------------------------------------------------------------- Daily: DST

    // Europe/Berlin spring forward 02:00 CET -> 03:00 CEST: 00:00 +01 to 00:00 +02.
    [TestCase("Europe/Berlin", "2026-03-29T12:00:00Z", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 23)]
    // Europe/Berlin fall back 03:00 CEST -> 02:00 CET: 00:00 +02 to 00:00 +01.
    [TestCase("Europe/Berlin", "2026-10-25T12:00:00Z", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 25)]
    // Europe/Berlin the day before spring forward is an ordinary day at +01.
    [TestCase("Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", 24)]
    // America/New_York spring forward 02:00 EST -> 03:00 EDT: 00:00 -05 to 00:00 -04.
    [TestCase("America/New_York", "2026-03-08T12:00:00Z", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23)]
    // America/New_York fall back 02:00 EDT -> 01:00 EST: 00:00 -04 to 00:00 -05.
    [TestCase("America/New_York", "2026-11-01T12:00:00Z", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25)]
    // The repeated 01:30 on 2026-11-01 in New York: first as EDT (05:30Z), then as EST (06:30Z); both are that day.
    [TestCase("America/New_York", "2026-11-01T05:30:00Z", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25)]
    [TestCase("America/New_York", "2026-11-01T06:30:00Z", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25)]
    // Australia/Lord_Howe has a half-hour DST shift (+11 -> +10:30 on 2026-04-05): the day is 24.5 h.
    [TestCase("Australia/Lord_Howe", "2026-04-05T02:00:00Z", "2026-04-04T13:00:00Z", "2026-04-05T13:30:00Z", 24.5)]
    public void Containing_DayWithDstTransition_HasLocalMidnightBoundsAndDstLength(
        string zone, string instant, string start, string end, double hours)
    {
        Period period = Day(zone, Utc(instant));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
            Assert.That(period.Length, Is.EqualTo(Duration.FromHours(hours)));
        }
    }

    // Days of local year 2026 that are not 24 hours long, as "date:hours".
    [TestCase("UTC", new string[0])]
    [TestCase("Asia/Tokyo", new string[0])]
    [TestCase("Europe/Berlin", new[] { "2026-03-29:23", "2026-10-25:25" })]
    [TestCase("America/New_York", new[] { "2026-03-08:23", "2026-11-01:25" })]
    // Chile: clocks go back at 24:00 on Saturday 2026-04-04 and skip from 24:00 Saturday 2026-09-05 to 01:00 Sunday.
    [TestCase("America/Santiago", new[] { "2026-04-04:25", "2026-09-06:23" })]
    [TestCase("Australia/Lord_Howe", new[] { "2026-04-05:24.5", "2026-10-04:23.5" })]
    public void Containing_DaysWalkedThroughLocalYear2026_Tile365DaysWithOnlyDstDaysIrregular(string zone, string[] irregularDays)
    {
        DateTimeZone tz = TimeZones.Get(zone);
        var irregular = new List<string>();
        int days = 0;
        Period period = Day(zone, tz.AtStartOfDay(new LocalDate(2026, 1, 1)).ToInstant());
        while (period.Start.InZone(tz).Year == 2026)
        {
            days++;
            if (period.Length != Duration.FromHours(24))
            {
                irregular.Add(FormattableString.Invariant($"{period.Start.InZone(tz).Date:yyyy-MM-dd}:{period.Length.TotalHours}"));
            }

            period = Day(zone, period.End);
        }

        using (Assert.EnterMultipleScope())
        {
            Assert.That(days, Is.EqualTo(365));
            Assert.That(irregular, Is.EqualTo(irregularDays));
        }
    }

    // ---------------------------------------------------------------- Daily: midnight skipped or repeated

    // America/Santiago: 2026-09-05 24:00 -04 jumps to 2026-09-06 01:00 -03; the day starts at 01:00 -03 = 04:00Z
    // and ends at 2026-09-07 00:00 -03 = 03:00Z.
    [TestCase("America/Santiago", "2026-09-06", "2026-09-06T15:00:00Z", "2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z")]
    // Asia/Beirut: 2026-03-29 00:00 +02 jumps to 01:00 +03 = 2026-03-28T22:00Z; next midnight +03 = 21:00Z.
    [TestCase("Asia/Beirut", "2026-03-29", "2026-03-29T09:00:00Z", "2026-03-28T22:00:00Z", "2026-03-29T21:00:00Z")]
    // America/Havana: 2026-03-08 00:00 -05 jumps to 01:00 -04 = 05:00Z; next midnight -04 = 04:00Z.
    [TestCase("America/Havana", "2026-03-08", "2026-03-08T17:00:00Z", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z")]
    // America/Sao_Paulo (historical, DST abolished in 2019): 2018-11-04 00:00 -03 jumps to 01:00 -02 = 03:00Z.
    [TestCase("America/Sao_Paulo", "2018-11-04", "2018-11-04T15:00:00Z", "2018-11-04T03:00:00Z", "2018-11-05T02:00:00Z")]
    public void Containing_DayWhoseMidnightIsSkipped_StartsAtFirstValidInstantAndLasts23Hours(
        string zone, string date, string instant, string start, string end)
    {
        DateTimeZone tz = TimeZones.Get(zone);
        LocalDate localDate = LocalDatePattern.Iso.Parse(date).Value;

        Period period = Day(zone, Utc(instant));

        using (Assert.EnterMultipleScope())
        {
            // The tzdb really has no local midnight on that date, and the start of that date is 01:00.
            Assert.That(tz.MapLocal(localDate.AtMidnight()).Count, Is.Zero, "midnight is skipped");
            Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
            Assert.That(period.Start.InZone(tz).LocalDateTime, Is.EqualTo(localDate.At(new LocalTime(1, 0))));
            Assert.That(period.Length, Is.EqualTo(Duration.FromHours(23)));
        }
    }

    [Test]
    public void Containing_DayBeforeSkippedMidnightInSantiago_EndsAtFirstValidInstantOfNextDay()
    {
        // One tick before 2026-09-06T04:00Z is 2026-09-05 23:59:59.9999999 -04; that day started 00:00 -04 = 04:00Z.
        Period period = Day("America/Santiago", Utc("2026-09-06T04:00:00Z") - Tick);

        Assert.That(period, Is.EqualTo(new Period(Utc("2026-09-05T04:00:00Z"), Utc("2026-09-06T04:00:00Z"))));
    }

    [Test]
    public void Containing_DayWhenClockTurnsBackAcrossMidnight_RepeatedEveningBelongsToTheNewDay()
    {
        // America/St_Johns 2009-11-01: at 00:01 NDT (-02:30, 02:31Z) the clock went back to 2009-10-31 23:01 NST
        // (-03:30). 2009-11-01 began at 00:00 NDT = 02:30Z; 03:00Z reads 2009-10-31 23:29 NST but is after that start.
        // The day ends at 2009-11-02 00:00 NST = 03:30Z, so it lasts 25 h.
        Period repeated = Day("America/St_Johns", Utc("2009-11-01T03:00:00Z"));
        Period before = Day("America/St_Johns", Utc("2009-11-01T02:29:00Z"));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(repeated, Is.EqualTo(new Period(Utc("2009-11-01T02:30:00Z"), Utc("2009-11-02T03:30:00Z"))));
            Assert.That(before, Is.EqualTo(new Period(Utc("2009-10-31T02:30:00Z"), Utc("2009-11-01T02:30:00Z"))));
        }
    }

    [Test]
    public void Containing_DayAroundEntirelySkippedDate_DoesNotThrowAndTilesAcrossTheGap()
    {
        // Pacific/Apia skipped 2011-12-30: 2011-12-29 24:00 -10 (2011-12-30T10:00Z) became 2011-12-31 00:00 +14.
        Period lastBefore = Day("Pacific/Apia", Utc("2011-12-30T09:00:00Z"));
        Period firstAfter = Day("Pacific/Apia", Utc("2011-12-30T10:00:00Z"));

        using (Assert.EnterMultipleScope())
        {
            // 2011-12-29 00:00 -10 = 10:00Z.
            Assert.That(lastBefore, Is.EqualTo(new Period(Utc("2011-12-29T10:00:00Z"), Utc("2011-12-30T10:00:00Z"))));
            // 2011-12-31 00:00 +14 to 2012-01-01 00:00 +14.
            Assert.That(firstAfter, Is.EqualTo(new Period(Utc("2011-12-30T10:00:00Z"), Utc("2011-12-31T10:00:00Z"))));
        }
    }

    // ---------------------------------------------------------------- Monthly (UTC)

    // anchor 1
    [TestCase(1, "2026-05-14T12:00:00Z", "2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z")]
    [TestCase(1, "2026-02-28T23:59:59Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")]
    [TestCase(1, "2028-02-29T12:00:00Z", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z")]
    // anchor 15
    [TestCase(15, "2026-05-14T23:59:59Z", "2026-04-15T00:00:00Z", "2026-05-15T00:00:00Z")]
    [TestCase(15, "2026-05-15T00:00:00Z", "2026-05-15T00:00:00Z", "2026-06-15T00:00:00Z")]
    [TestCase(15, "2026-02-20T00:00:00Z", "2026-02-15T00:00:00Z", "2026-03-15T00:00:00Z")]
    // anchor 28: every month has a 28th, so February is never clamped
    [TestCase(28, "2026-02-27T12:00:00Z", "2026-01-28T00:00:00Z", "2026-02-28T00:00:00Z")]
    [TestCase(28, "2026-02-28T12:00:00Z", "2026-02-28T00:00:00Z", "2026-03-28T00:00:00Z")]
    [TestCase(28, "2028-02-29T12:00:00Z", "2028-02-28T00:00:00Z", "2028-03-28T00:00:00Z")]
    // anchor 29: clamped to Feb 28 in 2026, exact Feb 29 in 2028
    [TestCase(29, "2026-02-27T12:00:00Z", "2026-01-29T00:00:00Z", "2026-02-28T00:00:00Z")]
    [TestCase(29, "2026-02-28T12:00:00Z", "2026-02-28T00:00:00Z", "2026-03-29T00:00:00Z")]
    [TestCase(29, "2026-03-28T12:00:00Z", "2026-02-28T00:00:00Z", "2026-03-29T00:00:00Z")]
    [TestCase(29, "2028-02-28T12:00:00Z", "2028-01-29T00:00:00Z", "2028-02-29T00:00:00Z")]
    [TestCase(29, "2028-02-29T12:00:00Z", "2028-02-29T00:00:00Z", "2028-03-29T00:00:00Z")]
    // anchor 30: clamped in February only
    [TestCase(30, "2027-02-27T12:00:00Z", "2027-01-30T00:00:00Z", "2027-02-28T00:00:00Z")]
    [TestCase(30, "2027-02-28T12:00:00Z", "2027-02-28T00:00:00Z", "2027-03-30T00:00:00Z")]
    [TestCase(30, "2028-02-28T12:00:00Z", "2028-01-30T00:00:00Z", "2028-02-29T00:00:00Z")]
    [TestCase(30, "2028-02-29T12:00:00Z", "2028-02-29T00:00:00Z", "2028-03-30T00:00:00Z")]
    [TestCase(30, "2026-04-30T12:00:00Z", "2026-04-30T00:00:00Z", "2026-05-30T00:00:00Z")]
    // anchor 31: clamped in every 30-day month and in February
    [TestCase(31, "2026-02-10T12:00:00Z", "2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z")]
    [TestCase(31, "2026-03-30T23:59:59Z", "2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z")]
    [TestCase(31, "2026-04-15T12:00:00Z", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z")]
    [TestCase(31, "2026-04-30T12:00:00Z", "2026-04-30T00:00:00Z", "2026-05-31T00:00:00Z")]
    [TestCase(31, "2026-06-30T12:00:00Z", "2026-06-30T00:00:00Z", "2026-07-31T00:00:00Z")]
    [TestCase(31, "2026-09-15T12:00:00Z", "2026-08-31T00:00:00Z", "2026-09-30T00:00:00Z")]
    [TestCase(31, "2026-11-30T00:00:00Z", "2026-11-30T00:00:00Z", "2026-12-31T00:00:00Z")]
    [TestCase(31, "2027-02-28T12:00:00Z", "2027-02-28T00:00:00Z", "2027-03-31T00:00:00Z")]
    [TestCase(31, "2028-02-10T12:00:00Z", "2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z")]
    [TestCase(31, "2028-02-29T12:00:00Z", "2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z")]
    public void Containing_MonthInUtc_StartsOnAnchorDayClampedToMonthEnd(int anchor, string instant, string start, string end)
    {
        Period period = Month("UTC", anchor, Utc(instant));

        Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
    }

    [TestCase(1, "2026-12-31T23:59:59.9999999Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")]
    [TestCase(1, "2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z")]
    [TestCase(15, "2026-12-20T12:00:00Z", "2026-12-15T00:00:00Z", "2027-01-15T00:00:00Z")]
    [TestCase(15, "2027-01-10T12:00:00Z", "2026-12-15T00:00:00Z", "2027-01-15T00:00:00Z")]
    [TestCase(31, "2026-12-31T00:00:00Z", "2026-12-31T00:00:00Z", "2027-01-31T00:00:00Z")]
    [TestCase(31, "2027-01-05T12:00:00Z", "2026-12-31T00:00:00Z", "2027-01-31T00:00:00Z")]
    public void Containing_MonthAcrossYearEnd_RollsOverFromDecemberToJanuary(int anchor, string instant, string start, string end)
    {
        Period period = Month("UTC", anchor, Utc(instant));

        Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
    }

    [TestCase(15, "2026-05-15T00:00:00Z", "2026-04-15T00:00:00Z", "2026-06-15T00:00:00Z")]
    [TestCase(31, "2026-04-30T00:00:00Z", "2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z")]
    [TestCase(29, "2026-02-28T00:00:00Z", "2026-01-29T00:00:00Z", "2026-03-29T00:00:00Z")]
    public void Containing_MonthAtBoundaryInstant_StartsNewPeriodAndTickBeforeBelongsToOldOne(
        int anchor, string boundary, string previousStart, string nextEnd)
    {
        Period atBoundary = Month("UTC", anchor, Utc(boundary));
        Period tickBefore = Month("UTC", anchor, Utc(boundary) - Tick);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(atBoundary, Is.EqualTo(new Period(Utc(boundary), Utc(nextEnd))));
            Assert.That(tickBefore, Is.EqualTo(new Period(Utc(previousStart), Utc(boundary))));
        }
    }

    [Test]
    public void Containing_MonthsWithAnchor31WalkedThroughAYear_ReturnToThe31stAfterEveryClampedMonth()
    {
        string[] expectedStarts =
        [
            "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31", "2026-06-30", "2026-07-31",
            "2026-08-31", "2026-09-30", "2026-10-31", "2026-11-30", "2026-12-31", "2027-01-31",
        ];
        var starts = new List<string>();
        Period period = Month("UTC", 31, Utc("2026-02-01T00:00:00Z"));
        for (int i = 0; i < expectedStarts.Length; i++)
        {
            starts.Add(period.Start.ToString("uuuu-MM-dd", CultureInfo.InvariantCulture));
            period = Month("UTC", 31, period.End);
        }

        Assert.That(starts, Is.EqualTo(expectedStarts));
    }

    // ---------------------------------------------------------------- Monthly (other zones)

    // Asia/Tokyo +09, anchor 1: 2026-05-01 00:00 local is 2026-04-30T15:00Z (UTC date still April 30).
    [TestCase("Asia/Tokyo", 1, "2026-04-30T15:00:00Z", "2026-04-30T15:00:00Z", "2026-05-31T15:00:00Z")]
    [TestCase("Asia/Tokyo", 1, "2026-04-30T14:59:59.9999999Z", "2026-03-31T15:00:00Z", "2026-04-30T15:00:00Z")]
    // Asia/Tokyo anchor 31 in February: 2026-02-28 00:00 +09 to 2026-03-31 00:00 +09.
    [TestCase("Asia/Tokyo", 31, "2026-03-01T00:00:00Z", "2026-02-27T15:00:00Z", "2026-03-30T15:00:00Z")]
    // America/Los_Angeles PDT -07, anchor 1: 2026-06-01T03:00Z is still 2026-05-31 20:00 local.
    [TestCase("America/Los_Angeles", 1, "2026-06-01T03:00:00Z", "2026-05-01T07:00:00Z", "2026-06-01T07:00:00Z")]
    // America/Los_Angeles PST -08, anchor 15 across the year end: 2027-01-15T07:59:59Z is 2027-01-14 23:59:59 local.
    [TestCase("America/Los_Angeles", 15, "2027-01-15T07:59:59Z", "2026-12-15T08:00:00Z", "2027-01-15T08:00:00Z")]
    public void Containing_MonthInNonUtcZone_UsesLocalDateNotUtcDate(string zone, int anchor, string instant, string start, string end)
    {
        Period period = Month(zone, anchor, Utc(instant));

        Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
    }

    // Europe/Berlin anchor 15: 2026-03-15 00:00 +01 to 2026-04-15 00:00 +02: 31 days less an hour.
    [TestCase("Europe/Berlin", 15, "2026-04-01T12:00:00Z", "2026-03-14T23:00:00Z", "2026-04-14T22:00:00Z", 743)]
    // Europe/Berlin anchor 1: 2026-10-01 00:00 +02 to 2026-11-01 00:00 +01: 31 days and an hour.
    [TestCase("Europe/Berlin", 1, "2026-10-15T12:00:00Z", "2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z", 745)]
    // America/New_York anchor 1: 2026-11-01 00:00 -04 (the fall-back day itself) to 2026-12-01 00:00 -05.
    [TestCase("America/New_York", 1, "2026-11-15T12:00:00Z", "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z", 721)]
    // America/Los_Angeles anchor 10: 2026-02-10 00:00 -08 to 2026-03-10 00:00 -07: 28 days less an hour.
    [TestCase("America/Los_Angeles", 10, "2026-03-01T12:00:00Z", "2026-02-10T08:00:00Z", "2026-03-10T07:00:00Z", 671)]
    // America/Santiago anchor 6: 2026-09-06 has no midnight, so the period starts at 01:00 -03 and ends at
    // 2026-10-06 00:00 -03: 30 days less an hour.
    [TestCase("America/Santiago", 6, "2026-09-20T12:00:00Z", "2026-09-06T04:00:00Z", "2026-10-06T03:00:00Z", 719)]
    public void Containing_MonthSpanningDstChange_HasLocalMidnightBoundsAndAdjustedLength(
        string zone, int anchor, string instant, string start, string end, int hours)
    {
        Period period = Month(zone, anchor, Utc(instant));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(period, Is.EqualTo(new Period(Utc(start), Utc(end))));
            Assert.That(period.Length, Is.EqualTo(Duration.FromHours(hours)));
        }
    }

    [Test]
    public void Containing_MonthWhoseAnchorDateWasSkippedEntirely_StartsAtFirstInstantAfterIt()
    {
        // Pacific/Apia skipped 2011-12-30: the anchor-30 period starts at 2011-12-31 00:00 +14 = 2011-12-30T10:00Z and
        // ends at 2012-01-30 00:00 +14 = 2012-01-29T10:00Z. The previous one started 2011-11-30 00:00 -10 = 10:00Z.
        Period after = Month("Pacific/Apia", 30, Utc("2011-12-30T12:00:00Z"));
        Period before = Month("Pacific/Apia", 30, Utc("2011-12-30T09:00:00Z"));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(after, Is.EqualTo(new Period(Utc("2011-12-30T10:00:00Z"), Utc("2012-01-29T10:00:00Z"))));
            Assert.That(before, Is.EqualTo(new Period(Utc("2011-11-30T10:00:00Z"), Utc("2011-12-30T10:00:00Z"))));
        }
    }

    // ---------------------------------------------------------------- Properties over random instants

    private static readonly string[] PropertyZones =
    [
        "UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Asia/Beirut", "Asia/Kolkata",
        "Australia/Lord_Howe", "Pacific/Chatham", "America/St_Johns", "Pacific/Apia", "Asia/Tokyo", "America/Havana",
    ];

    private static readonly int[] PropertyAnchors = [1, 15, 28, 29, 30, 31];

    [TestCaseSource(nameof(PropertyZones))]
    public void Containing_RandomInstants_PeriodsContainTheInstantAndTileTheTimeLine(string zone)
    {
        DateTimeZone tz = TimeZones.Get(zone);
        var random = new Random(20260314);
        long from = Instant.FromUtc(1995, 1, 1, 0, 0).ToUnixTimeTicks();
        long to = Instant.FromUtc(2045, 1, 1, 0, 0).ToUnixTimeTicks();

        for (int i = 0; i < 300; i++)
        {
            Instant instant = Instant.FromUnixTimeTicks(random.NextInt64(from, to));

            Period day = Day(zone, instant);
            AssertTiles(ResetPeriod.Day, tz, 1, instant, day);
            LocalDate dayDate = day.Start.InZone(tz).Date;
            Assert.That(day.Start, Is.EqualTo(tz.AtStartOfDay(dayDate).ToInstant()), $"day start {zone} {instant}");
            Assert.That(day.Length, Is.InRange(Duration.FromHours(22), Duration.FromHours(26)), $"day length {zone} {instant}");

            foreach (int anchor in PropertyAnchors)
            {
                Period month = Month(zone, anchor, instant);
                AssertTiles(ResetPeriod.Month, tz, anchor, instant, month);
                LocalDate startDate = month.Start.InZone(tz).Date;
                int anchorDay = Math.Min(anchor, CalendarSystem.Iso.GetDaysInMonth(startDate.Year, startDate.Month));
                // Only a date that never appeared on local clocks (Pacific/Apia 2011-12-30) moves the start a day later.
                int expectedDay = IsSkippedEntirely(tz, new LocalDate(startDate.Year, startDate.Month, anchorDay)) ? anchorDay + 1 : anchorDay;
                Assert.That(startDate.Day, Is.EqualTo(expectedDay), $"anchor {anchor} {zone} {instant}");
                Assert.That(month.Start, Is.EqualTo(tz.AtStartOfDay(startDate).ToInstant()), $"month start {anchor} {zone} {instant}");
                Assert.That(
                    month.Length,
                    Is.InRange(Duration.FromDays(28) - Duration.FromHours(2), Duration.FromDays(31) + Duration.FromHours(2)),
                    $"month length {anchor} {zone} {instant}");
            }
        }
    }

    private static void AssertTiles(ResetPeriod kind, DateTimeZone zone, int anchor, Instant instant, Period period)
    {
        string context = $"{kind} anchor {anchor} {zone.Id} at {instant}: {period}";
        Period next = PeriodCalculator.Containing(kind, period.End, zone, anchor);
        Period previous = PeriodCalculator.Containing(kind, period.Start - Tick, zone, anchor);

        Assert.That(period.Contains(instant), Is.True, context);
        Assert.That(next.Start, Is.EqualTo(period.End), context);
        Assert.That(previous.End, Is.EqualTo(period.Start), context);
        Assert.That(PeriodCalculator.Containing(kind, period.Start, zone, anchor), Is.EqualTo(period), context);
        Assert.That(PeriodCalculator.Containing(kind, period.End - Tick, zone, anchor), Is.EqualTo(period), context);
    }

    private static bool IsSkippedEntirely(DateTimeZone zone, LocalDate date) =>
        zone.MapLocal(date.AtMidnight()).Count == 0 && zone.MapLocal(date.At(new LocalTime(23, 59, 59))).Count == 0;

    // ---------------------------------------------------------------- Invalid arguments

    [TestCase(0)]
    [TestCase(32)]
    [TestCase(-1)]
    [TestCase(int.MinValue)]
    [TestCase(int.MaxValue)]
    public void Containing_MonthWithAnchorOutside1To31_ThrowsArgumentOutOfRange(int anchor)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(
            () => PeriodCalculator.Containing(ResetPeriod.Month, Utc("2026-05-14T00:00:00Z"), TimeZones.Get("UTC"), anchor));

        Assert.That(ex.ParamName, Is.EqualTo("billingAnchorDay"));
    }

    [TestCase(0)]
    [TestCase(3)]
    [TestCase(-1)]
    public void Containing_UndefinedResetPeriod_ThrowsArgumentOutOfRange(int kind)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(
            () => PeriodCalculator.Containing((ResetPeriod)kind, Utc("2026-05-14T00:00:00Z"), TimeZones.Get("UTC"), 1));

        Assert.That(ex.ParamName, Is.EqualTo("kind"));
    }

    [Test]
    public void Containing_NullZone_ThrowsArgumentNull()
    {
        Assert.That(
            () => PeriodCalculator.Containing(ResetPeriod.Day, Utc("2026-05-14T00:00:00Z"), null!, 1),
            Throws.ArgumentNullException);
    }

    // ---------------------------------------------------------------- TimeZones

    [TestCase("UTC", "2026-05-14T12:00:00Z", 0)]
    [TestCase("Europe/Berlin", "2026-01-14T12:00:00Z", 3600)]
    [TestCase("Europe/Berlin", "2026-07-14T12:00:00Z", 7200)]
    [TestCase("Asia/Kolkata", "2026-05-14T12:00:00Z", 19800)]
    [TestCase("America/New_York", "2026-01-14T12:00:00Z", -18000)]
    [TestCase("US/Eastern", "2026-07-14T12:00:00Z", -14400)] // a tzdb link (backward alias) of America/New_York
    public void TryGet_KnownIanaId_ReturnsZoneWithTzdbOffsets(string id, string instant, int offsetSeconds)
    {
        bool found = TimeZones.TryGet(id, out DateTimeZone? zone);

        Assert.That(found, Is.True);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(zone!.Id, Is.EqualTo(id));
            Assert.That(zone.GetUtcOffset(Utc(instant)), Is.EqualTo(Offset.FromSeconds(offsetSeconds)));
        }
    }

    [TestCase("Mars/Olympus_Mons")]
    [TestCase("")]
    [TestCase(" ")]
    [TestCase("europe/berlin")] // ids are case-sensitive
    [TestCase("Europe/Berlin ")]
    [TestCase("UTC+01:00")] // NodaTime fixed-offset id, not an IANA id
    [TestCase("W. Europe Standard Time")] // Windows id
    public void TryGet_UnknownId_ReturnsFalseAndNull(string id)
    {
        bool found = TimeZones.TryGet(id, out DateTimeZone? zone);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(found, Is.False);
            Assert.That(zone, Is.Null);
        }
    }

    [Test]
    public void TryGet_NullId_ReturnsFalse()
    {
        Assert.That(TimeZones.TryGet(null!, out _), Is.False);
    }

    [Test]
    public void Get_KnownId_ReturnsZone()
    {
        Assert.That(TimeZones.Get("America/Santiago").Id, Is.EqualTo("America/Santiago"));
    }

    [TestCase("Mars/Olympus_Mons")]
    [TestCase("")]
    [TestCase("UTC+01:00")]
    public void Get_UnknownId_ThrowsArgumentException(string id)
    {
        var ex = Assert.Throws<ArgumentException>(() => TimeZones.Get(id));

        Assert.That(ex.ParamName, Is.EqualTo("id"));
    }

    [Test]
    public void Get_NullId_ThrowsArgumentNull()
    {
        Assert.That(() => TimeZones.Get(null!), Throws.ArgumentNullException);
    }

    // ---------------------------------------------------------------- Helpers

    private static Instant Utc(string iso) => InstantPattern.ExtendedIso.Parse(iso).Value;

    private static Period Day(string zone, Instant instant) =>
        PeriodCalculator.Containing(ResetPeriod.Day, instant, TimeZones.Get(zone), billingAnchorDay: 1);

    private static Period Month(string zone, int anchor, Instant instant) =>
        PeriodCalculator.Containing(ResetPeriod.Month, instant, TimeZones.Get(zone), anchor);
}
