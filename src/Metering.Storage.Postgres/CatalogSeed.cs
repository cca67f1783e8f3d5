namespace Metering.Storage.Postgres;

#pragma warning disable CA2227 // Bound from configuration.

/// <summary>The catalog written into an empty database on first start (configuration section <c>Catalog</c>).</summary>
public sealed class CatalogSeed
{
    public List<UsageTypeSeed> UsageTypes { get; set; } = [];

    public List<PlanSeed> Plans { get; set; } = [];
}

public sealed class UsageTypeSeed
{
    public string Name { get; set; } = "";

    public string Unit { get; set; } = "";

    /// <summary>"day" or "month".</summary>
    public string ResetPeriod { get; set; } = "";
}

public sealed class PlanSeed
{
    public string Id { get; set; } = "";

    public string DisplayName { get; set; } = "";

    public int Rank { get; set; }

    /// <summary>Usage type to limit: -1 unlimited, 0 not in the plan.</summary>
    public Dictionary<string, long> Limits { get; set; } = [];
}
