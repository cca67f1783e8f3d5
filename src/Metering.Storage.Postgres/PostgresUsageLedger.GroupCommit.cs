using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Text.Json;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using Metering.Core.Validation;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Npgsql;
using NpgsqlTypes;

namespace Metering.Storage.Postgres;

/// <summary>
/// Group commit: concurrent events and holds share one transaction and one commit.
/// <para>
/// One round trip locks the subscription rows of every subject in the batch (exclusively, in subject order, so batches
/// never deadlock) and records every plain event (usage or a positive correction, neither enforced nor settling a hold)
/// in one statement: the events inserted with <c>ON CONFLICT DO NOTHING RETURNING</c> (new and duplicate told apart
/// without a lookup before), their lines, each (subject, usage type, period) total upserted once with the summed amount,
/// and the outbox entries. Every other write (enforced events, settlements, resets, negative corrections, holds, and a
/// repeat of a key already in the batch) is then decided one by one in the same transaction, in arrival order, by the
/// same code as alone, each in one or two round trips (PostgresUsageLedger.Writes.cs) behind a savepoint that undoes it
/// alone when it is refused after writing or fails. Then one commit, and only then is any call answered.
/// </para>
/// <para>
/// Should the summed totals pass the ceiling, the batch is rolled back and run again one write at a time, so that
/// exactly the writes that would have been refused alone are refused. A failure of the batch as a whole (the
/// connection, the commit) is every write's failure, which each caller's <see cref="LedgerGuard"/> retries or reports
/// as it would alone. A caller that gives up before its batch starts is left out; a batch all of whose callers gave up
/// is cancelled and commits nothing.
/// </para>
/// </summary>
public sealed partial class PostgresUsageLedger
{
    private const string SavepointName = "write";

    private const string LockSubjectsSql = """
        SELECT subject_id, billing_anchor_day, time_zone FROM subscriptions
        WHERE subject_id = ANY($1) ORDER BY subject_id FOR NO KEY UPDATE
        """;

    /// <summary>A batch of plain events only needs the calendars to stay: such batches of one subject run side by side.</summary>
    private const string ShareSubjectsSql = """
        SELECT subject_id, billing_anchor_day, time_zone FROM subscriptions
        WHERE subject_id = ANY($1) ORDER BY subject_id FOR SHARE
        """;

    /// <summary>
    /// Events in bulk: the plain events of a batch, or one other event with the hold it names ($20, see
    /// <see cref="RecordOneAsync"/>). A total row nobody wrote to yet is created from the events already in its period
    /// plus the batch's amount (the statement does not see its own lines); one created meanwhile by a reader conflicts
    /// and gets the batch's amount added. The changed totals are queued in the outbox when $21 (a settlement's refresh queues
    /// them instead). Answers one row per inserted event ('e') and per changed total ('t').
    /// </summary>
    private const string RecordPlainSql = """
        WITH ev AS (
            SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                                 $7::text[], $8::text[], $9::text[], $10::text[], $11::int[], $12::text[], $20::text[])
                AS e(ord, subject_id, idempotency_key, fingerprint, occurred_at, recorded_at, recorded_by, kind, reason, attributes, anchor_day, time_zone,
                     reservation_id)
        ), ins AS (
            INSERT INTO usage_events (subject_id, idempotency_key, fingerprint, occurred_at, recorded_at, reservation_id, recorded_by, kind, reason, attributes)
            SELECT e.subject_id, e.idempotency_key, e.fingerprint, e.occurred_at, e.recorded_at, e.reservation_id, e.recorded_by, e.kind, e.reason, e.attributes::jsonb
            FROM ev e
            JOIN subscriptions s ON s.subject_id = e.subject_id AND s.billing_anchor_day = e.anchor_day AND s.time_zone = e.time_zone
            ORDER BY e.ord
            ON CONFLICT (subject_id, idempotency_key) DO NOTHING
            RETURNING id, subject_id, idempotency_key
        ), li AS (
            SELECT * FROM unnest($13::text[], $14::text[], $15::text[], $16::bigint[], $17::timestamptz[], $18::timestamptz[], $19::timestamptz[])
                AS l(subject_id, idempotency_key, usage_type, amount, occurred_at, period_start, period_end)
        ), new_lines AS (
            SELECT ins.id AS event_id, l.* FROM li l
            JOIN ins ON ins.subject_id = l.subject_id AND ins.idempotency_key = l.idempotency_key
        ), lines_written AS (
            INSERT INTO usage_event_lines (event_id, usage_type, amount, subject_id, occurred_at, period_start)
            SELECT event_id, usage_type, amount, subject_id, occurred_at, period_start FROM new_lines
        ), sums AS (
            SELECT subject_id, usage_type, period_start, max(period_end) AS period_end, sum(amount)::bigint AS amount
            FROM new_lines GROUP BY subject_id, usage_type, period_start
        ), existing AS MATERIALIZED (
            SELECT t.subject_id, t.usage_type, t.period_start, s.amount
            FROM usage_totals t
            JOIN sums s ON t.subject_id = s.subject_id AND t.usage_type = s.usage_type AND t.period_start = s.period_start
            ORDER BY t.subject_id, t.usage_type, t.period_start
            FOR UPDATE OF t
        ), updated AS (
            UPDATE usage_totals t SET total = t.total + x.amount, version = nextval('usage_total_versions')
            FROM existing x
            WHERE t.subject_id = x.subject_id AND t.usage_type = x.usage_type AND t.period_start = x.period_start
            RETURNING t.subject_id, t.usage_type, t.period_start, t.period_end, t.total, t.held, t.version
        ), inserted AS (
            INSERT INTO usage_totals (subject_id, usage_type, period_start, period_end, total, held, version)
            SELECT s.subject_id, s.usage_type, s.period_start, s.period_end,
                   s.amount + (SELECT COALESCE(SUM(l.amount), 0) FROM usage_event_lines l
                               WHERE l.subject_id = s.subject_id AND l.usage_type = s.usage_type
                                 AND l.occurred_at >= s.period_start AND l.occurred_at < s.period_end),
                   (SELECT COALESCE(SUM(hl.amount), 0) FROM holds h
                    JOIN hold_lines hl ON hl.subject_id = h.subject_id AND hl.reservation_id = h.reservation_id
                    WHERE h.subject_id = s.subject_id AND h.ended_at IS NULL AND h.expires_at > now()
                      AND hl.usage_type = s.usage_type AND hl.period_start < s.period_end AND hl.period_end > s.period_start),
                   nextval('usage_total_versions')
            FROM sums s
            WHERE NOT EXISTS (SELECT 1 FROM updated u
                              WHERE u.subject_id = s.subject_id AND u.usage_type = s.usage_type AND u.period_start = s.period_start)
            ORDER BY s.subject_id, s.usage_type, s.period_start
            ON CONFLICT (subject_id, usage_type, period_start) DO UPDATE
            SET total = usage_totals.total + (SELECT x.amount FROM sums x
                                             WHERE x.subject_id = EXCLUDED.subject_id AND x.usage_type = EXCLUDED.usage_type
                                               AND x.period_start = EXCLUDED.period_start),
                version = nextval('usage_total_versions')
            RETURNING subject_id, usage_type, period_start, period_end, total, held, version
        ), changed AS (
            SELECT * FROM updated UNION ALL SELECT * FROM inserted
        ), queued AS (
            INSERT INTO counter_outbox (kind, subject_id, usage_type, period_start)
            SELECT 'counter', subject_id, usage_type, period_start FROM changed WHERE $21
        )
        SELECT 'e' AS what, subject_id, idempotency_key, NULL::text AS usage_type, NULL::timestamptz AS period_start,
               NULL::timestamptz AS period_end, NULL::bigint AS total, NULL::bigint AS held, NULL::bigint AS version
        FROM ins
        UNION ALL
        SELECT 't', subject_id, NULL, usage_type, period_start, period_end, total, held, version FROM changed
        """;

    /// <summary>Creates the total rows of the keys ($1..$4) that have none, from their events and live holds (a result set, so that the read after it is the second).</summary>
    private const string CreateTotalsSql = """
        INSERT INTO usage_totals (subject_id, usage_type, period_start, period_end, total, held, version)
        SELECT k.subject_id, k.usage_type, k.period_start, k.period_end,
               (SELECT COALESCE(SUM(l.amount), 0) FROM usage_event_lines l
                WHERE l.subject_id = k.subject_id AND l.usage_type = k.usage_type
                  AND l.occurred_at >= k.period_start AND l.occurred_at < k.period_end),
               (SELECT COALESCE(SUM(hl.amount), 0) FROM holds h
                JOIN hold_lines hl ON hl.subject_id = h.subject_id AND hl.reservation_id = h.reservation_id
                WHERE h.subject_id = k.subject_id AND h.ended_at IS NULL AND h.expires_at > now()
                  AND hl.usage_type = k.usage_type AND hl.period_start < k.period_end AND hl.period_end > k.period_start),
               nextval('usage_total_versions')
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS k(subject_id, usage_type, period_start, period_end)
        WHERE NOT EXISTS (SELECT 1 FROM usage_totals t
                          WHERE t.subject_id = k.subject_id AND t.usage_type = k.usage_type AND t.period_start = k.period_start)
        ORDER BY k.subject_id, k.usage_type, k.period_start
        ON CONFLICT (subject_id, usage_type, period_start) DO NOTHING
        RETURNING subject_id
        """;

    /// <summary>The total rows of the keys ($1..$4).</summary>
    private const string ReadTotalsSql = """
        SELECT t.subject_id, t.usage_type, t.period_start, t.period_end, t.total, t.held, t.version
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS k(subject_id, usage_type, period_start, period_end)
        JOIN usage_totals t ON t.subject_id = k.subject_id AND t.usage_type = k.usage_type AND t.period_start = k.period_start
        """;

    private const string FingerprintsSql = """
        SELECT e.subject_id, e.idempotency_key, e.fingerprint
        FROM usage_events e
        JOIN unnest($1::text[], $2::text[]) AS k(subject_id, idempotency_key)
          ON e.subject_id = k.subject_id AND e.idempotency_key = k.idempotency_key
        """;

    private async Task<T> SubmitAsync<T>(PendingWrite write)
    {
        _writes.Enqueue(write);
        return (T)await write.Done.Task.WaitAsync(write.CancellationToken);
    }

    /// <summary>Runs one batch and completes every write in it; never throws.</summary>
    private async Task RunBatchAsync(IReadOnlyList<PendingWrite> batch)
    {
        var live = new List<PendingWrite>(batch.Count);
        foreach (var write in batch)
        {
            if (write.CancellationToken.IsCancellationRequested)
            {
                write.Done.TrySetCanceled(write.CancellationToken);
            }
            else
            {
                live.Add(write);
            }
        }

        if (live.Count == 0)
        {
            return;
        }

        // Cancelled when every caller of the batch has given up: then it commits nothing, as a lone call would not.
        using var abandoned = new CancellationTokenSource();
        var waiting = live.Count;
        var registrations = live
            .Select(w => w.CancellationToken.Register(() =>
            {
                if (Interlocked.Decrement(ref waiting) == 0)
                {
                    abandoned.Cancel();
                }
            }))
            .ToList();
        try
        {
            var started = Stopwatch.GetTimestamp();
            var results = await CommitBatchAsync(live, oneByOne: false, abandoned.Token)
                ?? await CommitBatchAsync(live, oneByOne: true, abandoned.Token)
                ?? throw new InvalidOperationException("A batch run one write at a time asked to be run again.");
            _metrics?.RecordLedgerCommit(Stopwatch.GetElapsedTime(started), live.Count);
            for (var i = 0; i < live.Count; i++)
            {
                _ = results[i] switch
                {
                    OperationCanceledException => live[i].Done.TrySetCanceled(live[i].CancellationToken),
                    Exception failure => live[i].Done.TrySetException(failure),
                    var outcome => live[i].Done.TrySetResult(outcome!),
                };
            }
        }
        catch (Exception failure)
        {
            foreach (var write in live)
            {
                if (failure is OperationCanceledException && abandoned.IsCancellationRequested)
                {
                    write.Done.TrySetCanceled(write.CancellationToken);
                }
                else
                {
                    write.Done.TrySetException(failure);
                }
            }
        }
        finally
        {
            foreach (var registration in registrations)
            {
                registration.Dispose();
            }
        }
    }

    /// <summary>
    /// One transaction for the batch; returns each write's outcome or exception after the commit, or null when the
    /// summed totals would pass the ceiling and the batch must be run again one write at a time.
    /// </summary>
    private async Task<object?[]?> CommitBatchAsync(IReadOnlyList<PendingWrite> items, bool oneByOne, CancellationToken cancellationToken)
    {
        await using var db = await _contexts.CreateDbContextAsync(cancellationToken);
        await using var transaction = await db.Database.BeginTransactionAsync(cancellationToken);
        var connection = (NpgsqlConnection)db.Database.GetDbConnection();
        var npgsqlTransaction = (NpgsqlTransaction)transaction.GetDbTransaction();
        var results = new object?[items.Count];

        // The first plain event of each key goes in bulk; a repeat of it goes one by one after, and finds it recorded.
        var bulk = new List<int>();
        if (!oneByOne)
        {
            var keys = new HashSet<(string, string)>();
            for (var i = 0; i < items.Count; i++)
            {
                if (items[i].IsPlain && keys.Add((items[i].SubjectId, items[i].Event!.IdempotencyKey)))
                {
                    bulk.Add(i);
                }
            }
        }

        var calendars = new Dictionary<string, BillingCalendar>(StringComparer.Ordinal);
        var inserted = new HashSet<(string SubjectId, string Key)>();
        var totals = new Dictionary<(string SubjectId, string UsageType, DateTime Start), CounterValue>();
        await using (var batch = new NpgsqlBatch(connection, npgsqlTransaction))
        {
            // Plain events only: the subjects shared, as a lone plain event took them; the totals rows are then locked in
            // key order (existing ones first, then new ones inserted in key order), so batches side by side cannot deadlock.
            var shared = bulk.Count == items.Count;
            batch.BatchCommands.Add(Command(
                shared ? ShareSubjectsSql : LockSubjectsSql,
                Array(NpgsqlDbType.Text, items.Select(w => w.SubjectId).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray())));
            if (bulk.Count > 0)
            {
                batch.BatchCommands.Add(RecordPlainCommand([.. bulk.Select(i => items[i].Event!)], queue: true));
            }

            await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                calendars[reader.GetString(0)] = new BillingCalendar(reader.GetString(2), reader.GetInt32(1));
            }

            if (bulk.Count > 0)
            {
                await reader.NextResultAsync(cancellationToken);
                await ReadRecordedAsync(reader, inserted, totals, cancellationToken);
            }
        }

        if (totals.Values.Any(v => v.Total > RequestValidator.MaxPeriodTotal))
        {
            // Some events fit and a later one would not: decide them one by one, as they would have been alone.
            await transaction.RollbackAsync(cancellationToken);
            return null;
        }

        bool CalendarHolds(PendingWrite write) => calendars.TryGetValue(write.SubjectId, out var calendar) && calendar == write.Calendar;

        var keep = inserted.Count > 0;
        var duplicates = new List<int>();
        foreach (var i in bulk)
        {
            var usageEvent = items[i].Event!;
            if (!CalendarHolds(items[i]))
            {
                results[i] = new RecordOutcome.CalendarChanged();
            }
            else if (inserted.Contains((usageEvent.SubjectId, usageEvent.IdempotencyKey)))
            {
                var changes = usageEvent.Lines
                    .Select(l => totals[(usageEvent.SubjectId, l.Key.UsageType, l.Key.Period.Start.ToDateTimeUtc())])
                    .Distinct()
                    .ToList();
                results[i] = new RecordOutcome.Recorded(new CounterChanges(changes), usageEvent.Lines);
            }
            else
            {
                duplicates.Add(i);
            }
        }

        if (duplicates.Count > 0)
        {
            await ReadFingerprintsAsync(connection, npgsqlTransaction, items, duplicates, results, cancellationToken);
        }

        // Everything else one by one, in arrival order, each undone alone when it keeps nothing or fails.
        var alone = items.Count == 1;
        for (var i = 0; i < items.Count; i++)
        {
            if (results[i] is not null)
            {
                continue;
            }

            var write = items[i];
            if (!CalendarHolds(write))
            {
                results[i] = write.Event is null ? new HoldOutcome.CalendarChanged() : new RecordOutcome.CalendarChanged();
                continue;
            }

            if (write.CancellationToken.IsCancellationRequested)
            {
                results[i] = new OperationCanceledException(write.CancellationToken);
                continue;
            }

            try
            {
                // The savepoint goes with the write's first round trip (none when the batch is this write alone).
                Written written;
                if (write.Event is { } usageEvent)
                {
                    (results[i], written) = await RecordOneAsync(connection, npgsqlTransaction, !alone, usageEvent, cancellationToken);
                }
                else
                {
                    (results[i], written) = await HoldOneAsync(connection, npgsqlTransaction, !alone, write.Hold!, cancellationToken);
                }

                keep |= written == Written.Keep;
                if (written == Written.Undo && !alone)
                {
                    await npgsqlTransaction.RollbackAsync(SavepointName, cancellationToken);
                }
            }
            catch (Exception failure) when (!alone && !cancellationToken.IsCancellationRequested)
            {
                // Its own failure (a refused correction, a statement or lock time-out): undo it alone. If even that
                // fails, the connection is gone and the batch fails as a whole.
                try
                {
                    await npgsqlTransaction.RollbackAsync(SavepointName, cancellationToken);
                }
                catch (Exception)
                {
                    ExceptionDispatchInfo.Throw(failure);
                }

                results[i] = failure;
            }
        }

        if (keep)
        {
            cancellationToken.ThrowIfCancellationRequested();
            await transaction.CommitAsync(CancellationToken.None);
        }
        else
        {
            await transaction.RollbackAsync(cancellationToken);
        }

        return results;
    }

    private static async Task ReadFingerprintsAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, IReadOnlyList<PendingWrite> items, List<int> duplicates, object?[] results, CancellationToken cancellationToken)
    {
        var found = new Dictionary<(string, string), string>();
        await using (var command = new NpgsqlCommand(FingerprintsSql, connection, transaction))
        {
            command.Parameters.Add(Array(NpgsqlDbType.Text, duplicates.Select(i => items[i].SubjectId).ToArray()));
            command.Parameters.Add(Array(NpgsqlDbType.Text, duplicates.Select(i => items[i].Event!.IdempotencyKey).ToArray()));
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                found[(reader.GetString(0), reader.GetString(1))] = reader.GetString(2);
            }
        }

        foreach (var i in duplicates)
        {
            var usageEvent = items[i].Event!;
            results[i] = found.TryGetValue((usageEvent.SubjectId, usageEvent.IdempotencyKey), out var fingerprint)
                ? new RecordOutcome.AlreadyRecorded(fingerprint)
                : new InvalidOperationException("A conflicting usage event vanished.");
        }
    }

    /// <summary>
    /// Reads the rows of <see cref="RecordPlainSql"/>: the keys of the events it inserted and the new values of the totals it changed.
    /// </summary>
    private static async Task ReadRecordedAsync(
        NpgsqlDataReader reader,
        HashSet<(string SubjectId, string Key)> inserted,
        Dictionary<(string SubjectId, string UsageType, DateTime Start), CounterValue> totals,
        CancellationToken cancellationToken)
    {
        while (await reader.ReadAsync(cancellationToken))
        {
            var subjectId = reader.GetString(1);
            if (reader.GetString(0) == "e")
            {
                inserted.Add((subjectId, reader.GetString(2)));
                continue;
            }

            var row = new TotalRow(reader.GetString(3), reader.GetDateTime(4), reader.GetDateTime(5), reader.GetInt64(6), reader.GetInt64(7), reader.GetInt64(8));
            totals[(subjectId, row.UsageType, row.Start)] = row.ToValue(subjectId);
        }
    }

    private static NpgsqlBatchCommand RecordPlainCommand(IReadOnlyList<UsageEvent> events, bool queue)
    {
        var lines = events.SelectMany(e => e.Lines.Select(l => (Event: e, Line: l))).ToList();
        return Command(
            RecordPlainSql,
            Array(NpgsqlDbType.Integer, events.Select((_, i) => i).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => e.SubjectId).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => e.IdempotencyKey).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => e.Fingerprint).ToArray()),
            Array(NpgsqlDbType.TimestampTz, events.Select(e => e.OccurredAt.ToDateTimeUtc()).ToArray()),
            Array(NpgsqlDbType.TimestampTz, events.Select(e => e.RecordedAt.ToDateTimeUtc()).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => e.RecordedBy).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => e.Kind.ToString().ToLowerInvariant()).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => e.Reason).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => JsonSerializer.Serialize(e.Attributes)).ToArray()),
            Array(NpgsqlDbType.Integer, events.Select(e => e.Calendar.BillingAnchorDay).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => e.Calendar.TimeZone).ToArray()),
            Array(NpgsqlDbType.Text, lines.Select(l => l.Event.SubjectId).ToArray()),
            Array(NpgsqlDbType.Text, lines.Select(l => l.Event.IdempotencyKey).ToArray()),
            Array(NpgsqlDbType.Text, lines.Select(l => l.Line.Key.UsageType).ToArray()),
            Array(NpgsqlDbType.Bigint, lines.Select(l => l.Line.Amount).ToArray()),
            Array(NpgsqlDbType.TimestampTz, lines.Select(l => l.Event.OccurredAt.ToDateTimeUtc()).ToArray()),
            Array(NpgsqlDbType.TimestampTz, lines.Select(l => l.Line.Key.Period.Start.ToDateTimeUtc()).ToArray()),
            Array(NpgsqlDbType.TimestampTz, lines.Select(l => l.Line.Key.Period.End.ToDateTimeUtc()).ToArray()),
            Array(NpgsqlDbType.Text, events.Select(e => string.IsNullOrEmpty(e.ReservationId) ? null : e.ReservationId).ToArray()),
            new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Boolean, Value = queue });
    }

    private static NpgsqlBatchCommand Command(string sql, params NpgsqlParameter[] parameters)
    {
        var command = new NpgsqlBatchCommand(sql);
        command.Parameters.AddRange(parameters);
        return command;
    }

    private static NpgsqlParameter Array<T>(NpgsqlDbType elementType, T[] values) =>
        new() { NpgsqlDbType = NpgsqlDbType.Array | elementType, Value = values };

    /// <summary>A write waiting for its batch: an event or a hold, with its caller's cancellation.</summary>
    private sealed class PendingWrite(string subjectId, UsageEvent? usageEvent, HoldRequest? hold, CancellationToken cancellationToken)
    {
        public string SubjectId => subjectId;

        public UsageEvent? Event => usageEvent;

        public HoldRequest? Hold => hold;

        public CancellationToken CancellationToken => cancellationToken;

        public BillingCalendar Calendar => usageEvent?.Calendar ?? hold!.Calendar;

        public TaskCompletionSource<object> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>
        /// Only adds to totals and touches no hold: usage or a correction upwards, neither enforced nor settling. Such
        /// events cannot be refused, except by the ceiling, so they are recorded in bulk.
        /// </summary>
        public bool IsPlain => usageEvent is { Kind: not UsageEventKind.Reset, EnforcedLimits: null } e
            && string.IsNullOrEmpty(e.ReservationId)
            && e.Lines.All(l => l.Amount >= 0);
    }
}
