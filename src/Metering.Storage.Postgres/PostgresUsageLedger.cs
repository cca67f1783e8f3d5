using Metering.Core.Errors;
using Metering.Core.Ports;
using Metering.Core.Usage;
using Metering.Core.Validation;
using Metering.Storage.Postgres.Entities;
using Microsoft.EntityFrameworkCore;
using NodaTime;
using Npgsql;

namespace Metering.Storage.Postgres;

/// <summary>
/// The ledger on PostgreSQL. An event and the totals of its periods change in one transaction; every total
/// change draws a new version from one sequence, so the cache can always tell the newer of two values.
/// </summary>
public sealed class PostgresUsageLedger(IDbContextFactory<MeteringDbContext> contexts) : IUsageLedger
{
    public Task<RecordOutcome> RecordAsync(UsageEvent usageEvent, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(token => RecordOnceAsync(usageEvent, token), cancellationToken);

    public Task<string?> FindFingerprintAsync(string subjectId, string idempotencyKey, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(token => FindFingerprintOnceAsync(subjectId, idempotencyKey, token), cancellationToken);

    public Task<IReadOnlyList<CounterValue>> GetTotalsAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(token => GetTotalsOnceAsync(keys, token), cancellationToken);

    public Task<LedgerSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(
            async token =>
            {
                await using var db = await contexts.CreateDbContextAsync(token);
                var (start, end) = Bounds(key);
                var events = (await db.Database
                    .SqlQuery<EventSumRow>($"""
                        SELECT COALESCE(SUM(amount), 0) AS "Total", COUNT(*) AS "Count"
                        FROM usage_event_lines
                        WHERE subject_id = {key.SubjectId} AND usage_type = {key.UsageType}
                          AND occurred_at >= {start} AND occurred_at < {end}
                        """)
                    .ToListAsync(token))[0];
                var row = await db.UsageTotals.AsNoTracking()
                    .Where(t => t.SubjectId == key.SubjectId && t.UsageType == key.UsageType && t.PeriodStart == start)
                    .Select(t => new { t.Total, t.Version })
                    .SingleOrDefaultAsync(token);
                return new LedgerSnapshot(events.Total, events.Count, row?.Total, row?.Version);
            },
            cancellationToken);

    public Task<(CounterValue Value, bool RowFixed)> ReconcileAsync(CounterKey key, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(
            async token =>
            {
                await using var db = await contexts.CreateDbContextAsync(token);
                await using var transaction = await db.Database.BeginTransactionAsync(token);

                // Lock the row first (creating it from the events if needed); the sum below is a new statement, so it
                // sees every event committed before the lock. An event still in flight waits for this row and adds its
                // amount after our commit, so it is neither lost nor counted twice.
                var locked = await LockTotalAsync(db, key, token);
                var (start, end) = Bounds(key);
                var sum = (await db.Database
                    .SqlQuery<long>($"""
                        SELECT COALESCE(SUM(amount), 0) AS "Value" FROM usage_event_lines
                        WHERE subject_id = {key.SubjectId} AND usage_type = {key.UsageType}
                          AND occurred_at >= {start} AND occurred_at < {end}
                        """)
                    .ToListAsync(token))[0];
                var row = (await db.Database
                    .SqlQuery<TotalRow>($"""
                        UPDATE usage_totals SET total = {sum}, version = nextval('usage_total_versions')
                        WHERE subject_id = {key.SubjectId} AND usage_type = {key.UsageType} AND period_start = {start}
                        RETURNING total AS "Total", version AS "Version"
                        """)
                    .ToListAsync(token))[0];
                await transaction.CommitAsync(token);
                return (new CounterValue(key, row.Total, row.Version), locked != sum);
            },
            cancellationToken);

    public Task<IReadOnlyList<string>> ListActiveSubjectsAsync(Instant now, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync<IReadOnlyList<string>>(
            async token =>
            {
                await using var db = await contexts.CreateDbContextAsync(token);
                var at = now.ToDateTimeUtc();
                return await db.UsageTotals.AsNoTracking()
                    .Where(t => t.PeriodStart <= at && t.PeriodEnd > at)
                    .Select(t => t.SubjectId)
                    .Distinct()
                    .OrderBy(s => s)
                    .ToListAsync(token);
            },
            cancellationToken);

    private async Task<RecordOutcome> RecordOnceAsync(UsageEvent usageEvent, CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        await using var transaction = await db.Database.BeginTransactionAsync(cancellationToken);

        // The periods were computed with this calendar: hold it still until commit, or start over.
        var calendar = await db.Database
            .SqlQuery<CalendarRow>($"""
                SELECT billing_anchor_day AS "BillingAnchorDay", time_zone AS "TimeZone"
                FROM subscriptions WHERE subject_id = {usageEvent.SubjectId} FOR SHARE
                """)
            .ToListAsync(cancellationToken);
        if (calendar is not [var current] ||
            current.BillingAnchorDay != usageEvent.Calendar.BillingAnchorDay ||
            current.TimeZone != usageEvent.Calendar.TimeZone)
        {
            return new RecordOutcome.CalendarChanged();
        }

        if (usageEvent.Kind == UsageEventKind.Reset)
        {
            // Lock the period total (creating it from the events if needed) and record minus it: usage racing the reset
            // waits for this row and is added after it, so it is never lost.
            var line = usageEvent.Lines[0];
            var periodTotal = await LockTotalAsync(db, line.Key, cancellationToken);
            usageEvent = usageEvent with { Lines = [line with { Amount = -periodTotal }] };
        }

        db.UsageEvents.Add(ToRow(usageEvent));
        try
        {
            await db.SaveChangesAsync(cancellationToken);
        }
        catch (DbUpdateException ex) when (ex.InnerException is PostgresException { SqlState: PostgresErrorCodes.UniqueViolation })
        {
            await transaction.RollbackAsync(cancellationToken);
            var recorded = await FindFingerprintOnceAsync(usageEvent.SubjectId, usageEvent.IdempotencyKey, cancellationToken)
                ?? throw new InvalidOperationException("A conflicting usage event vanished.", ex);
            return new RecordOutcome.AlreadyRecorded(recorded);
        }

        // One statement per line, in usage type order so that concurrent events lock totals in the same order.
        var totals = new List<CounterValue>(usageEvent.Lines.Count);
        foreach (var line in usageEvent.Lines.OrderBy(l => l.Key.UsageType, StringComparer.Ordinal))
        {
            var row = await UpsertTotalAsync(db, line.Key, line.Amount, cancellationToken);
            if (row.Total > RequestValidator.MaxPeriodTotal)
            {
                // Refused before it could grow towards what Lua's doubles or int64 cannot hold.
                await transaction.RollbackAsync(cancellationToken);
                return new RecordOutcome.TotalCeilingReached(line.Key.UsageType);
            }

            if (row.Total < 0)
            {
                await transaction.RollbackAsync(cancellationToken);
                throw new PreconditionFailedException(
                    "USAGE_BELOW_ZERO",
                    $"The correction would take the '{line.Key.UsageType}' total of its period to {row.Total}; totals never go below zero.",
                    new Dictionary<string, string>
                    {
                        ["usage_type"] = line.Key.UsageType,
                        ["total"] = (row.Total - line.Amount).ToString(System.Globalization.CultureInfo.InvariantCulture),
                        ["amount"] = line.Amount.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    });
            }

            totals.Add(new CounterValue(line.Key, row.Total, row.Version));
        }

        await transaction.CommitAsync(cancellationToken);
        return new RecordOutcome.Recorded(totals, usageEvent.Lines);
    }

    private async Task<string?> FindFingerprintOnceAsync(string subjectId, string idempotencyKey, CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        return await db.UsageEvents
            .Where(e => e.SubjectId == subjectId && e.IdempotencyKey == idempotencyKey)
            .Select(e => e.Fingerprint)
            .SingleOrDefaultAsync(cancellationToken);
    }

    private async Task<IReadOnlyList<CounterValue>> GetTotalsOnceAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        var values = new List<CounterValue>(keys.Count);
        foreach (var key in keys)
        {
            var row = await UpsertTotalAsync(db, key, 0, cancellationToken);
            values.Add(new CounterValue(key, row.Total, row.Version));
        }

        return values;
    }

    /// <summary>The period total, created from the events where there is no row yet, locked until the transaction ends.</summary>
    private static async Task<long> LockTotalAsync(MeteringDbContext db, CounterKey key, CancellationToken cancellationToken) =>
        (await UpsertTotalAsync(db, key, 0, cancellationToken)).Total;

    /// <summary>
    /// The one statement that writes a period total, returning it with its version and keeping its row locked until the
    /// transaction ends. An existing row (the usual case) is updated in place: <paramref name="amount"/> added and a new
    /// version drawn from the sequence, or, with 0, returned as it is (the update makes RETURNING see its latest
    /// committed state). Only a period nobody wrote to yet pays for summing its events (the caller's own new event
    /// included; the NOT EXISTS in WHERE skips the scan, the one in HAVING the aggregate's row): a concurrent first
    /// write either commits before that sum (and is in it) or conflicts and adds its amount to the row.
    /// </summary>
    private static async Task<TotalRow> UpsertTotalAsync(MeteringDbContext db, CounterKey key, long amount, CancellationToken cancellationToken)
    {
        var (start, end) = Bounds(key);
        var rows = await db.Database
            .SqlQuery<TotalRow>($"""
                WITH updated AS (
                    UPDATE usage_totals
                    SET total = total + {amount},
                        version = CASE WHEN {amount} = 0 THEN version ELSE nextval('usage_total_versions') END
                    WHERE subject_id = {key.SubjectId} AND usage_type = {key.UsageType} AND period_start = {start}
                    RETURNING total, version
                ), inserted AS (
                    INSERT INTO usage_totals (subject_id, usage_type, period_start, period_end, total, version)
                    SELECT {key.SubjectId}, {key.UsageType}, {start}, {end},
                           COALESCE(SUM(l.amount), 0), nextval('usage_total_versions')
                    FROM usage_event_lines l
                    WHERE NOT EXISTS (SELECT 1 FROM updated)
                      AND l.subject_id = {key.SubjectId} AND l.usage_type = {key.UsageType}
                      AND l.occurred_at >= {start} AND l.occurred_at < {end}
                    HAVING NOT EXISTS (SELECT 1 FROM updated)
                    ON CONFLICT (subject_id, usage_type, period_start) DO UPDATE
                    SET total = usage_totals.total + {amount},
                        version = CASE WHEN {amount} = 0 THEN usage_totals.version ELSE nextval('usage_total_versions') END
                    RETURNING total, version
                )
                SELECT total AS "Total", version AS "Version" FROM updated
                UNION ALL
                SELECT total AS "Total", version AS "Version" FROM inserted
                """)
            .ToListAsync(cancellationToken);
        return rows[0];
    }

    private static (DateTime Start, DateTime End) Bounds(CounterKey key) =>
        (key.Period.Start.ToDateTimeUtc(), key.Period.End.ToDateTimeUtc());

    private static UsageEventRow ToRow(UsageEvent usageEvent) => new()
    {
        SubjectId = usageEvent.SubjectId,
        IdempotencyKey = usageEvent.IdempotencyKey,
        Fingerprint = usageEvent.Fingerprint,
        OccurredAt = usageEvent.OccurredAt.ToDateTimeUtc(),
        RecordedAt = usageEvent.RecordedAt.ToDateTimeUtc(),
        ReservationId = string.IsNullOrEmpty(usageEvent.ReservationId) ? null : usageEvent.ReservationId,
        Kind = usageEvent.Kind.ToString().ToLowerInvariant(),
        Reason = usageEvent.Reason,
        Attributes = new Dictionary<string, string>(usageEvent.Attributes),
        RecordedBy = usageEvent.RecordedBy,
        Lines = [.. usageEvent.Lines.Select(l => new UsageEventLineRow
        {
            UsageType = l.Key.UsageType,
            Amount = l.Amount,
            SubjectId = usageEvent.SubjectId,
            OccurredAt = usageEvent.OccurredAt.ToDateTimeUtc(),
            PeriodStart = l.Key.Period.Start.ToDateTimeUtc(),
        })],
    };

    private sealed record CalendarRow(int BillingAnchorDay, string TimeZone);

    private sealed record TotalRow(long Total, long Version);

    private sealed record EventSumRow(long Total, long Count);
}
