using Metering.Core.History;
using Metering.Core.Ports;
using Metering.Core.Telemetry;
using Metering.Core.Usage;
using Metering.Storage.Postgres.Entities;
using Microsoft.EntityFrameworkCore;
using NodaTime;

namespace Metering.Storage.Postgres;

/// <summary>History reads on PostgreSQL: ledger events (keyset-paged) and the subscription audit.</summary>
public sealed class PostgresHistoryStore(IDbContextFactory<MeteringDbContext> contexts, MeteringMetrics? metrics = null) : IHistoryStore
{
    private readonly LedgerGuard _guard = new(metrics);

    public Task<IReadOnlyList<LedgerEvent>> ListEventsAsync(EventQuery query, CancellationToken cancellationToken) =>
        _guard.RunAsync("list_events", token => ListEventsOnceAsync(query, token), cancellationToken);

    public Task<IReadOnlyList<SubscriptionChangeRecord>> ListSubscriptionChangesAsync(string subjectId, int limit, CancellationToken cancellationToken) =>
        _guard.RunAsync<IReadOnlyList<SubscriptionChangeRecord>>(
            "list_subscription_changes",
            async token =>
            {
                await using var db = await contexts.CreateDbContextAsync(token);
                var rows = await db.SubscriptionChanges.AsNoTracking()
                    .Where(c => c.SubjectId == subjectId)
                    .OrderByDescending(c => c.Id)
                    .Take(limit)
                    .ToListAsync(token);
                return [.. rows.Select(ToDomain)];
            },
            cancellationToken);

    private async Task<IReadOnlyList<LedgerEvent>> ListEventsOnceAsync(EventQuery query, CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        var events = db.UsageEvents.AsNoTracking().Include(e => e.Lines).Where(e => e.SubjectId == query.SubjectId);
        if (query.UsageType is { } usageType)
        {
            events = events.Where(e => e.Lines.Any(l => l.UsageType == usageType));
        }

        if (query.From is { } from)
        {
            var at = from.ToDateTimeUtc();
            events = events.Where(e => e.OccurredAt >= at);
        }

        if (query.To is { } to)
        {
            var at = to.ToDateTimeUtc();
            events = events.Where(e => e.OccurredAt < at);
        }

        if (query.After is { } after)
        {
            var at = after.OccurredAt.ToDateTimeUtc();
            events = events.Where(e => e.OccurredAt < at || (e.OccurredAt == at && e.Id < after.Id));
        }

        var rows = await events
            .OrderByDescending(e => e.OccurredAt)
            .ThenByDescending(e => e.Id)
            .Take(query.Limit)
            .ToListAsync(cancellationToken);
        return [.. rows.Select(ToDomain)];
    }

    private static LedgerEvent ToDomain(UsageEventRow row) => new(
        row.Id,
        row.IdempotencyKey,
        row.Kind switch
        {
            "adjustment" => UsageEventKind.Adjustment,
            "reset" => UsageEventKind.Reset,
            _ => UsageEventKind.Usage,
        },
        Utc(row.OccurredAt),
        Utc(row.RecordedAt),
        row.ReservationId,
        row.Reason,
        row.Attributes,
        [.. row.Lines.OrderBy(l => l.UsageType, StringComparer.Ordinal).Select(l => new LedgerEventLine(l.UsageType, l.Amount, Utc(l.PeriodStart)))]);

    private static SubscriptionChangeRecord ToDomain(SubscriptionChangeRow row) => new(
        row.SubjectId,
        row.Version,
        Utc(row.ChangedAt),
        row.Kind == "enrolled" ? SubscriptionChangeKind.Enrolled : SubscriptionChangeKind.Changed,
        row.PlanId,
        row.PreviousPlanId,
        row.BillingAnchorDay,
        row.TimeZone,
        row.PreviousTimeZone,
        row.PreviousBillingAnchorDay);

    private static Instant Utc(DateTime value) => Instant.FromDateTimeUtc(DateTime.SpecifyKind(value, DateTimeKind.Utc));
}
