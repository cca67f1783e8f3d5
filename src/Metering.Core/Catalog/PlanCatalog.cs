using System.Diagnostics.CodeAnalysis;

namespace Metering.Core.Catalog;

/// <summary>The usage types and plans the service meters against; immutable, looked up by name.</summary>
public sealed class PlanCatalog
{
    private readonly Dictionary<string, UsageType> _usageTypes;
    private readonly Dictionary<string, Plan> _plans;

    public PlanCatalog(IEnumerable<UsageType> usageTypes, IEnumerable<Plan> plans, long version = 0)
    {
        Version = version;
        UsageTypes = [.. usageTypes.OrderBy(t => t.Name, StringComparer.Ordinal)];
        Plans = [.. plans.OrderBy(p => p.Rank).ThenBy(p => p.Id, StringComparer.Ordinal)];
        _usageTypes = UsageTypes.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _plans = Plans.ToDictionary(p => p.Id, StringComparer.Ordinal);
        foreach (var plan in Plans)
        {
            foreach (var (usageType, limit) in plan.Limits)
            {
                if (!_usageTypes.ContainsKey(usageType))
                {
                    throw new ArgumentException($"Plan '{plan.Id}' has a limit for unknown usage type '{usageType}'.", nameof(plans));
                }

                if (limit < Limit.Unlimited)
                {
                    throw new ArgumentException($"Plan '{plan.Id}' has limit {limit} for '{usageType}'; limits are -1 (unlimited) or more.", nameof(plans));
                }
            }
        }
    }

    /// <summary>Grows with every stored change of the catalog; instances reload when the shared version is newer.</summary>
    public long Version { get; }

    /// <summary>Usage types in name order.</summary>
    public IReadOnlyList<UsageType> UsageTypes { get; }

    /// <summary>Plans in rank order.</summary>
    public IReadOnlyList<Plan> Plans { get; }

    public bool TryGetUsageType(string name, [NotNullWhen(true)] out UsageType? usageType) =>
        _usageTypes.TryGetValue(name, out usageType);

    public bool TryGetPlan(string id, [NotNullWhen(true)] out Plan? plan) => _plans.TryGetValue(id, out plan);

    public UsageType GetUsageType(string name) =>
        _usageTypes.TryGetValue(name, out var usageType) ? usageType : throw new KeyNotFoundException($"Unknown usage type '{name}'.");

    public Plan GetPlan(string id) =>
        _plans.TryGetValue(id, out var plan) ? plan : throw new KeyNotFoundException($"Unknown plan '{id}'.");
}
