using Metering.Core.Catalog;
using Metering.Core.Periods;
using Metering.Storage.Postgres.Entities;
using Microsoft.EntityFrameworkCore;

namespace Metering.Storage.Postgres;

/// <summary>Reads the catalog from the ledger database, and seeds what is missing on first start.</summary>
public sealed class PostgresCatalogStore(IDbContextFactory<MeteringDbContext> contexts)
{
    /// <summary>Adds the seed's usage types and plans that the database does not have yet; never changes existing ones.</summary>
    public async Task SeedAsync(CatalogSeed seed, CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        var usageTypes = await db.UsageTypes.Select(t => t.Name).ToListAsync(cancellationToken);
        var plans = await db.Plans.Select(p => p.Id).ToListAsync(cancellationToken);
        db.UsageTypes.AddRange(seed.UsageTypes
            .Where(t => !usageTypes.Contains(t.Name))
            .Select(t => new UsageTypeRow { Name = t.Name, Unit = t.Unit, ResetPeriod = t.ResetPeriod }));
        db.Plans.AddRange(seed.Plans
            .Where(p => !plans.Contains(p.Id))
            .Select(p => new PlanRow
            {
                Id = p.Id,
                DisplayName = p.DisplayName,
                Rank = p.Rank,
                Limits = [.. p.Limits.Select(l => new PlanLimitRow { PlanId = p.Id, UsageType = l.Key, Limit = l.Value })],
            }));
        await db.SaveChangesAsync(cancellationToken);
    }

    /// <summary>The whole catalog.</summary>
    public async Task<PlanCatalog> LoadAsync(CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        var usageTypes = await db.UsageTypes.AsNoTracking().ToListAsync(cancellationToken);
        var plans = await db.Plans.AsNoTracking().Include(p => p.Limits).ToListAsync(cancellationToken);
        return new PlanCatalog(
            usageTypes.Select(t => new UsageType(t.Name, t.Unit, ParseResetPeriod(t.ResetPeriod))),
            plans.Select(p => new Plan(p.Id, p.DisplayName, p.Rank, p.Limits.ToDictionary(l => l.UsageType, l => l.Limit, StringComparer.Ordinal))));
    }

    private static ResetPeriod ParseResetPeriod(string value) => value switch
    {
        "day" => ResetPeriod.Day,
        "month" => ResetPeriod.Month,
        _ => throw new InvalidOperationException($"Unknown reset period '{value}' in the catalog."),
    };
}
