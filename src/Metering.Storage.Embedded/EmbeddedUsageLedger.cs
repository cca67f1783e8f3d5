using System.Globalization;
using System.Text.Json;
using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using Metering.Core.Validation;
using Metering.Storage.Embedded.Entities;
using Microsoft.EntityFrameworkCore;
using NodaTime;
using Period = Metering.Core.Periods.Period;

namespace Metering.Storage.Embedded;

/// <summary>
/// The ledger in the embedded database, with the PostgreSQL ledger's semantics: every write runs in one transaction
/// under <see cref="EmbeddedDatabase"/>'s process-wide lock (which stands in for the subject lock), checks the calendar
/// the caller computed its periods with, and ends by refreshing the changed counters: each gets a new version from one
/// sequence and an outbox entry, committed with the change. Holds live on the ledger's clock (the injected
/// <see cref="TimeProvider"/>): a hold counts while it has not ended and its expiry is after now.
/// </summary>
public sealed class EmbeddedUsageLedger(EmbeddedDatabase database, TimeProvider time) : IUsageLedger
{
    private readonly HashSet<long> _draining = [];

    public Task<RecordOutcome> RecordAsync(UsageEvent usageEvent, CancellationToken cancellationToken) =>
        database.WriteAsync((db, token) => RecordOnceAsync(db, usageEvent, token), cancellationToken);

    public Task<HoldOutcome> HoldAsync(HoldRequest request, CancellationToken cancellationToken) =>
        database.WriteAsync((db, token) => HoldOnceAsync(db, request, token), cancellationToken);

    public Task<CounterChanges?> ReleaseHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken) =>
        database.WriteAsync<CounterChanges?>(
            async (db, token) =>
            {
                var now = Now();
                var ended = await EndHoldAsync(db, subjectId, reservationId, "released", now, token);
                if (ended.Count == 0)
                {
                    return null;
                }

                return await RefreshCountersAsync(db, subjectId, ended, now, token);
            },
            cancellationToken);

    public Task<PlacedHold?> FindHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken) =>
        database.ReadAsync(
            async (db, token) =>
            {
                var row = await db.Holds.AsNoTracking()
                    .Where(h => h.SubjectId == subjectId && h.ReservationId == reservationId)
                    .Select(h => new { h.ExpiresAt, h.PlacedAt })
                    .SingleOrDefaultAsync(token);
                return row is null ? null : new PlacedHold(reservationId, Instant.FromUnixTimeTicks(row.ExpiresAt), Instant.FromUnixTimeTicks(row.PlacedAt), false);
            },
            cancellationToken);

    public Task<IReadOnlyList<HoldInfo>> ListLiveHoldsAsync(CounterKey key, CancellationToken cancellationToken) =>
        database.ReadAsync<IReadOnlyList<HoldInfo>>(
            async (db, token) =>
            {
                var now = Now();
                var (start, end) = Bounds(key.Period);
                var rows = await LiveHolds(db, key.SubjectId, now)
                    .SelectMany(h => h.Lines, (h, l) => new { h.ReservationId, h.ExpiresAt, l.UsageType, l.PeriodStart, l.PeriodEnd, l.Amount })
                    .Where(x => x.UsageType == key.UsageType && x.PeriodStart < end && x.PeriodEnd > start)
                    .ToListAsync(token);
                return [.. rows
                    .OrderBy(r => r.ExpiresAt)
                    .ThenBy(r => r.ReservationId, StringComparer.Ordinal)
                    .Select(r => new HoldInfo(r.ReservationId, r.Amount, Instant.FromUnixTimeTicks(r.ExpiresAt)))];
            },
            cancellationToken);

    public Task<string?> FindFingerprintAsync(string subjectId, string idempotencyKey, CancellationToken cancellationToken) =>
        database.ReadAsync((db, token) => FindFingerprintAsync(db, subjectId, idempotencyKey, token), cancellationToken);

    public Task<IReadOnlyList<CounterValue>> GetTotalsAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken) =>
        database.WriteAsync<IReadOnlyList<CounterValue>>(
            async (db, token) =>
            {
                var now = Now();
                var values = new List<CounterValue>(keys.Count);
                foreach (var key in keys)
                {
                    values.Add(await UpsertTotalAsync(db, key, 0, now, token));
                }

                return values;
            },
            cancellationToken);

    public Task<LedgerSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken) =>
        database.ReadAsync(
            async (db, token) =>
            {
                var (start, end) = Bounds(key.Period);
                var lines = EventLines(db, key);
                var total = await lines.SumAsync(l => l.Amount, token);
                var count = await lines.LongCountAsync(token);
                var row = await db.UsageTotals.AsNoTracking()
                    .Where(t => t.SubjectId == key.SubjectId && t.UsageType == key.UsageType && t.PeriodStart == start)
                    .Select(t => new { t.Total, t.Version })
                    .SingleOrDefaultAsync(token);
                return new LedgerSnapshot(total, count, row?.Total, row?.Version);
            },
            cancellationToken);

    public Task<(CounterValue Value, bool RowFixed)> ReconcileAsync(CounterKey key, CancellationToken cancellationToken) =>
        database.WriteAsync(
            async (db, token) =>
            {
                var now = Now();
                var locked = await UpsertTotalAsync(db, key, 0, now, token);
                var sum = await EventLines(db, key).SumAsync(l => l.Amount, token);
                var (start, end) = Bounds(key.Period);
                var row = await db.UsageTotals.SingleAsync(t => t.SubjectId == key.SubjectId && t.UsageType == key.UsageType && t.PeriodStart == start, token);
                row.Total = sum;
                await db.SaveChangesAsync(token);
                var changes = await RefreshCountersAsync(db, key.SubjectId, [new HoldRange(key.UsageType, start, end)], now, token);
                return (changes.Values.First(v => v.Key.Period.Start == key.Period.Start), locked.Total != sum);
            },
            cancellationToken);

    public Task<IReadOnlyList<string>> ListActiveSubjectsAsync(Instant now, CancellationToken cancellationToken) =>
        database.ReadAsync<IReadOnlyList<string>>(
            async (db, token) =>
            {
                var at = now.ToUnixTimeTicks();
                var subjects = await db.UsageTotals.AsNoTracking()
                    .Where(t => t.PeriodStart <= at && t.PeriodEnd > at)
                    .Select(t => t.SubjectId)
                    .Distinct()
                    .ToListAsync(token);
                return [.. subjects.Order(StringComparer.Ordinal)];
            },
            cancellationToken);

    public async Task<int> DrainOutboxAsync(Func<OutboxBatch, Task> apply, Duration minAge, int max, CancellationToken cancellationToken)
    {
        // Taken and removed in two steps, the lock released between them: apply reads the stores again (a subscription,
        // the catalog version). The ids being drained are skipped by a concurrent drain, as FOR UPDATE SKIP LOCKED does.
        var (ids, batch) = await database.ReadAsync(
            async (db, token) =>
            {
                var before = (Now() - minAge).ToUnixTimeTicks();
                List<long> skip;
                lock (_draining)
                {
                    skip = [.. _draining];
                }

                var rows = await db.Outbox.AsNoTracking()
                    .Where(o => o.CreatedAt <= before && !skip.Contains(o.Id))
                    .OrderBy(o => o.Id)
                    .Take(max)
                    .ToListAsync(token);
                var values = new List<CounterValue>();
                foreach (var counter in rows.Where(r => r.Kind == OutboxRow.CounterKind).DistinctBy(r => (r.SubjectId, r.UsageType, r.PeriodStart)))
                {
                    // A row gone since (dropped by a calendar change) has nothing to apply: its counter was fenced then.
                    var total = await db.UsageTotals.AsNoTracking()
                        .SingleOrDefaultAsync(t => t.SubjectId == counter.SubjectId && t.UsageType == counter.UsageType && t.PeriodStart == counter.PeriodStart, token);
                    if (total is not null)
                    {
                        values.Add(ToValue(total));
                    }
                }

                var subscriptions = rows.Where(r => r.Kind == OutboxRow.SubscriptionKind).Select(r => r.SubjectId!).Distinct(StringComparer.Ordinal).ToList();
                lock (_draining)
                {
                    _draining.UnionWith(rows.Select(r => r.Id));
                }

                return (rows.Select(r => r.Id).ToList(), new OutboxBatch(values, subscriptions, rows.Any(r => r.Kind == OutboxRow.CatalogKind)));
            },
            cancellationToken);
        if (ids.Count == 0)
        {
            return 0;
        }

        try
        {
            await apply(batch);
            await database.WriteAsync((db, token) => db.Outbox.Where(o => ids.Contains(o.Id)).ExecuteDeleteAsync(token), CancellationToken.None);
        }
        finally
        {
            lock (_draining)
            {
                _draining.ExceptWith(ids);
            }
        }

        return ids.Count;
    }

    public Task<int> ExpireHoldsAsync(int max, CancellationToken cancellationToken) =>
        database.WriteAsync(
            async (db, token) =>
            {
                var now = Now();
                var nowTicks = now.ToUnixTimeTicks();
                var subjects = await db.Holds
                    .Where(h => h.EndedAt == null && h.ExpiresAt <= nowTicks)
                    .Select(h => h.SubjectId)
                    .Distinct()
                    .Take(max)
                    .ToListAsync(token);
                var expired = 0;
                foreach (var subjectId in subjects)
                {
                    var due = await db.Holds.Include(h => h.Lines)
                        .Where(h => h.SubjectId == subjectId && h.EndedAt == null && h.ExpiresAt <= nowTicks)
                        .ToListAsync(token);
                    var ranges = new List<HoldRange>();
                    foreach (var hold in due)
                    {
                        hold.EndedAt = hold.ExpiresAt;
                        hold.EndReason = "expired";
                        ranges.AddRange(hold.Lines.Select(l => new HoldRange(l.UsageType, l.PeriodStart, l.PeriodEnd)));
                    }

                    await db.SaveChangesAsync(token);
                    await RefreshCountersAsync(db, subjectId, ranges, now, token);
                    expired += due.Count(h => h.Lines.Count > 0);
                }

                return expired;
            },
            cancellationToken);

    /// <summary>Draws the next value of the one sequence every counter version and fence comes from.</summary>
    internal static async Task<long> NextVersionAsync(EmbeddedDbContext db, CancellationToken cancellationToken)
    {
        var sequence = await db.VersionSequence.SingleAsync(cancellationToken);
        sequence.Value++;
        await db.SaveChangesAsync(cancellationToken);
        return sequence.Value;
    }

    private async Task<HoldOutcome> HoldOnceAsync(EmbeddedDbContext db, HoldRequest request, CancellationToken cancellationToken)
    {
        if (!await CalendarIsAsync(db, request.SubjectId, request.Calendar, cancellationToken))
        {
            return new HoldOutcome.CalendarChanged();
        }

        var now = Now();
        var readings = await ReadAsync(db, request.SubjectId, request.Lines, excludeReservationId: null, now, cancellationToken);
        if (request.RequestId is { } requestId)
        {
            var earlier = await db.Holds.AsNoTracking().Include(h => h.Lines)
                .SingleOrDefaultAsync(h => h.SubjectId == request.SubjectId && h.RequestId == requestId, cancellationToken);
            if (earlier is not null)
            {
                var same = earlier.Lines.Count == request.Lines.Count && request.Lines.All(l =>
                    earlier.Lines.Any(e => e.UsageType == l.Key.UsageType && e.Amount == l.Amount));
                if (!same)
                {
                    return new HoldOutcome.RequestIdConflict();
                }

                // The hold is in the readings already: report them without it, as the first answer did.
                var live = earlier.EndedAt is null && earlier.ExpiresAt > now.ToUnixTimeTicks();
                var withoutIt = readings.Select((r, i) => r with { Reserved = Math.Max(0, r.Reserved - (live ? request.Lines[i].Amount : 0)) }).ToList();
                var placed = new PlacedHold(earlier.ReservationId, Instant.FromUnixTimeTicks(earlier.ExpiresAt), Instant.FromUnixTimeTicks(earlier.PlacedAt), true);
                return new HoldOutcome.Decided(withoutIt, live ? placed : null, CounterChanges.None);
            }
        }

        if (!request.Lines.Select((line, i) => LimitRules.CanGrant(line.Limit, readings[i].Used, readings[i].Reserved, line.Amount)).All(ok => ok))
        {
            return new HoldOutcome.Decided(readings, null, CounterChanges.None);
        }

        var liveHolds = await LiveHolds(db, request.SubjectId, now).CountAsync(cancellationToken);
        if (liveHolds >= request.MaxLiveHolds)
        {
            return new HoldOutcome.TooManyHolds(liveHolds);
        }

        var expiresAt = now + request.Ttl;
        var ranges = request.Lines.Select(l => new HoldRange(l.Key.UsageType, Bounds(l.Key.Period).Start, Bounds(l.Key.Period).End)).ToList();
        db.Holds.Add(new HoldRow
        {
            SubjectId = request.SubjectId,
            ReservationId = request.ReservationId,
            RequestId = request.RequestId,
            PlacedAt = request.PlacedAt.ToUnixTimeTicks(),
            ExpiresAt = expiresAt.ToUnixTimeTicks(),
            Lines = [.. request.Lines.Select(l => new HoldLineRow
            {
                SubjectId = request.SubjectId,
                ReservationId = request.ReservationId,
                UsageType = l.Key.UsageType,
                PeriodStart = Bounds(l.Key.Period).Start,
                PeriodEnd = Bounds(l.Key.Period).End,
                Amount = l.Amount,
            })],
        });
        await db.SaveChangesAsync(cancellationToken);
        var changes = await RefreshCountersAsync(db, request.SubjectId, ranges, now, cancellationToken);
        return new HoldOutcome.Decided(readings, new PlacedHold(request.ReservationId, expiresAt, request.PlacedAt, false), changes);
    }

    private async Task<RecordOutcome> RecordOnceAsync(EmbeddedDbContext db, UsageEvent usageEvent, CancellationToken cancellationToken)
    {
        if (!await CalendarIsAsync(db, usageEvent.SubjectId, usageEvent.Calendar, cancellationToken))
        {
            return new RecordOutcome.CalendarChanged();
        }

        var now = Now();
        if (await FindFingerprintAsync(db, usageEvent.SubjectId, usageEvent.IdempotencyKey, cancellationToken) is { } recorded)
        {
            return new RecordOutcome.AlreadyRecorded(recorded);
        }

        if (usageEvent.Kind == UsageEventKind.Reset)
        {
            // Record minus the period total: usage recorded after it is added to the new total.
            var line = usageEvent.Lines[0];
            var periodTotal = (await UpsertTotalAsync(db, line.Key, 0, now, cancellationToken)).Total;
            usageEvent = usageEvent with { Lines = [line with { Amount = -periodTotal }] };
        }

        var reservationId = string.IsNullOrEmpty(usageEvent.ReservationId) ? null : usageEvent.ReservationId;
        if (usageEvent.EnforcedLimits is { } limits)
        {
            var lines = usageEvent.Lines.Select((l, i) => new CounterLine(l.Key, l.Amount, limits[i])).ToList();
            var readings = await ReadAsync(db, usageEvent.SubjectId, lines, reservationId, now, cancellationToken);
            if (!lines.Select((line, i) => LimitRules.CanGrant(line.Limit, readings[i].Used, readings[i].Reserved, line.Amount)).All(ok => ok))
            {
                await db.Database.RollbackTransactionAsync(CancellationToken.None);
                return new RecordOutcome.Refused(readings);
            }
        }

        db.UsageEvents.Add(new UsageEventRow
        {
            SubjectId = usageEvent.SubjectId,
            IdempotencyKey = usageEvent.IdempotencyKey,
            Fingerprint = usageEvent.Fingerprint,
            OccurredAt = usageEvent.OccurredAt.ToUnixTimeTicks(),
            RecordedAt = usageEvent.RecordedAt.ToUnixTimeTicks(),
            ReservationId = reservationId,
            RecordedBy = usageEvent.RecordedBy,
            Kind = usageEvent.Kind.ToString().ToLowerInvariant(),
            Reason = usageEvent.Reason,
            Attributes = JsonSerializer.Serialize(usageEvent.Attributes),
            Lines = [.. usageEvent.Lines.Select(l => new UsageEventLineRow
            {
                UsageType = l.Key.UsageType,
                Amount = l.Amount,
                SubjectId = usageEvent.SubjectId,
                OccurredAt = usageEvent.OccurredAt.ToUnixTimeTicks(),
                PeriodStart = l.Key.Period.Start.ToUnixTimeTicks(),
            })],
        });
        await db.SaveChangesAsync(cancellationToken);

        var totals = new List<CounterValue>(usageEvent.Lines.Count);
        foreach (var line in usageEvent.Lines.OrderBy(l => l.Key.UsageType, StringComparer.Ordinal))
        {
            var row = await UpsertTotalAsync(db, line.Key, line.Amount, now, cancellationToken);
            if (row.Total > RequestValidator.MaxPeriodTotal)
            {
                // Refused before it could grow towards what int64 cannot hold.
                await db.Database.RollbackTransactionAsync(CancellationToken.None);
                return new RecordOutcome.TotalCeilingReached(line.Key.UsageType);
            }

            if (row.Total < 0)
            {
                await db.Database.RollbackTransactionAsync(CancellationToken.None);
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
        if (reservationId is not null)
        {
            var ranges = usageEvent.FinalSettle
                ? await EndHoldAsync(db, usageEvent.SubjectId, reservationId, "settled", now, cancellationToken)
                : await SettlePartAsync(db, usageEvent, reservationId, now, cancellationToken);
            ranges.AddRange(totals.Select(t => new HoldRange(t.Key.UsageType, t.Key.Period.Start.ToUnixTimeTicks(), t.Key.Period.End.ToUnixTimeTicks())));
            changes = await RefreshCountersAsync(db, usageEvent.SubjectId, ranges, now, cancellationToken);
        }
        else
        {
            // No hold changed: the totals' new versions are the change; queue them.
            changes = new CounterChanges(totals);
            foreach (var value in totals)
            {
                Queue(db, value.Key.SubjectId, value.Key.UsageType, value.Key.Period.Start.ToUnixTimeTicks(), now);
            }

            await db.SaveChangesAsync(cancellationToken);
        }

        return new RecordOutcome.Recorded(changes, usageEvent.Lines);
    }

    /// <summary>Lowers a live hold by the amounts recorded (never below zero); it stays live for the rest.</summary>
    private static async Task<List<HoldRange>> SettlePartAsync(EmbeddedDbContext db, UsageEvent usageEvent, string reservationId, Instant now, CancellationToken cancellationToken)
    {
        var hold = await LiveHolds(db, usageEvent.SubjectId, now).Include(h => h.Lines).SingleOrDefaultAsync(h => h.ReservationId == reservationId, cancellationToken);
        var ranges = new List<HoldRange>();
        if (hold is null)
        {
            return ranges;
        }

        foreach (var line in usageEvent.Lines)
        {
            if (hold.Lines.SingleOrDefault(l => l.UsageType == line.Key.UsageType) is { } held)
            {
                held.Amount = Math.Max(0, held.Amount - line.Amount);
                ranges.Add(new HoldRange(held.UsageType, held.PeriodStart, held.PeriodEnd));
            }
        }

        await db.SaveChangesAsync(cancellationToken);
        return ranges;
    }

    /// <summary>Ends a live hold; returns the ranges of its lines (none when it was not live).</summary>
    private static async Task<List<HoldRange>> EndHoldAsync(EmbeddedDbContext db, string subjectId, string reservationId, string reason, Instant now, CancellationToken cancellationToken)
    {
        var hold = await LiveHolds(db, subjectId, now).Include(h => h.Lines).SingleOrDefaultAsync(h => h.ReservationId == reservationId, cancellationToken);
        if (hold is null)
        {
            return [];
        }

        hold.EndedAt = now.ToUnixTimeTicks();
        hold.EndReason = reason;
        await db.SaveChangesAsync(cancellationToken);
        return [.. hold.Lines.Select(l => new HoldRange(l.UsageType, l.PeriodStart, l.PeriodEnd))];
    }

    /// <summary>
    /// Every total row of the subject overlapping one of <paramref name="ranges"/> gets its held amount recomputed from
    /// the live holds, a new version and an outbox entry; returns the new values.
    /// </summary>
    private static async Task<CounterChanges> RefreshCountersAsync(EmbeddedDbContext db, string subjectId, IReadOnlyList<HoldRange> ranges, Instant now, CancellationToken cancellationToken)
    {
        var values = new Dictionary<CounterKey, CounterValue>();
        foreach (var range in ranges.Distinct())
        {
            var rows = await db.UsageTotals
                .Where(t => t.SubjectId == subjectId && t.UsageType == range.UsageType && t.PeriodStart < range.End && t.PeriodEnd > range.Start)
                .ToListAsync(cancellationToken);
            foreach (var row in rows)
            {
                row.Held = await HeldAsync(db, subjectId, row.UsageType, row.PeriodStart, row.PeriodEnd, null, now, cancellationToken);
                row.Version = await NextVersionAsync(db, cancellationToken);
                Queue(db, subjectId, row.UsageType, row.PeriodStart, now);
                var value = ToValue(row);
                values[value.Key] = value;
            }
        }

        await db.SaveChangesAsync(cancellationToken);
        return new CounterChanges([.. values.Values]);
    }

    private static void Queue(EmbeddedDbContext db, string subjectId, string usageType, long periodStart, Instant now) =>
        db.Outbox.Add(new OutboxRow
        {
            Kind = OutboxRow.CounterKind,
            SubjectId = subjectId,
            UsageType = usageType,
            PeriodStart = periodStart,
            CreatedAt = now.ToUnixTimeTicks(),
        });

    /// <summary>Whether the subject's subscription still has the calendar the caller computed its periods with.</summary>
    private static Task<bool> CalendarIsAsync(EmbeddedDbContext db, string subjectId, BillingCalendar calendar, CancellationToken cancellationToken) =>
        db.Subscriptions.AnyAsync(
            s => s.SubjectId == subjectId && s.BillingAnchorDay == calendar.BillingAnchorDay && s.TimeZone == calendar.TimeZone,
            cancellationToken);

    /// <summary>What each line's period has used and holds (live holds only, by the ledger's clock).</summary>
    private static async Task<IReadOnlyList<CounterReading>> ReadAsync(
        EmbeddedDbContext db, string subjectId, IReadOnlyList<CounterLine> lines, string? excludeReservationId, Instant now, CancellationToken cancellationToken)
    {
        var readings = new CounterReading[lines.Count];
        for (var i = 0; i < lines.Count; i++)
        {
            var key = lines[i].Key;
            var used = (await UpsertTotalAsync(db, key, 0, now, cancellationToken)).Total;
            var (start, end) = Bounds(key.Period);
            readings[i] = new CounterReading(used, await HeldAsync(db, subjectId, key.UsageType, start, end, excludeReservationId, now, cancellationToken));
        }

        return readings;
    }

    private static Task<long> HeldAsync(
        EmbeddedDbContext db, string subjectId, string usageType, long start, long end, string? excludeReservationId, Instant now, CancellationToken cancellationToken) =>
        LiveHolds(db, subjectId, now)
            .Where(h => excludeReservationId == null || h.ReservationId != excludeReservationId)
            .SelectMany(h => h.Lines)
            .Where(l => l.UsageType == usageType && l.PeriodStart < end && l.PeriodEnd > start)
            .SumAsync(l => l.Amount, cancellationToken);

    private static IQueryable<HoldRow> LiveHolds(EmbeddedDbContext db, string subjectId, Instant now)
    {
        var at = now.ToUnixTimeTicks();
        return db.Holds.Where(h => h.SubjectId == subjectId && h.EndedAt == null && h.ExpiresAt > at);
    }

    private static IQueryable<UsageEventLineRow> EventLines(EmbeddedDbContext db, CounterKey key)
    {
        var (start, end) = Bounds(key.Period);
        return db.UsageEventLines.Where(l => l.SubjectId == key.SubjectId && l.UsageType == key.UsageType && l.OccurredAt >= start && l.OccurredAt < end);
    }

    private static Task<string?> FindFingerprintAsync(EmbeddedDbContext db, string subjectId, string idempotencyKey, CancellationToken cancellationToken) =>
        db.UsageEvents
            .Where(e => e.SubjectId == subjectId && e.IdempotencyKey == idempotencyKey)
            .Select(e => e.Fingerprint)
            .SingleOrDefaultAsync(cancellationToken);

    /// <summary>
    /// Reads or writes a period total. An existing row gets <paramref name="amount"/> added and, unless it is 0, a new
    /// version. A period nobody wrote to yet is created from its events (the caller's own new event included) and its
    /// live holds, with a new version.
    /// </summary>
    private static async Task<CounterValue> UpsertTotalAsync(EmbeddedDbContext db, CounterKey key, long amount, Instant now, CancellationToken cancellationToken)
    {
        var (start, end) = Bounds(key.Period);
        var row = await db.UsageTotals.SingleOrDefaultAsync(t => t.SubjectId == key.SubjectId && t.UsageType == key.UsageType && t.PeriodStart == start, cancellationToken);
        if (row is not null)
        {
            if (amount != 0)
            {
                row.Total += amount;
                row.Version = await NextVersionAsync(db, cancellationToken);
            }
        }
        else
        {
            row = new UsageTotalRow
            {
                SubjectId = key.SubjectId,
                UsageType = key.UsageType,
                PeriodStart = start,
                PeriodEnd = end,
                Total = await EventLines(db, key).SumAsync(l => l.Amount, cancellationToken),
                Held = await HeldAsync(db, key.SubjectId, key.UsageType, start, end, null, now, cancellationToken),
                Version = await NextVersionAsync(db, cancellationToken),
            };
            db.UsageTotals.Add(row);
        }

        await db.SaveChangesAsync(cancellationToken);
        return new CounterValue(key, row.Total, row.Held, row.Version);
    }

    private Instant Now() => Instant.FromDateTimeOffset(time.GetUtcNow());

    private static (long Start, long End) Bounds(Period period) =>
        (period.Start.ToUnixTimeTicks(), period.End.ToUnixTimeTicks());

    private static CounterValue ToValue(UsageTotalRow row) =>
        new(new CounterKey(row.SubjectId, row.UsageType, new Period(Instant.FromUnixTimeTicks(row.PeriodStart), Instant.FromUnixTimeTicks(row.PeriodEnd))), row.Total, row.Held, row.Version);

    private sealed record HoldRange(string UsageType, long Start, long End);
}
