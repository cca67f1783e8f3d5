using Metering.Core.Periods;
using NodaTime;

namespace Metering.Core.Subscriptions;

/// <summary>
/// Binds a subject to a plan and to the calendar its periods follow.
/// <see cref="Version"/> grows with every stored change, so caches keep only the newest.
/// </summary>
public sealed record Subscription(
    string SubjectId,
    string PlanId,
    int BillingAnchorDay,
    string TimeZone,
    Instant UpdatedAt,
    long Version)
{
    public const int DefaultBillingAnchorDay = 1;
    public const string DefaultTimeZone = "UTC";

    /// <summary>The calendar that decides where this subscription's periods start and end.</summary>
    public BillingCalendar Calendar => new(TimeZone, BillingAnchorDay);
}

/// <summary>A time zone and a billing anchor day: everything a period depends on besides the instant.</summary>
public readonly record struct BillingCalendar(string TimeZone, int BillingAnchorDay)
{
    /// <summary>The period of <paramref name="kind"/> that contains <paramref name="instant"/>.</summary>
    public Periods.Period PeriodContaining(ResetPeriod kind, Instant instant) =>
        PeriodCalculator.Containing(kind, instant, TimeZones.Get(TimeZone), BillingAnchorDay);
}
