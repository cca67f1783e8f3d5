using System.Text.Json;
using Metering.Core.History;
using Metering.Core.Ports;
using Metering.Core.Usage;
using Metering.Storage.Embedded.Entities;
using Microsoft.EntityFrameworkCore;
using NodaTime;

namespace Metering.Storage.Embedded;

/// <summary>History reads from the embedded database: ledger events (keyset-paged) and the subscription audit.</summary>
public sealed class EmbeddedHistoryStore(EmbeddedDatabase database) : IHistoryStore
{
    public Task<IReadOnlyList<LedgerEvent>> ListEventsAsync(EventQuery query, CancellationToken cancellationToken) =>
        database.ReadAsync<IReadOnlyList<LedgerEvent>>(
            async (db, token) =>
            {
                var events = db.UsageEvents.AsNoTracking().Include(e => e.Lines).Where(e => e.SubjectId == query.SubjectId);
                if (query.UsageType is { } usageType)
                {
                    events = events.Where(e => e.Lines.Any(l => l.UsageType == usageType));
                }

                if (query.From is { } from)
                {
                    var at = from.ToUnixTimeTicks();
                    events = events.Where(e => e.OccurredAt >= at);
                }

                if (query.To is { } to)
                {
                    var at = to.ToUnixTimeTicks();
                    events = events.Where(e => e.OccurredAt < at);
                }

                if (query.After is { } after)
                {
                    var at = after.OccurredAt.ToUnixTimeTicks();
                    events = events.Where(e => e.OccurredAt < at || (e.OccurredAt == at && e.Id < after.Id));
                }

                var rows = await events
                    .OrderByDescending(e => e.OccurredAt)
                    .ThenByDescending(e => e.Id)
                    .Take(query.Limit)
                    .ToListAsync(token);
                return [.. rows.Select(ToDomain)];
            },
            cancellationToken);

    public Task<IReadOnlyList<SubscriptionChangeRecord>> ListSubscriptionChangesAsync(string subjectId, int limit, CancellationToken cancellationToken) =>
        database.ReadAsync<IReadOnlyList<SubscriptionChangeRecord>>(
            async (db, token) =>
            {
                var rows = await db.SubscriptionChanges.AsNoTracking()
                    .Where(c => c.SubjectId == subjectId)
                    .OrderByDescending(c => c.Id)
                    .Take(limit)
                    .ToListAsync(token);
                return [.. rows.Select(ToDomain)];
            },
            cancellationToken);

    private static LedgerEvent ToDomain(UsageEventRow row) => new(
        row.Id,
        row.IdempotencyKey,
        row.Kind switch
        {
            "adjustment" => UsageEventKind.Adjustment,
            "reset" => UsageEventKind.Reset,
            _ => UsageEventKind.Usage,
        },
        Instant.FromUnixTimeTicks(row.OccurredAt),
        Instant.FromUnixTimeTicks(row.RecordedAt),
        row.ReservationId,
        row.Reason,
        JsonSerializer.Deserialize<Dictionary<string, string>>(row.Attributes) ?? [],
        [.. row.Lines.OrderBy(l => l.UsageType, StringComparer.Ordinal).Select(l => new LedgerEventLine(l.UsageType, l.Amount, Instant.FromUnixTimeTicks(l.PeriodStart)))]);

    private static SubscriptionChangeRecord ToDomain(SubscriptionChangeRow row) => new(
        row.SubjectId,
        row.Version,
        Instant.FromUnixTimeTicks(row.ChangedAt),
        row.Kind == "enrolled" ? SubscriptionChangeKind.Enrolled : SubscriptionChangeKind.Changed,
        row.PlanId,
        row.PreviousPlanId,
        row.BillingAnchorDay,
        row.TimeZone,
        row.PreviousTimeZone,
        row.PreviousBillingAnchorDay);
}
