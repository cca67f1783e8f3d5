using System.Text.Json;
using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Periods;
using Metering.Core.Ports;
using Metering.Storage.Embedded.Entities;
using Microsoft.EntityFrameworkCore;
using NodaTime;

namespace Metering.Storage.Embedded;

/// <summary>
/// The catalog of record in the embedded database. Every change bumps the catalog version in its transaction, stamps
/// the changed plan with it, writes an audit row and queues the change, as the PostgreSQL catalog does.
/// </summary>
public sealed class EmbeddedCatalogStore(EmbeddedDatabase database) : ICatalogStore
{
    /// <summary>
    /// Adds the seed's usage types and plans that the database does not have yet, as long as the catalog was never
    /// changed (version 1); never changes existing ones.
    /// </summary>
    internal static async Task SeedAsync(EmbeddedDbContext db, (IReadOnlyList<UsageType> UsageTypes, IReadOnlyList<Plan> Plans) seed, CancellationToken cancellationToken)
    {
        var state = await db.CatalogState.AsNoTracking().SingleAsync(cancellationToken);
        if (state.Version > 1)
        {
            return;
        }

        var usageTypes = await db.UsageTypes.Select(t => t.Name).ToListAsync(cancellationToken);
        var plans = await db.Plans.Select(p => p.Id).ToListAsync(cancellationToken);
        db.UsageTypes.AddRange(seed.UsageTypes
            .Where(t => !usageTypes.Contains(t.Name))
            .Select(t => new UsageTypeRow { Name = t.Name, Unit = t.Unit, ResetPeriod = Format(t.ResetPeriod), DegradedPolicy = Format(t.DegradedPolicy) }));
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
        database.ReadAsync(
            async (db, token) =>
            {
                var state = await db.CatalogState.AsNoTracking().SingleAsync(token);
                var usageTypes = await db.UsageTypes.AsNoTracking().ToListAsync(token);
                var plans = await db.Plans.AsNoTracking().Include(p => p.Limits).ToListAsync(token);
                var catalog = new PlanCatalog(
                    usageTypes.Select(t => new UsageType(t.Name, t.Unit, ParseResetPeriod(t.ResetPeriod), ParseDegradedPolicy(t.DegradedPolicy))),
                    plans.Select(p => new Plan(p.Id, p.DisplayName, p.Rank, p.Limits.ToDictionary(l => l.UsageType, l => l.Limit, StringComparer.Ordinal), p.Version)),
                    state.Version);
                return new StoredCatalog(state.CatalogId, catalog);
            },
            cancellationToken);

    public Task<long> GetVersionAsync(CancellationToken cancellationToken) =>
        database.ReadAsync((db, token) => db.CatalogState.Select(s => s.Version).SingleAsync(token), cancellationToken);

    public Task<long> SavePlanAsync(Plan plan, Instant now, CancellationToken cancellationToken) =>
        ChangeAsync(now, "plan_upserted", plan.Id, Payload(plan), async (db, version, token) =>
        {
            var row = await db.Plans.Include(p => p.Limits).SingleOrDefaultAsync(p => p.Id == plan.Id, token);
            if (row is null)
            {
                row = new PlanRow { Id = plan.Id, DisplayName = plan.DisplayName };
                db.Plans.Add(row);
            }

            row.DisplayName = plan.DisplayName;
            row.Rank = plan.Rank;
            row.Version = version;
            row.Limits.Clear();
            await db.SaveChangesAsync(token);
            row.Limits.AddRange(plan.Limits.Select(l => new PlanLimitRow { PlanId = plan.Id, UsageType = l.Key, Limit = l.Value }));
            await db.SaveChangesAsync(token);
        }, cancellationToken);

    public Task<long> DeletePlanAsync(string planId, Instant now, CancellationToken cancellationToken) =>
        ChangeAsync(now, "plan_deleted", planId, "{}", async (db, _, token) =>
        {
            var subscribers = await db.Subscriptions.CountAsync(s => s.PlanId == planId, token);
            if (subscribers > 0)
            {
                throw new PreconditionFailedException(
                    "PLAN_IN_USE",
                    $"Plan '{planId}' is used by {subscribers} subscription(s); move them to another plan first.",
                    new Dictionary<string, string> { ["plan_id"] = planId, ["subscriptions"] = subscribers.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            }

            if (await db.Plans.Where(p => p.Id == planId).ExecuteDeleteAsync(token) == 0)
            {
                throw new NotFoundException("plan", planId);
            }
        }, cancellationToken);

    public Task<long> SaveUsageTypeAsync(UsageType usageType, Instant now, CancellationToken cancellationToken) =>
        ChangeAsync(now, "usage_type_upserted", usageType.Name, Payload(usageType), async (db, _, token) =>
        {
            var row = await db.UsageTypes.SingleOrDefaultAsync(u => u.Name == usageType.Name, token);
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

            await db.SaveChangesAsync(token);
        }, cancellationToken);

    /// <summary>One catalog change: bump the version, apply, audit, queue, commit.</summary>
    private Task<long> ChangeAsync(
        Instant now,
        string kind,
        string target,
        string payload,
        Func<EmbeddedDbContext, long, CancellationToken, Task> apply,
        CancellationToken cancellationToken) =>
        database.WriteAsync(
            async (db, token) =>
            {
                var state = await db.CatalogState.SingleAsync(token);
                state.Version++;
                await db.SaveChangesAsync(token);
                await apply(db, state.Version, token);
                db.Outbox.Add(new OutboxRow { Kind = OutboxRow.CatalogKind, CreatedAt = now.ToUnixTimeTicks() });
                db.CatalogChanges.Add(new CatalogChangeRow
                {
                    Version = state.Version,
                    ChangedAt = now.ToUnixTimeTicks(),
                    Kind = kind,
                    Target = target,
                    Payload = payload,
                });
                await db.SaveChangesAsync(token);
                return state.Version;
            },
            cancellationToken);

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
