using Metering.Core.Periods;

namespace Metering.Core.Limits;

/// <summary>One usage type's standing in the current period, and the verdict on an amount.</summary>
/// <param name="Limit">-1 unlimited, 0 not in the plan.</param>
/// <param name="Used">Recorded in the period.</param>
/// <param name="Reserved">Held by open reservations in the period.</param>
/// <param name="Remaining">max(0, limit - used - reserved), or -1 when unlimited.</param>
public sealed record LimitStatus(
    string UsageType,
    long Limit,
    long Used,
    long Reserved,
    long Remaining,
    Decision Decision,
    Period Period)
{
    /// <summary>Percent of the limit used or held (see <see cref="LimitRules.PercentUsed"/>).</summary>
    public double PercentUsed => LimitRules.PercentUsed(Limit, Used, Reserved);

    /// <summary>OK, WARNING, CRITICAL or EXHAUSTED (see <see cref="LimitRules.Level"/>).</summary>
    public UsageLevel Level => LimitRules.Level(Limit, Used, Reserved);
}
