using System.Globalization;
using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Ports;
using Metering.Core.Usage;
using Metering.Core.Validation;
using Metering.Storage.Postgres.Entities;
using Microsoft.EntityFrameworkCore;
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

    public PostgresUsageLedger(IDbContextFactory<MeteringDbContext> contexts, IOptions<LedgerWriteOptions>? options = null)
    {
        _contexts = contexts;
        var settings = options?.Value ?? new LedgerWriteOptions();
        _writes = new GroupCommitQueue<PendingWrite>(RunBatchAsync, settings.WriteConnections, settings.MaxWriteBatch);
    }

    /// <summary>Recorded in the next group commit (see <see cref="RunBatchAsync"/>); returns after it committed.</summary>
    public Task<RecordOutcome> RecordAsync(UsageEvent usageEvent, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(token => SubmitAsync<RecordOutcome>(new PendingWrite(usageEvent.SubjectId, usageEvent, null, token)), cancellationToken);

    /// <summary>Decided and placed in the next group commit (see <see cref="RunBatchAsync"/>); returns after it committed.</summary>
    public Task<HoldOutcome> HoldAsync(HoldRequest request, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(token => SubmitAsync<HoldOutcome>(new PendingWrite(request.SubjectId, null, request, token)), cancellationToken);

    public Task<CounterChanges?> ReleaseHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                await using var transaction = await db.Database.BeginTransactionAsync(token);
                await LockSubjectAsync(db, subjectId, token);
                var ended = await EndHoldAsync(db, subjectId, reservationId, "released", token);
                if (ended.Count == 0)
                {
                    await transaction.RollbackAsync(token);
                    return null;
                }

                var changes = await RefreshCountersAsync(db, subjectId, ended, token);
                await transaction.CommitAsync(token);
                return changes;
            },
            cancellationToken);

    public Task<PlacedHold?> FindHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync(
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
        LedgerGuard.RunAsync<IReadOnlyList<HoldInfo>>(
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
        LedgerGuard.RunAsync(token => FindFingerprintOnceAsync(subjectId, idempotencyKey, token), cancellationToken);

    /// <summary>
    /// One round trip for every key: total rows nobody wrote to yet are created from their events and live holds (in
    /// key order, and only where none exists, so a concurrent writer either is in the sum or adds to the row), then
    /// every key's row is read by a second statement, which also sees rows another transaction created meanwhile.
    /// </summary>
    public Task<IReadOnlyList<CounterValue>> GetTotalsAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken) =>
        LedgerGuard.RunAsync<IReadOnlyList<CounterValue>>(
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
        LedgerGuard.RunAsync(
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
        LedgerGuard.RunAsync(
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
        LedgerGuard.RunAsync<IReadOnlyList<string>>(
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
        LedgerGuard.RunAsync(
            async token =>
            {
                await using var db = await _contexts.CreateDbContextAsync(token);
                await using var transaction = await db.Database.BeginTransactionAsync(token);
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
        LedgerGuard.RunAsync(
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

                return expired;
            },
            cancellationToken);

    /// <summary>
    /// Decides and places one hold inside the batch's transaction, the subject locked and its calendar checked by the
    /// caller. Returns the outcome and whether it wrote anything to keep (only a newly placed hold).
    /// </summary>
    private static async Task<(HoldOutcome Outcome, bool Keep)> HoldInAsync(MeteringDbContext db, HoldRequest request, CancellationToken cancellationToken)
    {
        var readings = await ReadAsync(db, request.SubjectId, request.Lines, excludeReservationId: null, cancellationToken);
        if (request.RequestId is { } requestId && await FindByRequestIdAsync(db, request.SubjectId, requestId, cancellationToken) is { } earlier)
        {
            var same = earlier.Lines.Count == request.Lines.Count && request.Lines.All(l =>
                earlier.Lines.Any(e => e.UsageType == l.Key.UsageType && e.Amount == l.Amount));
            if (!same)
            {
                return (new HoldOutcome.RequestIdConflict(), false);
            }

            // The hold is in the readings already: report them without it, as the first answer did.
            var withoutIt = readings.Select((r, i) => r with { Reserved = Math.Max(0, r.Reserved - (earlier.Live ? request.Lines[i].Amount : 0)) }).ToList();
            return (new HoldOutcome.Decided(withoutIt, earlier.Live ? earlier.Hold : null, CounterChanges.None), false);
        }

        var granted = request.Lines.Select((line, i) => LimitRules.CanGrant(line.Limit, readings[i].Used, readings[i].Reserved, line.Amount)).All(ok => ok);
        if (!granted)
        {
            return (new HoldOutcome.Decided(readings, null, CounterChanges.None), false);
        }

        var live = (await db.Database
            .SqlQuery<int>($"""
                SELECT COUNT(*)::int AS "Value" FROM holds
                WHERE subject_id = {request.SubjectId} AND ended_at IS NULL AND expires_at > now()
                """)
            .ToListAsync(cancellationToken))[0];
        if (live >= request.MaxLiveHolds)
        {
            return (new HoldOutcome.TooManyHolds(live), false);
        }

        var placedAt = request.PlacedAt.ToDateTimeUtc();
        var ttl = request.Ttl.ToTimeSpan();
        var expiresAt = (await db.Database
            .SqlQuery<DateTime>($"""
                INSERT INTO holds (subject_id, reservation_id, request_id, placed_at, expires_at)
                VALUES ({request.SubjectId}, {request.ReservationId}, {request.RequestId}, {placedAt}, now() + {ttl})
                RETURNING expires_at AS "Value"
                """)
            .ToListAsync(cancellationToken))[0];
        var ranges = new List<HoldRange>(request.Lines.Count);
        foreach (var line in request.Lines)
        {
            var (start, end) = Bounds(line.Key.Period);
            await db.Database.ExecuteSqlAsync(
                $"""
                INSERT INTO hold_lines (subject_id, reservation_id, usage_type, period_start, period_end, amount)
                VALUES ({request.SubjectId}, {request.ReservationId}, {line.Key.UsageType}, {start}, {end}, {line.Amount})
                """,
                cancellationToken);
            ranges.Add(new HoldRange(line.Key.UsageType, start, end));
        }

        var changes = await RefreshCountersAsync(db, request.SubjectId, ranges, cancellationToken);
        return (new HoldOutcome.Decided(readings, new PlacedHold(request.ReservationId, ToInstant(expiresAt), request.PlacedAt, false), changes), true);
    }

    /// <summary>
    /// Records one event inside the batch's transaction, the subject locked and its calendar checked by the caller.
    /// Returns the outcome and whether it wrote anything to keep (only <see cref="RecordOutcome.Recorded"/>); a
    /// correction that would take a total below zero throws, and the caller undoes what it wrote.
    /// </summary>
    private static async Task<(RecordOutcome Outcome, bool Keep)> RecordInAsync(MeteringDbContext db, UsageEvent usageEvent, CancellationToken cancellationToken)
    {
        if (usageEvent.Kind == UsageEventKind.Reset)
        {
            // Record minus the period total: usage racing the reset waits for the subject and is added after it.
            var line = usageEvent.Lines[0];
            var periodTotal = (await UpsertTotalAsync(db, line.Key, 0, cancellationToken)).Total;
            usageEvent = usageEvent with { Lines = [line with { Amount = -periodTotal }] };
        }

        // The key first: a retry racing its original waits for the subject, then finds the event and is a duplicate,
        // whether or not it is enforced.
        var eventId = (await db.Database
            .SqlQuery<long?>($"""
                INSERT INTO usage_events (subject_id, idempotency_key, fingerprint, occurred_at, recorded_at, reservation_id, recorded_by, kind, reason, attributes)
                VALUES ({usageEvent.SubjectId}, {usageEvent.IdempotencyKey}, {usageEvent.Fingerprint}, {usageEvent.OccurredAt.ToDateTimeUtc()},
                        {usageEvent.RecordedAt.ToDateTimeUtc()}, {NullIfEmpty(usageEvent.ReservationId)}, {usageEvent.RecordedBy},
                        {usageEvent.Kind.ToString().ToLowerInvariant()}, {usageEvent.Reason}, {System.Text.Json.JsonSerializer.Serialize(usageEvent.Attributes)}::jsonb)
                ON CONFLICT (subject_id, idempotency_key) DO NOTHING
                RETURNING id AS "Value"
                """)
            .ToListAsync(cancellationToken)).SingleOrDefault();
        if (eventId is null)
        {
            // The conflicting event is committed (the insert waited for it) or was written earlier in this
            // transaction, so a new statement sees it.
            var recorded = await db.UsageEvents
                .Where(e => e.SubjectId == usageEvent.SubjectId && e.IdempotencyKey == usageEvent.IdempotencyKey)
                .Select(e => e.Fingerprint)
                .SingleOrDefaultAsync(cancellationToken)
                ?? throw new InvalidOperationException("A conflicting usage event vanished.");
            return (new RecordOutcome.AlreadyRecorded(recorded), false);
        }

        if (usageEvent.EnforcedLimits is { } limits)
        {
            var lines = usageEvent.Lines.Select((l, i) => new CounterLine(l.Key, l.Amount, limits[i])).ToList();
            var readings = await ReadAsync(db, usageEvent.SubjectId, lines, NullIfEmpty(usageEvent.ReservationId), cancellationToken);
            if (!lines.Select((line, i) => LimitRules.CanGrant(line.Limit, readings[i].Used, readings[i].Reserved, line.Amount)).All(ok => ok))
            {
                return (new RecordOutcome.Refused(readings), false);
            }
        }

        foreach (var line in usageEvent.Lines)
        {
            var (start, end) = Bounds(line.Key.Period);
            await db.Database.ExecuteSqlAsync(
                $"""
                INSERT INTO usage_event_lines (event_id, usage_type, amount, subject_id, occurred_at, period_start)
                VALUES ({eventId}, {line.Key.UsageType}, {line.Amount}, {usageEvent.SubjectId}, {usageEvent.OccurredAt.ToDateTimeUtc()}, {start})
                """,
                cancellationToken);
        }

        // In usage type order, so that concurrent writers lock totals in the same order.
        var totals = new List<CounterValue>(usageEvent.Lines.Count);
        foreach (var line in usageEvent.Lines.OrderBy(l => l.Key.UsageType, StringComparer.Ordinal))
        {
            var row = await UpsertTotalAsync(db, line.Key, line.Amount, cancellationToken);
            if (row.Total > RequestValidator.MaxPeriodTotal)
            {
                // Refused before it could grow towards what int64 cannot hold.
                return (new RecordOutcome.TotalCeilingReached(line.Key.UsageType), false);
            }

            if (row.Total < 0)
            {
                throw new PreconditionFailedException(
                    "USAGE_BELOW_ZERO",
                    $"The correction would take the '{line.Key.UsageType}' total of its period to {row.Total}; totals never go below zero.",
                    new Dictionary<string, string>
                    {
                        ["usage_type"] = line.Key.UsageType,
                        ["total"] = (row.Total - line.Amount).ToString(CultureInfo.InvariantCulture),
                        ["amount"] = line.Amount.ToString(CultureInfo.InvariantCulture),
                    });
            }

            totals.Add(row);
        }

        CounterChanges changes;
        if (NullIfEmpty(usageEvent.ReservationId) is { } reservationId)
        {
            var ranges = usageEvent.FinalSettle
                ? await EndHoldAsync(db, usageEvent.SubjectId, reservationId, "settled", cancellationToken)
                : await SettlePartAsync(db, usageEvent, reservationId, cancellationToken);
            ranges.AddRange(totals.Select(t => new HoldRange(t.Key.UsageType, t.Key.Period.Start.ToDateTimeUtc(), t.Key.Period.End.ToDateTimeUtc())));
            changes = await RefreshCountersAsync(db, usageEvent.SubjectId, ranges, cancellationToken);
        }
        else
        {
            // No hold changed: the totals' new versions are the change; queue them.
            changes = new CounterChanges(totals);
            await QueueAsync(db, totals, cancellationToken);
        }

        return (new RecordOutcome.Recorded(changes, usageEvent.Lines), true);
    }

    private static async Task QueueAsync(MeteringDbContext db, IReadOnlyList<CounterValue> values, CancellationToken cancellationToken)
    {
        foreach (var value in values)
        {
            var start = value.Key.Period.Start.ToDateTimeUtc();
            await db.Database.ExecuteSqlAsync(
                $"INSERT INTO counter_outbox (kind, subject_id, usage_type, period_start) VALUES ('counter', {value.Key.SubjectId}, {value.Key.UsageType}, {start})",
                cancellationToken);
        }
    }

    /// <summary>Lowers a live hold by the amounts recorded (never below zero); it stays live for the rest.</summary>
    private static async Task<List<HoldRange>> SettlePartAsync(MeteringDbContext db, UsageEvent usageEvent, string reservationId, CancellationToken cancellationToken)
    {
        var ranges = new List<HoldRange>();
        foreach (var line in usageEvent.Lines)
        {
            ranges.AddRange(await db.Database
                .SqlQuery<HoldRange>($"""
                    UPDATE hold_lines l SET amount = GREATEST(0, l.amount - {line.Amount})
                    FROM holds h
                    WHERE h.subject_id = l.subject_id AND h.reservation_id = l.reservation_id
                      AND l.subject_id = {usageEvent.SubjectId} AND l.reservation_id = {reservationId} AND l.usage_type = {line.Key.UsageType}
                      AND h.ended_at IS NULL AND h.expires_at > now()
                    RETURNING l.usage_type AS "UsageType", l.period_start AS "Start", l.period_end AS "End"
                    """)
                .ToListAsync(cancellationToken));
        }

        return ranges;
    }

    /// <summary>Ends a live hold; returns the ranges of its lines (none when it was not live).</summary>
    private static Task<List<HoldRange>> EndHoldAsync(MeteringDbContext db, string subjectId, string reservationId, string reason, CancellationToken cancellationToken) =>
        db.Database
            .SqlQuery<HoldRange>($"""
                WITH ended AS (
                    UPDATE holds SET ended_at = now(), end_reason = {reason}
                    WHERE subject_id = {subjectId} AND reservation_id = {reservationId}
                      AND ended_at IS NULL AND expires_at > now()
                    RETURNING reservation_id
                )
                SELECT l.usage_type AS "UsageType", l.period_start AS "Start", l.period_end AS "End"
                FROM hold_lines l JOIN ended ON l.reservation_id = ended.reservation_id
                WHERE l.subject_id = {subjectId}
                """)
            .ToListAsync(cancellationToken);

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

    /// <summary>What each line's period has used and holds (live holds only, by the ledger's clock), under the lock.</summary>
    private static async Task<IReadOnlyList<CounterReading>> ReadAsync(
        MeteringDbContext db, string subjectId, IReadOnlyList<CounterLine> lines, string? excludeReservationId, CancellationToken cancellationToken)
    {
        var readings = new CounterReading[lines.Count];
        for (var i = 0; i < lines.Count; i++)
        {
            var key = lines[i].Key;
            var used = (await UpsertTotalAsync(db, key, 0, cancellationToken)).Total;
            var (start, end) = Bounds(key.Period);
            var held = (await db.Database
                .SqlQuery<long>($"""
                    SELECT COALESCE(SUM(l.amount), 0) AS "Value" FROM holds h
                    JOIN hold_lines l ON l.subject_id = h.subject_id AND l.reservation_id = h.reservation_id
                    WHERE h.subject_id = {subjectId} AND h.ended_at IS NULL AND h.expires_at > now()
                      AND h.reservation_id IS DISTINCT FROM {excludeReservationId}
                      AND l.usage_type = {key.UsageType} AND l.period_start < {end} AND l.period_end > {start}
                    """)
                .ToListAsync(cancellationToken))[0];
            readings[i] = new CounterReading(used, held);
        }

        return readings;
    }

    private static async Task<EarlierHold?> FindByRequestIdAsync(MeteringDbContext db, string subjectId, string requestId, CancellationToken cancellationToken)
    {
        var hold = await db.Holds.AsNoTracking()
            .Include(h => h.Lines)
            .Where(h => h.SubjectId == subjectId && h.RequestId == requestId)
            .SingleOrDefaultAsync(cancellationToken);
        if (hold is null)
        {
            return null;
        }

        var live = hold.EndedAt is null && (await db.Database
            .SqlQuery<bool>($"SELECT ({hold.ExpiresAt} > now()) AS \"Value\"")
            .ToListAsync(cancellationToken))[0];
        return new EarlierHold(
            new PlacedHold(hold.ReservationId, ToInstant(hold.ExpiresAt), ToInstant(hold.PlacedAt), true),
            [.. hold.Lines.Select(l => (l.UsageType, l.Amount))],
            live);
    }

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
