using System.Globalization;
using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Usage;
using Metering.Core.Validation;
using Npgsql;
using NpgsqlTypes;

namespace Metering.Storage.Postgres;

/// <summary>
/// The writes a group commit decides one at a time (see <see cref="CommitBatchAsync"/>), each in one or two round trips
/// on the batch's connection, its savepoint sent in the first. What needs a decision first (a hold, an enforced event,
/// a reset) reads what it decides on in one round trip, without writing anything, and writes in the next; everything
/// else (a settlement, a negative correction) is written in one round trip and undone when the insert of its event
/// found the key taken. Every statement runs under the subject's lock, which the batch took first.
/// </summary>
public sealed partial class PostgresUsageLedger
{
    /// <summary>The fingerprint recorded under a key ($1 subject, $2 key): no row when the key is free.</summary>
    private const string FingerprintSql = """
        SELECT fingerprint FROM usage_events WHERE subject_id = $1 AND idempotency_key = $2
        """;

    /// <summary>
    /// What each line ($2 usage types, $3 period starts, $4 period ends) of a subject ($1) has used (its total row, or
    /// the sum of its events where none exists yet) and what the live holds other than $5 hold in periods overlapping it
    /// (ledger clock), in line order. Changes nothing.
    /// </summary>
    private const string ReadLinesSql = """
        SELECT COALESCE(
                   (SELECT t.total FROM usage_totals t
                    WHERE t.subject_id = $1 AND t.usage_type = k.usage_type AND t.period_start = k.period_start),
                   (SELECT COALESCE(SUM(l.amount), 0) FROM usage_event_lines l
                    WHERE l.subject_id = $1 AND l.usage_type = k.usage_type
                      AND l.occurred_at >= k.period_start AND l.occurred_at < k.period_end))::bigint,
               (SELECT COALESCE(SUM(hl.amount), 0) FROM holds h
                JOIN hold_lines hl ON hl.subject_id = h.subject_id AND hl.reservation_id = h.reservation_id
                WHERE h.subject_id = $1 AND h.ended_at IS NULL AND h.expires_at > now()
                  AND h.reservation_id IS DISTINCT FROM $5
                  AND hl.usage_type = k.usage_type AND hl.period_start < k.period_end AND hl.period_end > k.period_start)::bigint
        FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[]) WITH ORDINALITY AS k(usage_type, period_start, period_end, ord)
        ORDER BY k.ord
        """;

    /// <summary>The hold placed under a request id ($1 subject, $2 request id), one row per line, with whether it is live.</summary>
    private const string HoldByRequestSql = """
        SELECT h.reservation_id, h.expires_at, h.placed_at, (h.ended_at IS NULL AND h.expires_at > now()), l.usage_type, l.amount
        FROM holds h JOIN hold_lines l ON l.subject_id = h.subject_id AND l.reservation_id = h.reservation_id
        WHERE h.subject_id = $1 AND h.request_id = $2
        """;

    /// <summary>How many live holds the subject ($1) has (ledger clock).</summary>
    private const string LiveHoldsSql = """
        SELECT COUNT(*)::int FROM holds WHERE subject_id = $1 AND ended_at IS NULL AND expires_at > now()
        """;

    /// <summary>A hold ($1 subject, $2 reservation, $3 request id, $4 placed at, $5 lifetime on the ledger's clock) and its lines ($6..$9).</summary>
    private const string InsertHoldSql = """
        WITH hold AS (
            INSERT INTO holds (subject_id, reservation_id, request_id, placed_at, expires_at)
            VALUES ($1, $2, $3, $4, now() + $5)
            RETURNING expires_at
        ), lines AS (
            INSERT INTO hold_lines (subject_id, reservation_id, usage_type, period_start, period_end, amount)
            SELECT $1, $2, l.usage_type, l.period_start, l.period_end, l.amount
            FROM unnest($6::text[], $7::timestamptz[], $8::timestamptz[], $9::bigint[]) AS l(usage_type, period_start, period_end, amount)
        )
        SELECT expires_at FROM hold
        """;

    /// <summary>Ends a live hold ($1 subject, $2 reservation) for a reason ($3: settled, released); a row when it was live.</summary>
    private const string EndHoldSql = """
        UPDATE holds SET ended_at = now(), end_reason = $3
        WHERE subject_id = $1 AND reservation_id = $2 AND ended_at IS NULL AND expires_at > now()
        RETURNING reservation_id
        """;

    /// <summary>Locks the subscription row of a subject ($1), as every write of its holds and totals does first.</summary>
    private const string LockSubjectSql = """
        SELECT 1 FROM subscriptions WHERE subject_id = $1 FOR NO KEY UPDATE
        """;

    /// <summary>Lowers the lines of a live hold ($1 subject, $2 reservation) by the amounts recorded ($3 usage types, $4 amounts), never below zero.</summary>
    private const string SettlePartSql = """
        UPDATE hold_lines l SET amount = GREATEST(0, l.amount - x.amount)
        FROM holds h, unnest($3::text[], $4::bigint[]) AS x(usage_type, amount)
        WHERE h.subject_id = l.subject_id AND h.reservation_id = l.reservation_id
          AND l.subject_id = $1 AND l.reservation_id = $2 AND l.usage_type = x.usage_type
          AND h.ended_at IS NULL AND h.expires_at > now()
        RETURNING l.usage_type
        """;

    /// <summary>
    /// Every total row of a subject ($1) overlapping a changed range gets its held amount recomputed from the live holds,
    /// a new version and an outbox entry; answers the new values. The ranges: the lines of the hold $2 that is live or
    /// was ended in this transaction (only those of the usage types $3 when set: a partial settle), and $4..$6.
    /// </summary>
    private const string RefreshSql = """
        WITH ranges AS (
            SELECT l.usage_type, l.period_start, l.period_end
            FROM holds h JOIN hold_lines l ON l.subject_id = h.subject_id AND l.reservation_id = h.reservation_id
            WHERE h.subject_id = $1 AND h.reservation_id = $2
              AND ((h.ended_at IS NULL AND h.expires_at > now()) OR h.ended_at = now())
              AND ($3::text[] IS NULL OR l.usage_type = ANY($3::text[]))
            UNION
            SELECT * FROM unnest($4::text[], $5::timestamptz[], $6::timestamptz[])
        ), changed AS (
            UPDATE usage_totals t
            SET held = (SELECT COALESCE(SUM(l.amount), 0) FROM holds h
                        JOIN hold_lines l ON l.subject_id = h.subject_id AND l.reservation_id = h.reservation_id
                        WHERE h.subject_id = t.subject_id AND h.ended_at IS NULL AND h.expires_at > now()
                          AND l.usage_type = t.usage_type AND l.period_start < t.period_end AND l.period_end > t.period_start),
                version = nextval('usage_total_versions')
            WHERE t.subject_id = $1
              AND EXISTS (SELECT 1 FROM ranges r
                          WHERE r.usage_type = t.usage_type AND t.period_start < r.period_end AND t.period_end > r.period_start)
            RETURNING t.usage_type, t.period_start, t.period_end, t.total, t.held, t.version
        ), queued AS (
            INSERT INTO counter_outbox (kind, subject_id, usage_type, period_start)
            SELECT 'counter', $1, usage_type, period_start FROM changed
        )
        SELECT usage_type, period_start, period_end, total, held, version FROM changed
        """;

    /// <summary>What a write left behind in the batch's transaction.</summary>
    private enum Written
    {
        /// <summary>Nothing: no need to undo it.</summary>
        Nothing,

        /// <summary>Rows that must not stay: undo it (roll back to its savepoint).</summary>
        Undo,

        /// <summary>Its change: keep it.</summary>
        Keep,
    }

    /// <summary>
    /// Decides and places one hold, the subject locked and its calendar checked by the batch: one round trip reads the
    /// lines' totals and live holds, a hold under the same request id and the number of live holds; when granted, a
    /// second inserts the hold and its lines, creates the total rows its periods lack, and refreshes the counters.
    /// </summary>
    private static async Task<(HoldOutcome Outcome, Written Written)> HoldOneAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, bool savepoint, HoldRequest request, CancellationToken cancellationToken)
    {
        NpgsqlParameter Subject() => Text(request.SubjectId);
        IReadOnlyList<CounterReading> readings;
        EarlierHold? earlier = null;
        int live;
        await using (var batch = NewBatch(connection, transaction, savepoint))
        {
            batch.BatchCommands.Add(Command(ReadLinesSql, [Subject(), .. LineKeys(request.Lines.Select(l => l.Key)), Text(null)]));
            batch.BatchCommands.Add(Command(LiveHoldsSql, Subject()));
            if (request.RequestId is { } requestId)
            {
                batch.BatchCommands.Add(Command(HoldByRequestSql, Subject(), Text(requestId)));
            }

            await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
            readings = await ReadReadingsAsync(reader, cancellationToken);
            await NextRowsAsync(reader, cancellationToken);
            await reader.ReadAsync(cancellationToken);
            live = reader.GetInt32(0);
            if (request.RequestId is not null)
            {
                await NextRowsAsync(reader, cancellationToken);
                var lines = new List<(string UsageType, long Amount)>();
                PlacedHold? hold = null;
                var isLive = false;
                while (await reader.ReadAsync(cancellationToken))
                {
                    hold ??= new PlacedHold(reader.GetString(0), ToInstant(reader.GetDateTime(1)), ToInstant(reader.GetDateTime(2)), true);
                    isLive = reader.GetBoolean(3);
                    lines.Add((reader.GetString(4), reader.GetInt64(5)));
                }

                earlier = hold is null ? null : new EarlierHold(hold, lines, isLive);
            }
        }

        if (earlier is not null)
        {
            var same = earlier.Lines.Count == request.Lines.Count && request.Lines.All(l =>
                earlier.Lines.Any(e => e.UsageType == l.Key.UsageType && e.Amount == l.Amount));
            if (!same)
            {
                return (new HoldOutcome.RequestIdConflict(), Written.Nothing);
            }

            // The hold is in the readings already: report them without it, as the first answer did.
            var withoutIt = readings.Select((r, i) => r with { Reserved = Math.Max(0, r.Reserved - (earlier.Live ? request.Lines[i].Amount : 0)) }).ToList();
            return (new HoldOutcome.Decided(withoutIt, earlier.Live ? earlier.Hold : null, CounterChanges.None), Written.Nothing);
        }

        if (!request.Lines.Select((line, i) => LimitRules.CanGrant(line.Limit, readings[i].Used, readings[i].Reserved, line.Amount)).All(ok => ok))
        {
            return (new HoldOutcome.Decided(readings, null, CounterChanges.None), Written.Nothing);
        }

        if (live >= request.MaxLiveHolds)
        {
            return (new HoldOutcome.TooManyHolds(live), Written.Nothing);
        }

        await using (var batch = NewBatch(connection, transaction, savepoint: false))
        {
            var keys = request.Lines.Select(l => l.Key).ToList();
            batch.BatchCommands.Add(Command(
                InsertHoldSql,
                [
                    Subject(),
                    Text(request.ReservationId),
                    Text(request.RequestId),
                    new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.TimestampTz, Value = request.PlacedAt.ToDateTimeUtc() },
                    new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Interval, Value = request.Ttl.ToTimeSpan() },
                    .. LineKeys(keys),
                    Array(NpgsqlDbType.Bigint, request.Lines.Select(l => l.Amount).ToArray()),
                ]));
            batch.BatchCommands.Add(Command(
                CreateTotalsSql,
                [Array(NpgsqlDbType.Text, keys.Select(k => k.SubjectId).ToArray()), .. LineKeys(keys)]));
            batch.BatchCommands.Add(RefreshCommand(request.SubjectId, request.ReservationId, settledTypes: null, []));
            await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
            await NextRowsAsync(reader, cancellationToken, first: true);
            await reader.ReadAsync(cancellationToken);
            var expiresAt = ToInstant(reader.GetDateTime(0));
            await NextRowsAsync(reader, cancellationToken); // the total rows created
            await NextRowsAsync(reader, cancellationToken);
            var changes = await ReadChangesAsync(reader, request.SubjectId, cancellationToken);
            return (new HoldOutcome.Decided(readings, new PlacedHold(request.ReservationId, expiresAt, request.PlacedAt, false), changes), Written.Keep);
        }
    }

    /// <summary>
    /// Records one event that is not plain (enforced, settling a hold, a reset, a negative correction), the subject
    /// locked and its calendar checked by the batch. An enforced event or a reset first reads, in one round trip, whether
    /// its key is taken and what its lines have used and hold; then, in one round trip, the event, its lines and totals
    /// are written with the statement plain events share, the hold it names settled and the counters refreshed. A
    /// correction that would take a total below zero throws, and the caller undoes what it wrote.
    /// </summary>
    private static async Task<(RecordOutcome Outcome, Written Written)> RecordOneAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, bool savepoint, UsageEvent usageEvent, CancellationToken cancellationToken)
    {
        NpgsqlParameter Subject() => Text(usageEvent.SubjectId);
        NpgsqlParameter Key() => Text(usageEvent.IdempotencyKey);
        var reservationId = NullIfEmpty(usageEvent.ReservationId);
        if (usageEvent.EnforcedLimits is not null || usageEvent.Kind == UsageEventKind.Reset)
        {
            IReadOnlyList<CounterReading> readings;
            string? recorded;
            await using (var batch = NewBatch(connection, transaction, savepoint))
            {
                savepoint = false;
                batch.BatchCommands.Add(Command(FingerprintSql, Subject(), Key()));
                batch.BatchCommands.Add(Command(ReadLinesSql, [Subject(), .. LineKeys(usageEvent.Lines.Select(l => l.Key)), Text(reservationId)]));
                await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
                await NextRowsAsync(reader, cancellationToken, first: true);
                recorded = await reader.ReadAsync(cancellationToken) ? reader.GetString(0) : null;
                await NextRowsAsync(reader, cancellationToken);
                readings = await ReadRowsOfReadingsAsync(reader, cancellationToken);
            }

            // The key first: a retry waits for the subject, then finds the event and is a duplicate, enforced or not.
            if (recorded is not null)
            {
                return (new RecordOutcome.AlreadyRecorded(recorded), Written.Nothing);
            }

            if (usageEvent.EnforcedLimits is { } limits
                && !usageEvent.Lines.Select((line, i) => LimitRules.CanGrant(limits[i], readings[i].Used, readings[i].Reserved, line.Amount)).All(ok => ok))
            {
                return (new RecordOutcome.Refused(readings), Written.Nothing);
            }

            if (usageEvent.Kind == UsageEventKind.Reset)
            {
                // Record minus the period total: usage racing the reset waits for the subject and is added after it.
                usageEvent = usageEvent with { Lines = [usageEvent.Lines[0] with { Amount = -readings[0].Used }] };
            }
        }

        var inserted = new HashSet<(string SubjectId, string Key)>();
        var totals = new Dictionary<(string SubjectId, string UsageType, DateTime Start), CounterValue>();
        CounterChanges? refreshed = null;
        string? fingerprint;
        await using (var batch = NewBatch(connection, transaction, savepoint))
        {
            batch.BatchCommands.Add(RecordPlainCommand([usageEvent], queue: reservationId is null));
            if (reservationId is not null)
            {
                var settled = usageEvent.Lines
                    .GroupBy(l => l.Key.UsageType, StringComparer.Ordinal)
                    .Select(g => (UsageType: g.Key, Amount: g.Sum(l => l.Amount)))
                    .ToList();
                batch.BatchCommands.Add(usageEvent.FinalSettle
                    ? Command(EndHoldSql, Subject(), Text(reservationId), Text("settled"))
                    : Command(
                        SettlePartSql,
                        Subject(),
                        Text(reservationId),
                        Array(NpgsqlDbType.Text, settled.Select(s => s.UsageType).ToArray()),
                        Array(NpgsqlDbType.Bigint, settled.Select(s => s.Amount).ToArray())));
                batch.BatchCommands.Add(RefreshCommand(
                    usageEvent.SubjectId,
                    reservationId,
                    usageEvent.FinalSettle ? null : [.. settled.Select(s => s.UsageType)],
                    [.. usageEvent.Lines.Select(l => l.Key)]));
            }

            batch.BatchCommands.Add(Command(FingerprintSql, Subject(), Key()));
            await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
            await NextRowsAsync(reader, cancellationToken, first: true);
            await ReadRecordedAsync(reader, inserted, totals, cancellationToken);
            if (reservationId is not null)
            {
                await NextRowsAsync(reader, cancellationToken); // the hold's lines settled
                await NextRowsAsync(reader, cancellationToken);
                refreshed = await ReadChangesAsync(reader, usageEvent.SubjectId, cancellationToken);
            }

            await NextRowsAsync(reader, cancellationToken);
            fingerprint = await reader.ReadAsync(cancellationToken) ? reader.GetString(0) : null;
        }

        if (!inserted.Contains((usageEvent.SubjectId, usageEvent.IdempotencyKey)))
        {
            // The key was taken (by a committed event, the insert having waited for it, or earlier in this transaction):
            // undo the settlement that ran behind it.
            return (new RecordOutcome.AlreadyRecorded(fingerprint ?? throw new InvalidOperationException("A conflicting usage event vanished.")),
                reservationId is null ? Written.Nothing : Written.Undo);
        }

        // In usage type order, as each line's total would have been refused alone.
        foreach (var line in usageEvent.Lines.OrderBy(l => l.Key.UsageType, StringComparer.Ordinal))
        {
            var total = totals[(usageEvent.SubjectId, line.Key.UsageType, line.Key.Period.Start.ToDateTimeUtc())].Total;
            if (total > RequestValidator.MaxPeriodTotal)
            {
                // Refused before it could grow towards what int64 cannot hold.
                return (new RecordOutcome.TotalCeilingReached(line.Key.UsageType), Written.Undo);
            }

            if (total < 0)
            {
                throw new PreconditionFailedException(
                    "USAGE_BELOW_ZERO",
                    $"The correction would take the '{line.Key.UsageType}' total of its period to {total}; totals never go below zero.",
                    new Dictionary<string, string>
                    {
                        ["usage_type"] = line.Key.UsageType,
                        ["total"] = (total - line.Amount).ToString(CultureInfo.InvariantCulture),
                        ["amount"] = line.Amount.ToString(CultureInfo.InvariantCulture),
                    });
            }
        }

        // Settled: the refreshed counters (the event's totals among them) are the change; else the totals are.
        var changes = refreshed ?? new CounterChanges([.. totals.Values]);
        return (new RecordOutcome.Recorded(changes, usageEvent.Lines), Written.Keep);
    }

    /// <summary>Ends a live hold as released and refreshes its counters, in one round trip; null when it was not live.</summary>
    private static async Task<CounterChanges?> ReleaseOneAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, string subjectId, string reservationId, CancellationToken cancellationToken)
    {
        await using var batch = NewBatch(connection, transaction, savepoint: false);
        batch.BatchCommands.Add(Command(LockSubjectSql, Text(subjectId)));
        batch.BatchCommands.Add(Command(EndHoldSql, Text(subjectId), Text(reservationId), Text("released")));
        batch.BatchCommands.Add(RefreshCommand(subjectId, reservationId, settledTypes: null, []));
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        await NextRowsAsync(reader, cancellationToken, first: true);
        await NextRowsAsync(reader, cancellationToken);
        var ended = await reader.ReadAsync(cancellationToken);
        await NextRowsAsync(reader, cancellationToken);
        var changes = await ReadChangesAsync(reader, subjectId, cancellationToken);
        return ended ? changes : null;
    }

    private static NpgsqlBatch NewBatch(NpgsqlConnection connection, NpgsqlTransaction transaction, bool savepoint)
    {
        var batch = new NpgsqlBatch(connection, transaction);
        if (savepoint)
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand($"SAVEPOINT {SavepointName}"));
        }

        return batch;
    }

    private static NpgsqlBatchCommand RefreshCommand(string subjectId, string? reservationId, string[]? settledTypes, IReadOnlyList<CounterKey> ranges) =>
        Command(
            RefreshSql,
            [
                Text(subjectId),
                Text(reservationId),
                new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text, Value = (object?)settledTypes ?? DBNull.Value },
                .. LineKeys(ranges),
            ]);

    /// <summary>The usage types, period starts and period ends of <paramref name="keys"/>, as three array parameters.</summary>
    private static NpgsqlParameter[] LineKeys(IEnumerable<CounterKey> keys)
    {
        var list = keys as IReadOnlyList<CounterKey> ?? [.. keys];
        return
        [
            Array(NpgsqlDbType.Text, list.Select(k => k.UsageType).ToArray()),
            Array(NpgsqlDbType.TimestampTz, list.Select(k => k.Period.Start.ToDateTimeUtc()).ToArray()),
            Array(NpgsqlDbType.TimestampTz, list.Select(k => k.Period.End.ToDateTimeUtc()).ToArray()),
        ];
    }

    private static NpgsqlParameter Text(string? value) =>
        new() { NpgsqlDbType = NpgsqlDbType.Text, Value = (object?)value ?? DBNull.Value };

    /// <summary>
    /// Moves to the next statement that answers rows (or, with <paramref name="first"/>, to the first one), past any
    /// statement without a result set (a savepoint, an update).
    /// </summary>
    private static async Task NextRowsAsync(NpgsqlDataReader reader, CancellationToken cancellationToken, bool first = false)
    {
        if (!first && !await reader.NextResultAsync(cancellationToken))
        {
            throw new InvalidOperationException("A statement of the batch answered no result.");
        }

        while (reader.FieldCount == 0)
        {
            if (!await reader.NextResultAsync(cancellationToken))
            {
                throw new InvalidOperationException("A statement of the batch answered no result.");
            }
        }
    }

    /// <summary>The readings of <see cref="ReadLinesSql"/>, the first statement of the batch that answers rows.</summary>
    private static async Task<IReadOnlyList<CounterReading>> ReadReadingsAsync(NpgsqlDataReader reader, CancellationToken cancellationToken)
    {
        await NextRowsAsync(reader, cancellationToken, first: true);
        return await ReadRowsOfReadingsAsync(reader, cancellationToken);
    }

    private static async Task<IReadOnlyList<CounterReading>> ReadRowsOfReadingsAsync(NpgsqlDataReader reader, CancellationToken cancellationToken)
    {
        var readings = new List<CounterReading>();
        while (await reader.ReadAsync(cancellationToken))
        {
            readings.Add(new CounterReading(reader.GetInt64(0), reader.GetInt64(1)));
        }

        return readings;
    }

    /// <summary>The rows of <see cref="RefreshSql"/>: the new values of the subject's changed counters.</summary>
    private static async Task<CounterChanges> ReadChangesAsync(NpgsqlDataReader reader, string subjectId, CancellationToken cancellationToken)
    {
        var values = new Dictionary<CounterKey, CounterValue>();
        while (await reader.ReadAsync(cancellationToken))
        {
            var value = new TotalRow(reader.GetString(0), reader.GetDateTime(1), reader.GetDateTime(2), reader.GetInt64(3), reader.GetInt64(4), reader.GetInt64(5)).ToValue(subjectId);
            values[value.Key] = value;
        }

        return new CounterChanges([.. values.Values]);
    }
}
