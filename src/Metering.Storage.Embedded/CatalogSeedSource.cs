using Metering.Core.Catalog;
using Metering.Core.Periods;
using Microsoft.Extensions.Configuration;

namespace Metering.Storage.Embedded;

/// <summary>
/// The catalog written into a new database: the configuration section <c>Catalog</c>, the same one the PostgreSQL
/// ledger is seeded from (<c>UsageTypes</c>: Name, Unit, ResetPeriod "day" or "month"; <c>Plans</c>: Id, DisplayName,
/// Rank, Limits by usage type).
/// </summary>
public sealed class CatalogSeedSource(IReadOnlyList<UsageType> usageTypes, IReadOnlyList<Plan> plans)
{
    public static readonly CatalogSeedSource Empty = new([], []);

    public (IReadOnlyList<UsageType> UsageTypes, IReadOnlyList<Plan> Plans) Seed => (usageTypes, plans);

    /// <summary>Reads the seed from <paramref name="section"/> (the <c>Catalog</c> section).</summary>
    public static CatalogSeedSource From(IConfigurationSection section)
    {
        var types = section.GetSection("UsageTypes").GetChildren()
            .Select(t => new UsageType(
                t["Name"] ?? "",
                t["Unit"] ?? "",
                (t["ResetPeriod"] ?? "") switch
                {
                    "day" => ResetPeriod.Day,
                    "month" => ResetPeriod.Month,
                    var other => throw new InvalidOperationException($"Catalog:UsageTypes: '{t["Name"]}' has reset period '{other}'; use \"day\" or \"month\"."),
                }))
            .ToList();
        var plans = section.GetSection("Plans").GetChildren()
            .Select(p => new Plan(
                p["Id"] ?? "",
                p["DisplayName"] ?? "",
                p.GetValue("Rank", 0),
                p.GetSection("Limits").GetChildren().ToDictionary(l => l.Key, l => long.Parse(l.Value ?? "0", System.Globalization.CultureInfo.InvariantCulture), StringComparer.Ordinal)))
            .ToList();
        return new CatalogSeedSource(types, plans);
    }
}
