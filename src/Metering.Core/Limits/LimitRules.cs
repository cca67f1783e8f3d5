using Metering.Core.Periods;

namespace Metering.Core.Limits;

/// <summary>
/// The one place that decides whether an amount fits a limit.
/// The Redis check-and-hold script applies the same inequality atomically
/// (<c>limit &lt; 0 or used + reserved + amount &lt;= limit</c>); this class turns its numbers into a verdict.
/// </summary>
public static class LimitRules
{
    /// <summary>Whether <paramref name="amount"/> more fits, given what is used and held.</summary>
    public static bool Fits(long limit, long used, long reserved, long amount) =>
        limit < 0 || (limit > 0 && used + reserved + amount <= limit);

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
