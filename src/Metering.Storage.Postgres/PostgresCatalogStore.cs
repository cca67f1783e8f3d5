using System.Text.Json;
using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Periods;
using Metering.Core.Ports;
using Metering.Core.Telemetry;
using Metering.Storage.Postgres.Entities;
using Microsoft.EntityFrameworkCore;
using NodaTime;
using Npgsql;

namespace Metering.Storage.Postgres;

/// <summary>
/// The catalog of record on PostgreSQL. Every change locks and bumps the one <c>catalog_state</c> row in its transaction
/// (so catalog writers are serialized and versions are gap-free), stamps the changed plan with the new version and
/// writes an audit row.
/// </summary>
public sealed class PostgresCatalogStore(IDbContextFactory<MeteringDbContext> contexts, MeteringMetrics? metrics = null) : ICatalogStore
{
    private readonly LedgerGuard _guard = new(metrics);

    /// <summary>
    /// Adds the seed's usage types and plans that the database does not have yet, as long as the catalog was never
    /// changed through the AdminService (version 1); never changes existing ones. Once edited, the database alone
    /// holds the catalog, so a deleted plan does not come back at the next start.
    /// </summary>
    public async Task SeedAsync(CatalogSeed seed, CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        var state = await db.CatalogState.AsNoTracking().SingleAsync(cancellationToken);
        if (state.Version > 1)
        {
            return;
        }

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
                Version = 1,
                Limits = [.. p.Limits.Select(l => new PlanLimitRow { PlanId = p.Id, UsageType = l.Key, Limit = l.Value })],
            }));
        await db.SaveChangesAsync(cancellationToken);
    }

    public Task<StoredCatalog> LoadAsync(CancellationToken cancellationToken) =>
        _guard.RunAsync("load_catalog", LoadOnceAsync, cancellationToken);

    public Task<long> GetVersionAsync(CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "get_catalog_version",
            async token =>
            {
                await using var db = await contexts.CreateDbContextAsync(token);
                return await db.CatalogState.Select(s => s.Version).SingleAsync(token);
            },
            cancellationToken);

    public Task<long> SavePlanAsync(Plan plan, Instant now, CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "save_plan",
            token => ChangeAsync(now, "plan_upserted", plan.Id, Payload(plan), async (db, version, t) =>
            {
                var row = await db.Plans.Include(p => p.Limits).SingleOrDefaultAsync(p => p.Id == plan.Id, t);
                if (row is null)
                {
                    row = new PlanRow { Id = plan.Id, DisplayName = plan.DisplayName };
                    db.Plans.Add(row);
                }

                row.DisplayName = plan.DisplayName;
                row.Rank = plan.Rank;
                row.Version = version;
                row.Limits.Clear();
                await db.SaveChangesAsync(t);
                row.Limits.AddRange(plan.Limits.Select(l => new PlanLimitRow { PlanId = plan.Id, UsageType = l.Key, Limit = l.Value }));
                await db.SaveChangesAsync(t);
            }),
            cancellationToken);

    public Task<long> DeletePlanAsync(string planId, Instant now, CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "delete_plan",
            token => ChangeAsync(now, "plan_deleted", planId, "{}", async (db, _, t) =>
            {
                var subscribers = await db.Subscriptions.CountAsync(s => s.PlanId == planId, t);
                if (subscribers > 0)
                {
                    throw PlanInUse(planId, subscribers);
                }

                try
                {
                    if (await db.Plans.Where(p => p.Id == planId).ExecuteDeleteAsync(t) == 0)
                    {
                        throw new NotFoundException("plan", planId);
                    }
                }
                catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.ForeignKeyViolation)
                {
                    // A subscription moved to the plan after the count: the foreign key still refuses the delete.
                    throw PlanInUse(planId, 1);
                }
            }),
            cancellationToken);

    public Task<long> SaveUsageTypeAsync(UsageType usageType, Instant now, CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "save_usage_type",
            token => ChangeAsync(now, "usage_type_upserted", usageType.Name, Payload(usageType), async (db, _, t) =>
            {
                var row = await db.UsageTypes.SingleOrDefaultAsync(u => u.Name == usageType.Name, t);
                if (row is null)
                {
                    db.UsageTypes.Add(new UsageTypeRow
                    {
                        Name = usageType.Name,
                        Unit = usageType.Unit,
                        ResetPeriod = Format(usageType.ResetPeriod),
                        DegradedPolicy = Format(usageType.DegradedPolicy),
                    });
                }
                else
                {
                    row.Unit = usageType.Unit;
                    row.ResetPeriod = Format(usageType.ResetPeriod);
                    row.DegradedPolicy = Format(usageType.DegradedPolicy);
                }

                await db.SaveChangesAsync(t);
            }),
            cancellationToken);

    /// <summary>One catalog change: bump the version (locking the state row), apply, audit, commit.</summary>
    private async Task<long> ChangeAsync(
        Instant now,
        string kind,
        string target,
        string payload,
        Func<MeteringDbContext, long, CancellationToken, Task> apply,
        CancellationToken cancellationToken = default)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        await using var transaction = await db.Database.BeginTransactionAsync(cancellationToken);
        var version = (await db.Database
            .SqlQuery<long>($"UPDATE catalog_state SET version = version + 1 WHERE id = 1 RETURNING version AS \"Value\"")
            .ToListAsync(cancellationToken))[0];
        await apply(db, version, cancellationToken);

        // The shared version follows the change even if the caller never hears back (see counter_outbox).
        db.CounterOutbox.Add(new CounterOutboxRow { Kind = CounterOutboxRow.CatalogKind });
        db.CatalogChanges.Add(new CatalogChangeRow
        {
            Version = version,
            ChangedAt = now.ToDateTimeUtc(),
            Kind = kind,
            Target = target,
            Payload = payload,
        });
        await db.SaveChangesAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return version;
    }

    private async Task<StoredCatalog> LoadOnceAsync(CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);

        // One snapshot for the state row and the catalog, so the version matches what was read.
        await using var transaction = await db.Database.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, cancellationToken);
        var state = await db.CatalogState.AsNoTracking().SingleAsync(cancellationToken);
        var usageTypes = await db.UsageTypes.AsNoTracking().ToListAsync(cancellationToken);
        var plans = await db.Plans.AsNoTracking().Include(p => p.Limits).ToListAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        var catalog = new PlanCatalog(
            usageTypes.Select(t => new UsageType(t.Name, t.Unit, ParseResetPeriod(t.ResetPeriod), ParseDegradedPolicy(t.DegradedPolicy))),
            plans.Select(p => new Plan(p.Id, p.DisplayName, p.Rank, p.Limits.ToDictionary(l => l.UsageType, l => l.Limit, StringComparer.Ordinal), p.Version)),
            state.Version);
        return new StoredCatalog(state.CatalogId.ToString("N"), catalog);
    }

    private static PreconditionFailedException PlanInUse(string planId, int subscribers) => new(
        "PLAN_IN_USE",
        $"Plan '{planId}' is used by {subscribers} subscription(s); move them to another plan first.",
        new Dictionary<string, string> { ["plan_id"] = planId, ["subscriptions"] = subscribers.ToString(System.Globalization.CultureInfo.InvariantCulture) });

    private static string Payload(Plan plan) => JsonSerializer.Serialize(new
    {
        display_name = plan.DisplayName,
        rank = plan.Rank,
        limits = plan.Limits,
    });

    private static string Payload(UsageType usageType) => JsonSerializer.Serialize(new
    {
        unit = usageType.Unit,
        reset_period = Format(usageType.ResetPeriod),
        degraded_policy = Format(usageType.DegradedPolicy),
    });

    private static string Format(DegradedPolicy policy) => policy.ToString().ToLowerInvariant();

    private static DegradedPolicy ParseDegradedPolicy(string value) => value switch
    {
        "ledger" => DegradedPolicy.Ledger,
        "allow" => DegradedPolicy.Allow,
        "deny" => DegradedPolicy.Deny,
        _ => throw new InvalidOperationException($"Unknown degraded policy '{value}' in the catalog."),
    };

    private static string Format(ResetPeriod period) => period == ResetPeriod.Day ? "day" : "month";

    private static ResetPeriod ParseResetPeriod(string value) => value switch
    {
        "day" => ResetPeriod.Day,
        "month" => ResetPeriod.Month,
        _ => throw new InvalidOperationException($"Unknown reset period '{value}' in the catalog."),
    };
}
