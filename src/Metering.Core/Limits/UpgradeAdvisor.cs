using Metering.Core.Catalog;

namespace Metering.Core.Limits;

/// <summary>One requested amount with what its counter showed, as the advisor weighs it.</summary>
public readonly record struct RequestedLine(string UsageType, long Amount, long Used, long Reserved);

/// <summary>A usage type's limit in a plan.</summary>
public readonly record struct UsageLimit(string UsageType, long Limit);

/// <summary>A plan that would have allowed a denied request, with the limit of each requested usage type in it.</summary>
public sealed record UpgradeOption(string PlanId, string DisplayName, int Rank, IReadOnlyList<UsageLimit> Limits);

/// <summary>Which plans would have allowed a denied request: the one place that decides upgrade hints.</summary>
public static class UpgradeAdvisor
{
    /// <summary>
    /// Every plan other than <paramref name="currentPlanId"/>, in rank order, under whose limits every line fits
    /// given what is already used and held (the same rule as <see cref="LimitRules.Fits"/>). Empty when none would.
    /// </summary>
    public static IReadOnlyList<UpgradeOption> Options(PlanCatalog catalog, string currentPlanId, IReadOnlyList<RequestedLine> lines)
    {
        if (lines.Count == 0)
        {
            return [];
        }

        return
        [
            .. catalog.Plans
                .Where(plan => plan.Id != currentPlanId)
                .Where(plan => lines.All(l => LimitRules.Fits(plan.LimitFor(l.UsageType), l.Used, l.Reserved, l.Amount)))
                .Select(plan => new UpgradeOption(
                    plan.Id,
                    plan.DisplayName,
                    plan.Rank,
                    [.. lines.Select(l => new UsageLimit(l.UsageType, plan.LimitFor(l.UsageType)))])),
        ];
    }
}
