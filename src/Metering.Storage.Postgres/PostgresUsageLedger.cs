using Metering.Core.Ports;
using Metering.Core.Telemetry;
using Metering.Core.Usage;
using Metering.Storage.Postgres.Entities;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Microsoft.Extensions.Options;
using NodaTime;
using Npgsql;
using Period = Metering.Core.Periods.Period;

namespace Metering.Storage.Postgres;

/// <summary>
/// The ledger on PostgreSQL. Every write of a subject (an event, a hold, its settlement, release or expiry) runs in one
/// transaction that first locks the subject's subscription row, so grants are decided on a state no one else changes
/// meanwhile, and ends by refreshing the changed counters: each gets a new version from one sequence (so the cache can
/// always tell the newer of two values) and an outbox entry, committed with the change.
/// </summary>
public sealed partial class PostgresUsageLedger : IUsageLedger
{
    private readonly IDbContextFactory<MeteringDbContext> _contexts;
    private readonly GroupCommitQueue<PendingWrite> _writes;
    private readonly LedgerGuard _guard;
    private readonly MeteringMetrics? _metrics;

    public PostgresUsageLedger(IDbContextFactory<MeteringDbContext> contexts, IOptions<LedgerWriteOptions>? options = null, MeteringMetrics? metrics = null)
    {
        _contexts = contexts;
        _metrics = metrics;
        _guard = new LedgerGuard(metrics);
        var settings = options?.Value ?? new LedgerWriteOptions();
        _writes = new GroupCommitQueue<PendingWrite>(RunBatchAsync, settings.WriteConnections, settings.MaxWriteBatch);
    }

    /// <summary>Recorded in the next group commit (see <see cref="RunBatchAsync"/>); returns after it committed.</summary>
    public Task<RecordOutcome> RecordAsync(UsageEvent usageEvent, CancellationToken cancellationToken) =>
        _guard.RunAsync("record", token => SubmitAsync<RecordOutcome>(new PendingWrite(usageEvent.SubjectId, usageEvent, null, token)), cancellationToken);

    /// <summary>Decided and placed in the next group commit (see <see cref="RunBatchAsync"/>); returns after it committed.</summary>
    public Task<HoldOutcome> HoldAsync(HoldRequest request, CancellationToken cancellationToken) =>
        _guard.RunAsync("hold", token => SubmitAsync<HoldOutcome>(new PendingWrite(request.SubjectId, null, request, token)), cancellationToken);

    public Task<CounterChanges?> ReleaseHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "release_hold",
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                await using var transaction = await db.Database.BeginTransactionAsync(token);
                var changes = await ReleaseOneAsync(
                    (NpgsqlConnection)db.Database.GetDbConnection(), (NpgsqlTransaction)transaction.GetDbTransaction(), subjectId, reservationId, token);
                if (changes is null)
                {
                    await transaction.RollbackAsync(token);
                    return null;
                }

                await transaction.CommitAsync(token);
                return changes;
            },
            cancellationToken);

    public Task<PlacedHold?> FindHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "find_hold",
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                var row = await db.Holds.AsNoTracking()
                    .Where(h => h.SubjectId == subjectId && h.ReservationId == reservationId)
                    .Select(h => new { h.ExpiresAt, h.PlacedAt })
                    .SingleOrDefaultAsync(token);
                return row is null ? null : new PlacedHold(reservationId, ToInstant(row.ExpiresAt), ToInstant(row.PlacedAt), false);
            },
            cancellationToken);

    public Task<IReadOnlyList<HoldInfo>> ListLiveHoldsAsync(CounterKey key, CancellationToken cancellationToken) =>
        _guard.RunAsync<IReadOnlyList<HoldInfo>>(
            "list_live_holds",
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                var (start, end) = Bounds(key.Period);
                var rows = await db.Database
                    .SqlQuery<HoldInfoRow>($"""
                        SELECT h.reservation_id AS "ReservationId", l.amount AS "Amount", h.expires_at AS "ExpiresAt"
                        FROM hold_lines l JOIN holds h ON h.subject_id = l.subject_id AND h.reservation_id = l.reservation_id
                        WHERE l.subject_id = {key.SubjectId} AND l.usage_type = {key.UsageType}
                          AND l.period_start < {end} AND l.period_end > {start}
                          AND h.ended_at IS NULL AND h.expires_at > now()
                        ORDER BY h.expires_at, h.reservation_id
                        """)
                    .ToListAsync(token);
                return [.. rows.Select(r => new HoldInfo(r.ReservationId, r.Amount, ToInstant(r.ExpiresAt)))];
            },
            cancellationToken);

    public Task<string?> FindFingerprintAsync(string subjectId, string idempotencyKey, CancellationToken cancellationToken) =>
        _guard.RunAsync("find_fingerprint", token => FindFingerprintOnceAsync(subjectId, idempotencyKey, token), cancellationToken);

    /// <summary>
    /// One round trip for every key: total rows nobody wrote to yet are created from their events and live holds (in
    /// key order, and only where none exists, so a concurrent writer either is in the sum or adds to the row), then
    /// every key's row is read by a second statement, which also sees rows another transaction created meanwhile.
    /// </summary>
    public Task<IReadOnlyList<CounterValue>> GetTotalsAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken) =>
        _guard.RunAsync<IReadOnlyList<CounterValue>>(
            "get_totals",
            async token =>
            {
                if (keys.Count == 0)
                {
                    return [];
                }

                await using var db = await _contexts.CreateDbContextAsync(token);
                await db.Database.OpenConnectionAsync(token);
                await using var batch = new NpgsqlBatch((NpgsqlConnection)db.Database.GetDbConnection());
                NpgsqlParameter[] Keys() =>
                [
                    Array(NpgsqlTypes.NpgsqlDbType.Text, keys.Select(k => k.SubjectId).ToArray()),
                    Array(NpgsqlTypes.NpgsqlDbType.Text, keys.Select(k => k.UsageType).ToArray()),
                    Array(NpgsqlTypes.NpgsqlDbType.TimestampTz, keys.Select(k => k.Period.Start.ToDateTimeUtc()).ToArray()),
                    Array(NpgsqlTypes.NpgsqlDbType.TimestampTz, keys.Select(k => k.Period.End.ToDateTimeUtc()).ToArray()),
                ];
                batch.BatchCommands.Add(Command(CreateTotalsSql, Keys()));
                batch.BatchCommands.Add(Command(ReadTotalsSql, Keys()));
                var rows = new Dictionary<(string, string, DateTime), CounterValue>();
                await using (var reader = await batch.ExecuteReaderAsync(token))
                {
                    await reader.NextResultAsync(token);
                    while (await reader.ReadAsync(token))
                    {
                        var subjectId = reader.GetString(0);
                        var row = new TotalRow(reader.GetString(1), reader.GetDateTime(2), reader.GetDateTime(3), reader.GetInt64(4), reader.GetInt64(5), reader.GetInt64(6));
                        rows[(subjectId, row.UsageType, row.Start)] = row.ToValue(subjectId);
                    }
                }

                return [.. keys.Select(k => rows.TryGetValue((k.SubjectId, k.UsageType, k.Period.Start.ToDateTimeUtc()), out var value)
                    ? value
                    : throw new InvalidOperationException($"The total of {k} was neither created nor found."))];
            },
            cancellationToken);

    public Task<LedgerSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "inspect",
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                var (start, end) = Bounds(key.Period);
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
        _guard.RunAsync(
            "reconcile",
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                await using var transaction = await db.Database.BeginTransactionAsync(token);
                await LockSubjectAsync(db, key.SubjectId, token);

                // Lock the row first (creating it from the events if needed); the sum below is a new statement, so it
                // sees every event committed before the lock. An event still in flight waits for this row and adds its
                // amount after our commit, so it is neither lost nor counted twice.
                var locked = await UpsertTotalAsync(db, key, 0, token);
                var (start, end) = Bounds(key.Period);
                var sum = (await db.Database
                    .SqlQuery<long>($"""
                        SELECT COALESCE(SUM(amount), 0) AS "Value" FROM usage_event_lines
                        WHERE subject_id = {key.SubjectId} AND usage_type = {key.UsageType}
                          AND occurred_at >= {start} AND occurred_at < {end}
                        """)
                    .ToListAsync(token))[0];
                await db.Database.ExecuteSqlAsync(
                    $"""
                    UPDATE usage_totals SET total = {sum}
                    WHERE subject_id = {key.SubjectId} AND usage_type = {key.UsageType} AND period_start = {start}
                    """,
                    token);
                var changes = await RefreshCountersAsync(db, key.SubjectId, [new HoldRange(key.UsageType, start, end)], token);
                await transaction.CommitAsync(token);
                return (changes.Values.First(v => v.Key.Period.Start == key.Period.Start), locked.Total != sum);
            },
            cancellationToken);

    public Task<IReadOnlyList<string>> ListActiveSubjectsAsync(Instant now, CancellationToken cancellationToken) =>
        _guard.RunAsync<IReadOnlyList<string>>(
            "list_active_subjects",
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                var at = now.ToDateTimeUtc();
                return await db.UsageTotals.AsNoTracking()
                    .Where(t => t.PeriodStart <= at && t.PeriodEnd > at)
                    .Select(t => t.SubjectId)
                    .Distinct()
                    .OrderBy(s => s)
                    .ToListAsync(token);
            },
            cancellationToken);

    public Task<int> DrainOutboxAsync(Func<OutboxBatch, Task> apply, Duration minAge, int max, CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "drain_outbox",
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                await using var transaction = await db.Database.BeginTransactionAsync(token);
                if (_metrics is not null)
                {
                    // Every entry waiting, this batch's included (the table is a queue: it stays short).
                    _metrics.SetOutboxBacklog(await db.Database
                        .SqlQuery<long>($"SELECT count(*) AS \"Value\" FROM counter_outbox")
                        .SingleAsync(token));
                }

                var age = minAge.ToTimeSpan();
                var rows = await db.Database
                    .SqlQuery<OutboxRow>($"""
                        SELECT o.id AS "Id", o.kind AS "Kind", o.subject_id AS "SubjectId", o.usage_type AS "UsageType",
                               o.period_start AS "PeriodStart", t.period_end AS "PeriodEnd",
                               t.total AS "Total", t.held AS "Held", t.version AS "Version"
                        FROM counter_outbox o
                        LEFT JOIN usage_totals t
                          ON t.subject_id = o.subject_id AND t.usage_type = o.usage_type AND t.period_start = o.period_start
                        WHERE o.created_at <= now() - {age}
                        ORDER BY o.id
                        LIMIT {max}
                        FOR UPDATE OF o SKIP LOCKED
                        """)
                    .ToListAsync(token);
                if (rows.Count == 0)
                {
                    return 0;
                }

                // A row gone since (dropped by a calendar change) has nothing to apply: its counter was fenced then.
                var values = rows
                    .Where(r => r.Kind == CounterOutboxRow.CounterKind && r.Version is not null)
                    .Select(r => new CounterValue(
                        new CounterKey(r.SubjectId!, r.UsageType!, new Period(ToInstant(r.PeriodStart!.Value), ToInstant(r.PeriodEnd!.Value))),
                        r.Total!.Value,
                        r.Held!.Value,
                        r.Version!.Value))
                    .DistinctBy(v => v.Key)
                    .ToList();
                var subscriptions = rows.Where(r => r.Kind == CounterOutboxRow.SubscriptionKind).Select(r => r.SubjectId!).Distinct(StringComparer.Ordinal).ToList();
                await apply(new OutboxBatch(values, subscriptions, rows.Any(r => r.Kind == CounterOutboxRow.CatalogKind)));
                var ids = rows.Select(r => r.Id).ToArray();
                await db.Database.ExecuteSqlAsync($"DELETE FROM counter_outbox WHERE id = ANY({ids})", token);
                await transaction.CommitAsync(token);
                return rows.Count;
            },
            cancellationToken);

    public Task<int> ExpireHoldsAsync(int max, CancellationToken cancellationToken) =>
        _guard.RunAsync(
            "expire_holds",
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                var subjects = await db.Database
                    .SqlQuery<string>($"""
                        SELECT DISTINCT subject_id AS "Value" FROM holds
                        WHERE ended_at IS NULL AND expires_at <= now()
                        LIMIT {max}
                        """)
                    .ToListAsync(token);
                var expired = 0;
                foreach (var subjectId in subjects)
                {
                    await using var transaction = await db.Database.BeginTransactionAsync(token);
                    await LockSubjectAsync(db, subjectId, token);
                    var lines = await db.Database
                        .SqlQuery<ExpiredLine>($"""
                            WITH due AS (
                                UPDATE holds SET ended_at = expires_at, end_reason = 'expired'
                                WHERE subject_id = {subjectId} AND ended_at IS NULL AND expires_at <= now()
                                RETURNING reservation_id
                            )
                            SELECT due.reservation_id AS "ReservationId", l.usage_type AS "UsageType",
                                   l.period_start AS "Start", l.period_end AS "End"
                            FROM hold_lines l JOIN due ON l.reservation_id = due.reservation_id
                            WHERE l.subject_id = {subjectId}
                            """)
                        .ToListAsync(token);
                    await RefreshCountersAsync(db, subjectId, [.. lines.Select(l => new HoldRange(l.UsageType, l.Start, l.End))], token);
                    await transaction.CommitAsync(token);
                    expired += lines.Select(l => l.ReservationId).Distinct(StringComparer.Ordinal).Count();
                }

                if (_metrics is not null)
                {
                    // Once a second, after the expired ones ended: a count over the partial index of live holds.
                    _metrics.SetLiveHolds(await db.Database
                        .SqlQuery<long>($"SELECT count(*) AS \"Value\" FROM holds WHERE ended_at IS NULL")
                        .SingleAsync(token));
                }

                return expired;
            },
            cancellationToken);

    /// <summary>
    /// Every total row of the subject overlapping one of <paramref name="ranges"/> gets its held amount recomputed from
    /// the live holds, a new version and an outbox entry; returns the new values, for the cache.
    /// </summary>
    private static async Task<CounterChanges> RefreshCountersAsync(MeteringDbContext db, string subjectId, IReadOnlyList<HoldRange> ranges, CancellationToken cancellationToken)
    {
        var values = new Dictionary<CounterKey, CounterValue>();
        foreach (var range in ranges.Distinct())
        {
            var rows = await db.Database
                .SqlQuery<TotalRow>($"""
                    WITH changed AS (
                        UPDATE usage_totals t
                        SET held = (
                                SELECT COALESCE(SUM(l.amount), 0) FROM holds h
                                JOIN hold_lines l ON l.subject_id = h.subject_id AND l.reservation_id = h.reservation_id
                                WHERE h.subject_id = t.subject_id AND h.ended_at IS NULL AND h.expires_at > now()
                                  AND l.usage_type = t.usage_type
                                  AND l.period_start < t.period_end AND l.period_end > t.period_start),
                            version = nextval('usage_total_versions')
                        WHERE t.subject_id = {subjectId} AND t.usage_type = {range.UsageType}
                          AND t.period_start < {range.End} AND t.period_end > {range.Start}
                        RETURNING t.usage_type, t.period_start, t.period_end, t.total, t.held, t.version
                    ), queued AS (
                        INSERT INTO counter_outbox (kind, subject_id, usage_type, period_start)
                        SELECT 'counter', {subjectId}, usage_type, period_start FROM changed
                    )
                    SELECT usage_type AS "UsageType", period_start AS "Start", period_end AS "End",
                           total AS "Total", held AS "Held", version AS "Version"
                    FROM changed
                    """)
                .ToListAsync(cancellationToken);
            foreach (var row in rows)
            {
                var value = row.ToValue(subjectId);
                values[value.Key] = value;
            }
        }

        return new CounterChanges([.. values.Values]);
    }

    private static Task LockSubjectAsync(MeteringDbContext db, string subjectId, CancellationToken cancellationToken) =>
        db.Database.ExecuteSqlAsync($"SELECT 1 FROM subscriptions WHERE subject_id = {subjectId} FOR NO KEY UPDATE", cancellationToken);

    private async Task<string?> FindFingerprintOnceAsync(string subjectId, string idempotencyKey, CancellationToken cancellationToken)
    {
        await using var db = await _contexts.CreateDbContextAsync(cancellationToken);
        return await db.UsageEvents
            .Where(e => e.SubjectId == subjectId && e.IdempotencyKey == idempotencyKey)
            .Select(e => e.Fingerprint)
            .SingleOrDefaultAsync(cancellationToken);
    }

    /// <summary>
    /// The one statement that writes a period total, returning it with its held amount and version and keeping its row
    /// locked until the transaction ends. An existing row (the usual case) is updated in place: <paramref name="amount"/>
    /// added and a new version drawn from the sequence, or, with 0, returned as it is. Only a period nobody wrote to yet
    /// pays for summing its events (the caller's own new event included) and its live holds: a concurrent first write
    /// either commits before that sum (and is in it) or conflicts and adds its amount to the row.
    /// </summary>
    private static async Task<CounterValue> UpsertTotalAsync(MeteringDbContext db, CounterKey key, long amount, CancellationToken cancellationToken)
    {
        var (start, end) = Bounds(key.Period);
        var rows = await db.Database
            .SqlQuery<TotalRow>($"""
                WITH updated AS (
                    UPDATE usage_totals
                    SET total = total + {amount},
                        version = CASE WHEN {amount} = 0 THEN version ELSE nextval('usage_total_versions') END
                    WHERE subject_id = {key.SubjectId} AND usage_type = {key.UsageType} AND period_start = {start}
                    RETURNING usage_type, period_start, period_end, total, held, version
                ), inserted AS (
                    INSERT INTO usage_totals (subject_id, usage_type, period_start, period_end, total, held, version)
                    SELECT {key.SubjectId}, {key.UsageType}, {start}, {end},
                           COALESCE(SUM(l.amount), 0),
                           (SELECT COALESCE(SUM(hl.amount), 0) FROM holds h
                            JOIN hold_lines hl ON hl.subject_id = h.subject_id AND hl.reservation_id = h.reservation_id
                            WHERE h.subject_id = {key.SubjectId} AND h.ended_at IS NULL AND h.expires_at > now()
                              AND hl.usage_type = {key.UsageType} AND hl.period_start < {end} AND hl.period_end > {start}),
                           nextval('usage_total_versions')
                    FROM usage_event_lines l
                    WHERE NOT EXISTS (SELECT 1 FROM updated)
                      AND l.subject_id = {key.SubjectId} AND l.usage_type = {key.UsageType}
                      AND l.occurred_at >= {start} AND l.occurred_at < {end}
                    HAVING NOT EXISTS (SELECT 1 FROM updated)
                    ON CONFLICT (subject_id, usage_type, period_start) DO UPDATE
                    SET total = usage_totals.total + {amount},
                        version = CASE WHEN {amount} = 0 THEN usage_totals.version ELSE nextval('usage_total_versions') END
                    RETURNING usage_type, period_start, period_end, total, held, version
                )
                SELECT usage_type AS "UsageType", period_start AS "Start", period_end AS "End",
                       total AS "Total", held AS "Held", version AS "Version" FROM updated
                UNION ALL
                SELECT usage_type AS "UsageType", period_start AS "Start", period_end AS "End",
                       total AS "Total", held AS "Held", version AS "Version" FROM inserted
                """)
            .ToListAsync(cancellationToken);
        var row = rows[0];
        return new CounterValue(key, row.Total, row.Held, row.Version);
    }

    private static (DateTime Start, DateTime End) Bounds(Period period) =>
        (period.Start.ToDateTimeUtc(), period.End.ToDateTimeUtc());

    private static Instant ToInstant(DateTime value) => Instant.FromDateTimeUtc(DateTime.SpecifyKind(value, DateTimeKind.Utc));

    private static string? NullIfEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;

    private sealed record TotalRow(string UsageType, DateTime Start, DateTime End, long Total, long Held, long Version)
    {
        public CounterValue ToValue(string subjectId) =>
            new(new CounterKey(subjectId, UsageType, new Period(ToInstant(Start), ToInstant(End))), Total, Held, Version);
    }

    private sealed record HoldRange(string UsageType, DateTime Start, DateTime End);

    private sealed record ExpiredLine(string ReservationId, string UsageType, DateTime Start, DateTime End);

    private sealed record HoldInfoRow(string ReservationId, long Amount, DateTime ExpiresAt);

    private sealed record EventSumRow(long Total, long Count);

    private sealed record OutboxRow(long Id, string Kind, string? SubjectId, string? UsageType, DateTime? PeriodStart, DateTime? PeriodEnd, long? Total, long? Held, long? Version);

    private sealed record EarlierHold(PlacedHold Hold, IReadOnlyList<(string UsageType, long Amount)> Lines, bool Live);
}
