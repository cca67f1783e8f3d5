namespace Metering.Core.Catalog;

/// <summary>A named set of limits. A usage type missing from <see cref="Limits"/> is not in the plan.</summary>
/// <param name="Version">The catalog version of the plan's last change (0 when not stored yet).</param>
public sealed record Plan(string Id, string DisplayName, int Rank, IReadOnlyDictionary<string, long> Limits, long Version = 0)
{
    /// <summary>The plan's limit for a usage type: <see cref="Limit.Unlimited"/>, <see cref="Limit.NotInPlan"/>, or a positive cap.</summary>
    public long LimitFor(string usageType) => Limits.TryGetValue(usageType, out var limit) ? limit : Limit.NotInPlan;
}

/// <summary>The two special limit values.</summary>
public static class Limit
{
    /// <summary>No cap at all.</summary>
    public const long Unlimited = -1;

    /// <summary>The plan does not include the usage type.</summary>
    public const long NotInPlan = 0;
}
