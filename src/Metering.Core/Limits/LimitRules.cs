using Metering.Core.Periods;

namespace Metering.Core.Limits;

/// <summary>
/// The one place that decides whether an amount fits a limit. The ledger calls it under the subject's lock to grant a
/// hold or an enforced event; reads from the cache turn their numbers into a verdict with it.
/// </summary>
public static class LimitRules
{
    /// <summary>Whether <paramref name="amount"/> more fits, given what is used and held.</summary>
    public static bool Fits(long limit, long used, long reserved, long amount) =>
        limit < 0 || (limit > 0 && used + reserved + amount <= limit);

    /// <summary>
    /// Whether <paramref name="amount"/> may be granted (held, or recorded enforced): it fits, and the period total stays
    /// within <see cref="Validation.RequestValidator.MaxPeriodTotal"/>, whatever the limit.
    /// </summary>
    public static bool CanGrant(long limit, long used, long reserved, long amount) =>
        Fits(limit, used, reserved, amount) && !OverCeiling(used, reserved, amount);

    /// <summary>Whether the period total (used plus held) would pass <see cref="Validation.RequestValidator.MaxPeriodTotal"/>.</summary>
    public static bool OverCeiling(long used, long reserved, long amount) =>
        used + reserved + amount > Validation.RequestValidator.MaxPeriodTotal;

    /// <summary>The verdict on <paramref name="amount"/>.</summary>
    public static Decision Decide(long limit, long used, long reserved, long amount) => limit switch
    {
        Core.Catalog.Limit.NotInPlan => Decision.NotInPlan,
        _ when Fits(limit, used, reserved, amount) => Decision.Allowed,
        _ => Decision.LimitExceeded,
    };

    /// <summary>What is left: -1 when unlimited, never negative.</summary>
    public static long Remaining(long limit, long used, long reserved) =>
        limit < 0 ? Core.Catalog.Limit.Unlimited : Math.Max(0, limit - used - reserved);

    /// <summary>Percent of the limit used or held, <c>100 * (used + reserved) / limit</c>: 0 when unlimited,
    /// 100 when not in the plan, above 100 after a downgrade below what is already used.</summary>
    public static double PercentUsed(long limit, long used, long reserved) => limit switch
    {
        < 0 => 0,
        Core.Catalog.Limit.NotInPlan => 100,
        _ => 100.0 * (used + reserved) / limit,
    };

    /// <summary>
    /// The level of a usage: OK below 80 %, WARNING from 80 %, CRITICAL from 95 %, EXHAUSTED at 100 % (nothing left,
    /// including a usage type not in the plan); unlimited stays OK. Compared in integers, so 80 % is exact.
    /// </summary>
    public static UsageLevel Level(long limit, long used, long reserved)
    {
        if (limit < 0)
        {
            return UsageLevel.Ok;
        }

        if (limit == Core.Catalog.Limit.NotInPlan)
        {
            return UsageLevel.Exhausted;
        }

        var consumed = (decimal)used + reserved;
        return (consumed * 100) switch
        {
            var p when p >= (decimal)limit * 100 => UsageLevel.Exhausted,
            var p when p >= (decimal)limit * 95 => UsageLevel.Critical,
            var p when p >= (decimal)limit * 80 => UsageLevel.Warning,
            _ => UsageLevel.Ok,
        };
    }

    /// <summary>The status after a hold of <paramref name="amount"/> was placed: the verdict stays the one that allowed it.</summary>
    public static LimitStatus WithHold(LimitStatus status, long amount) => status with
    {
        Reserved = status.Reserved + amount,
        Remaining = Remaining(status.Limit, status.Used, status.Reserved + amount),
    };

    /// <summary>The full status of one usage type for an amount asked.</summary>
    public static LimitStatus Evaluate(string usageType, long limit, long used, long reserved, long amount, Period period) =>
        new(usageType, limit, used, reserved, Remaining(limit, used, reserved), Decide(limit, used, reserved, amount), period);
}
