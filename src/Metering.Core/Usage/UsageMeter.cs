using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Validation;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// The use cases of MeteringService. It validates, works out periods and limits, and drives the stores: the ledger
/// is the record and decides every grant (a hold, an enforced event) under the subject's lock; the counter cache
/// answers the reads.
/// </summary>
public sealed class UsageMeter(
    SubscriptionDirectory subscriptions,
    IUsageLedger ledger,
    CounterCache cache,
    ICatalogProvider catalog,
    MeteringSettings settings,
    TimeProvider time)
{
    private const int MaxCalendarRetries = 8;

    /// <summary>Whether every amount fits; with reserve, holds them all or none, durably.</summary>
    public async Task<CheckLimitResult> CheckLimitAsync(CheckLimitCommand command, CancellationToken cancellationToken)
    {
        var peeked = subscriptions.PeekAsync(command.SubjectId, cancellationToken); // travels with the catalog version read
        new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .Usage("usage", command.Usage)
            .ReservationTtl("reservation_ttl", command.ReservationTtl)
            .Token("request_id", command.RequestId, RequestValidator.MaxIdempotencyKeyLength, required: false)
            .ThrowIfInvalid();

        var subject = await subscriptions.ResolveAsync(command.SubjectId, peeked, cancellationToken);
        return command.Reserve
            ? await ReserveAsync(command, subject, cancellationToken)
            : await CheckAsync(command, subject, cancellationToken);
    }

    /// <summary>Records usage once per idempotency key; answers only after the ledger has committed.</summary>
    public async Task<TrackUsageResult> TrackUsageAsync(TrackUsageCommand command, CancellationToken cancellationToken)
    {
        var now = Now();
        var peeked = subscriptions.PeekAsync(command.SubjectId, cancellationToken); // travels with the catalog version read
        var validator = new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .Token("idempotency_key", command.IdempotencyKey, RequestValidator.MaxIdempotencyKeyLength)
            .Usage("usage", command.Usage)
            .Token("reservation_id", command.ReservationId, RequestValidator.MaxReservationIdLength, required: false)
            .Attributes("attributes", command.Attributes);
        validator.ThrowIfInvalid();

        var fingerprint = UsageFingerprint.Compute(command);
        var subject = await subscriptions.ResolveAsync(command.SubjectId, peeked, cancellationToken);
        var known = await ledger.FindFingerprintAsync(command.SubjectId, command.IdempotencyKey, cancellationToken);
        if (known is not null)
        {
            // A retry is recognised before its occurred_at is judged: it may arrive after the event has aged.
            return await DuplicateAsync(command, subject, known, fingerprint, cancellationToken);
        }

        validator.OccurredAt("occurred_at", command.OccurredAt, now).ThrowIfInvalid();
        var occurredAt = command.OccurredAt ?? await SettledPeriodInstantAsync(command, cancellationToken) ?? now;
        for (var attempt = 1; ; attempt++)
        {
            var lines = Lines(subject, command.Usage, occurredAt);
            var usageEvent = new UsageEvent(
                command.SubjectId,
                command.IdempotencyKey,
                fingerprint,
                occurredAt,
                now,
                subject.Subscription.Calendar,
                [.. lines.Select(l => new UsageLine(l.Key, l.Amount))],
                command.ReservationId,
                command.Attributes,
                command.RecordedBy,
                FinalSettle: command.Final,
                EnforcedLimits: command.Enforce ? [.. lines.Select(l => l.Limit)] : null);

            switch (await ledger.RecordAsync(usageEvent, cancellationToken))
            {
                case RecordOutcome.Recorded recorded:
                    await cache.ApplyAsync(recorded.Changes);
                    return new TrackUsageResult(false, (await CurrentLimitsAsync(subject, command.Usage.Select(u => u.UsageType), cancellationToken)).Limits);

                case RecordOutcome.AlreadyRecorded already:
                    return await DuplicateAsync(command, subject, already.Fingerprint, fingerprint, cancellationToken);

                case RecordOutcome.Refused refused:
                    throw Refusal(subject, lines, refused.Readings);

                case RecordOutcome.TotalCeilingReached ceiling:
                    throw new TotalCeilingException(ceiling.UsageType);

                case RecordOutcome.CalendarChanged when attempt < MaxCalendarRetries:
                    subject = await subscriptions.ResolveFreshAsync(command.SubjectId, cancellationToken);
                    break;

                default:
                    throw new ConcurrentChangeException(command.SubjectId);
            }
        }
    }

    /// <summary>
    /// Records a signed correction as its own ledger event, through the same transaction, total upsert and
    /// cache path as TrackUsage; idempotent per key like TrackUsage. Limits do not apply to corrections,
    /// but a period total never goes below zero.
    /// </summary>
    public async Task<AdjustmentResult> AdjustUsageAsync(AdjustUsageCommand command, CancellationToken cancellationToken)
    {
        var now = Now();
        var validator = new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .UsageType("usage_type", command.UsageType)
            .AdjustmentAmount("amount", command.Amount)
            .Text("reason", command.Reason, RequestValidator.MaxReasonLength)
            .Token("idempotency_key", command.IdempotencyKey, RequestValidator.MaxIdempotencyKeyLength);
        validator.ThrowIfInvalid();

        var fingerprint = UsageFingerprint.Compute(UsageEventKind.Adjustment, command.UsageType, command.Amount, command.Reason, command.OccurredAt);
        return await RecordCorrectionAsync(
            command.SubjectId, command.UsageType, command.IdempotencyKey, fingerprint, UsageEventKind.Adjustment,
            command.Amount, command.Reason, command.OccurredAt, now, command.RecordedBy, validator, cancellationToken);
    }

    /// <summary>
    /// Zeroes the current period of one usage type as a recorded adjustment of minus its total (never by deleting
    /// events); the ledger works the amount out under the subject's lock, so usage racing it is never lost.
    /// </summary>
    public async Task<AdjustmentResult> ResetUsageAsync(ResetUsageCommand command, CancellationToken cancellationToken)
    {
        var now = Now();
        var validator = new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .UsageType("usage_type", command.UsageType)
            .Text("reason", command.Reason, RequestValidator.MaxReasonLength)
            .Token("idempotency_key", command.IdempotencyKey, RequestValidator.MaxIdempotencyKeyLength);
        validator.ThrowIfInvalid();

        var fingerprint = UsageFingerprint.Compute(UsageEventKind.Reset, command.UsageType, 0, command.Reason, null);
        return await RecordCorrectionAsync(
            command.SubjectId, command.UsageType, command.IdempotencyKey, fingerprint, UsageEventKind.Reset,
            0, command.Reason, null, now, command.RecordedBy, validator, cancellationToken);
    }

    /// <summary>The current standing of each usage type asked (all when none), changing nothing.</summary>
    public async Task<RemainingResult> GetRemainingAsync(string subjectId, IReadOnlyList<string> usageTypes, CancellationToken cancellationToken)
    {
        var peeked = subscriptions.PeekAsync(subjectId, cancellationToken); // travels with the catalog version read
        var validator = new RequestValidator(await catalog.RefreshAsync(cancellationToken)).SubjectId("subject_id", subjectId);
        for (var i = 0; i < usageTypes.Count; i++)
        {
            validator.UsageType($"usage_types[{i}]", usageTypes[i]);
        }

        validator.ThrowIfInvalid();
        var names = usageTypes.Count == 0
            ? catalog.Current.UsageTypes.Select(t => t.Name)
            : usageTypes.Distinct(StringComparer.Ordinal);
        var subject = await subscriptions.ResolveAsync(subjectId, peeked, cancellationToken);
        var (limits, degraded) = await CurrentLimitsAsync(subject, names, cancellationToken);
        return new RemainingResult(subjectId, subject.Plan.Id, limits, subject.Plan.Version, degraded);
    }

    /// <summary>Gives a hold back; false when it is unknown, expired or already settled.</summary>
    public async Task<bool> ReleaseReservationAsync(string subjectId, string reservationId, CancellationToken cancellationToken)
    {
        new RequestValidator(catalog.Current)
            .SubjectId("subject_id", subjectId)
            .Token("reservation_id", reservationId, RequestValidator.MaxReservationIdLength)
            .ThrowIfInvalid();
        if (await ledger.ReleaseHoldAsync(subjectId, reservationId, cancellationToken) is not { } changes)
        {
            return false;
        }

        await cache.ApplyAsync(changes);
        return true;
    }

    /// <summary>A check without a hold: answered from the counters (or, when they are unavailable, by policy).</summary>
    private async Task<CheckLimitResult> CheckAsync(CheckLimitCommand command, SubjectPlan subject, CancellationToken cancellationToken)
    {
        var lines = Lines(subject, command.Usage, Now());
        var reading = await cache.ReadAsync(command.SubjectId, lines, Policies(lines), cancellationToken);
        var limits = Evaluate(lines, reading);
        var allowed = limits.All(l => l.Decision == Decision.Allowed);
        return new CheckLimitResult(
            allowed,
            limits,
            subject.Plan.Id,
            null,
            null,
            allowed ? [] : UpgradeOptions(subject, lines, reading.Readings),
            subject.Plan.Version,
            reading.Degraded);
    }

    /// <summary>A check that holds every amount or none: decided by the ledger under the subject's lock, whatever the cache's state.</summary>
    private async Task<CheckLimitResult> ReserveAsync(CheckLimitCommand command, SubjectPlan subject, CancellationToken cancellationToken)
    {
        var ttl = command.ReservationTtl ?? settings.DefaultReservationTtl;
        for (var attempt = 1; ; attempt++)
        {
            var now = Now();
            var lines = Lines(subject, command.Usage, now);
            var request = new HoldRequest(
                command.SubjectId, NewId("rsv"), NullIfEmpty(command.RequestId), subject.Subscription.Calendar, lines, now, ttl, settings.MaxLiveHoldsPerSubject);
            switch (await ledger.HoldAsync(request, cancellationToken))
            {
                case HoldOutcome.Decided decided:
                    await cache.ApplyAsync(decided.Changes);
                    return Reserved(subject, lines, decided);

                case HoldOutcome.TooManyHolds tooMany:
                    throw new TooManyHoldsException(tooMany.Live, settings.MaxLiveHoldsPerSubject);

                case HoldOutcome.RequestIdConflict:
                    throw new RequestIdConflictException(command.RequestId!);

                case HoldOutcome.CalendarChanged when attempt < MaxCalendarRetries:
                    subject = await subscriptions.ResolveFreshAsync(command.SubjectId, cancellationToken);
                    break;

                default:
                    throw new ConcurrentChangeException(command.SubjectId);
            }
        }
    }

    private CheckLimitResult Reserved(SubjectPlan subject, IReadOnlyList<CounterLine> lines, HoldOutcome.Decided decided)
    {
        var readings = decided.Readings;
        var limits = Evaluate(lines, CounterCache.Reading.Exact(readings));
        var hold = decided.Hold;
        if (hold is null && lines.Select((l, i) => LimitRules.Fits(l.Limit, readings[i].Used, readings[i].Reserved, l.Amount)).All(f => f))
        {
            // Every line fits its limit, so only the ceiling can have refused it: the caller's error, whatever the plan.
            var over = lines.Select((l, i) => (l, i)).First(x => LimitRules.OverCeiling(readings[x.i].Used, readings[x.i].Reserved, x.l.Amount));
            throw new TotalCeilingException(over.l.Key.UsageType);
        }

        if (hold is not null)
        {
            // Report the state the caller leaves behind: its own hold counts as reserved.
            limits = [.. limits.Select((status, i) => LimitRules.WithHold(status, lines[i].Amount))];
        }

        return new CheckLimitResult(
            hold is not null,
            limits,
            subject.Plan.Id,
            hold?.ReservationId,
            hold?.ExpiresAt,
            hold is null ? UpgradeOptions(subject, lines, readings) : [],
            subject.Plan.Version);
    }

    /// <summary>
    /// A settle that names no occurred_at counts in the periods its hold was placed in: a session reserved before
    /// midnight and settled after it is the day it started on.
    /// </summary>
    private async Task<Instant?> SettledPeriodInstantAsync(TrackUsageCommand command, CancellationToken cancellationToken) =>
        string.IsNullOrEmpty(command.ReservationId)
            ? null
            : (await ledger.FindHoldAsync(command.SubjectId, command.ReservationId, cancellationToken))?.PlacedAt;

    private async Task<AdjustmentResult> RecordCorrectionAsync(
        string subjectId,
        string usageType,
        string idempotencyKey,
        string fingerprint,
        UsageEventKind kind,
        long amount,
        string reason,
        Instant? occurredAt,
        Instant now,
        string recordedBy,
        RequestValidator validator,
        CancellationToken cancellationToken)
    {
        var subject = await subscriptions.ResolveAsync(subjectId, cancellationToken);
        var known = await ledger.FindFingerprintAsync(subjectId, idempotencyKey, cancellationToken);
        if (known is null)
        {
            validator.OccurredAt("occurred_at", occurredAt, now).ThrowIfInvalid();
        }

        for (var attempt = 1; ; attempt++)
        {
            if (known is not null)
            {
                if (!string.Equals(known, fingerprint, StringComparison.Ordinal))
                {
                    throw new IdempotencyConflictException(idempotencyKey);
                }

                var line = Lines(subject, [new UsageRequest(usageType, 1)], Now());
                var current = await cache.RefreshAsync([line[0].Key], cancellationToken);
                return new AdjustmentResult(true, 0, Evaluate(line, Ledgered(current))[0]);
            }

            var key = Lines(subject, [new UsageRequest(usageType, 1)], occurredAt ?? now)[0].Key;
            var usageEvent = new UsageEvent(
                subjectId,
                idempotencyKey,
                fingerprint,
                occurredAt ?? now,
                now,
                subject.Subscription.Calendar,
                [new UsageLine(key, amount)],
                null,
                new Dictionary<string, string>(),
                recordedBy,
                kind,
                reason);
            switch (await ledger.RecordAsync(usageEvent, cancellationToken))
            {
                case RecordOutcome.Recorded recorded:
                    await cache.ApplyAsync(recorded.Changes);
                    return new AdjustmentResult(false, recorded.Lines[0].Amount, (await CurrentLimitsAsync(subject, [usageType], cancellationToken)).Limits[0]);

                case RecordOutcome.AlreadyRecorded already:
                    known = already.Fingerprint;
                    break;

                case RecordOutcome.CalendarChanged when attempt < MaxCalendarRetries:
                    subject = await subscriptions.ResolveFreshAsync(subjectId, cancellationToken);
                    break;

                default:
                    throw new ConcurrentChangeException(subjectId);
            }
        }
    }

    /// <summary>
    /// The same key again. Same payload: a duplicate, answered with the ledger's current values, which are applied to
    /// the cache first (the original call may have died before it could). Another payload: an error.
    /// </summary>
    private async Task<TrackUsageResult> DuplicateAsync(TrackUsageCommand command, SubjectPlan subject, string recorded, string fingerprint, CancellationToken cancellationToken)
    {
        if (!string.Equals(recorded, fingerprint, StringComparison.Ordinal))
        {
            throw new IdempotencyConflictException(command.IdempotencyKey);
        }

        var lines = Lines(subject, [.. command.Usage.Select(u => new UsageRequest(u.UsageType, 1))], Now());
        var current = await cache.RefreshAsync([.. lines.Select(l => l.Key)], cancellationToken);
        return new TrackUsageResult(true, Evaluate(lines, Ledgered(current)));
    }

    /// <summary>Current-period status of each usage type named, with the verdict for one more unit.</summary>
    private async Task<(IReadOnlyList<LimitStatus> Limits, bool Degraded)> CurrentLimitsAsync(SubjectPlan subject, IEnumerable<string> usageTypes, CancellationToken cancellationToken)
    {
        var lines = Lines(subject, [.. usageTypes.Select(t => new UsageRequest(t, 1))], Now());
        var reading = await cache.ReadAsync(subject.Subscription.SubjectId, lines, Policies(lines), cancellationToken);
        return (Evaluate(lines, reading), reading.Degraded);
    }

    /// <summary>The refusal of an enforced event: not in the plan, or over the limit, with the plans that would allow it.</summary>
    private MeteringException Refusal(SubjectPlan subject, IReadOnlyList<CounterLine> lines, IReadOnlyList<CounterReading> readings)
    {
        var statuses = Evaluate(lines, CounterCache.Reading.Exact(readings));
        if (statuses.FirstOrDefault(s => s.Decision == Decision.NotInPlan) is { } notInPlan)
        {
            return new NotInPlanException(notInPlan.UsageType, subject.Plan.Id, UpgradeOptions(subject, lines, readings));
        }

        if (statuses.FirstOrDefault(s => s.Decision != Decision.Allowed) is { } exceeded)
        {
            return new LimitExceededException(exceeded.UsageType, exceeded.Limit, exceeded.Remaining, UpgradeOptions(subject, lines, readings));
        }

        var over = lines.Select((l, i) => (l, i)).First(x => LimitRules.OverCeiling(readings[x.i].Used, readings[x.i].Reserved, x.l.Amount));
        return new TotalCeilingException(over.l.Key.UsageType);
    }

    private IReadOnlyList<CounterLine> Lines(SubjectPlan subject, IReadOnlyList<UsageRequest> usage, Instant at)
    {
        var calendar = subject.Subscription.Calendar;
        var lines = new CounterLine[usage.Count];
        for (var i = 0; i < usage.Count; i++)
        {
            var type = catalog.Current.GetUsageType(usage[i].UsageType);
            var key = new CounterKey(subject.Subscription.SubjectId, type.Name, calendar.PeriodContaining(type.ResetPeriod, at));
            lines[i] = new CounterLine(key, usage[i].Amount, subject.Plan.LimitFor(type.Name));
        }

        return lines;
    }

    private DegradedPolicy[] Policies(IReadOnlyList<CounterLine> lines) =>
        [.. lines.Select(l => catalog.Current.GetUsageType(l.Key.UsageType).DegradedPolicy)];

    private IReadOnlyList<UpgradeOption> UpgradeOptions(SubjectPlan subject, IReadOnlyList<CounterLine> lines, IReadOnlyList<CounterReading> readings) =>
        UpgradeAdvisor.Options(
            catalog.Current,
            subject.Plan.Id,
            [.. lines.Select((line, i) => new RequestedLine(line.Key.UsageType, line.Amount, readings[i].Used, readings[i].Reserved))]);

    /// <summary>Each line's status; a line that fails open while the counters are unavailable is allowed whatever its figures.</summary>
    private static List<LimitStatus> Evaluate(IReadOnlyList<CounterLine> lines, CounterCache.Reading reading) =>
        [.. lines.Select((line, i) =>
        {
            var status = LimitRules.Evaluate(line.Key.UsageType, line.Limit, reading.Readings[i].Used, reading.Readings[i].Reserved, line.Amount, line.Key.Period);
            return reading.FailOpen.Contains(i) ? status with { Decision = Decision.Allowed } : status;
        })];

    private static CounterCache.Reading Ledgered(IReadOnlyList<CounterValue> values) =>
        CounterCache.Reading.Exact([.. values.Select(v => new CounterReading(v.Total, v.Held))]);

    private Instant Now() => time.GetUtcNow().ToInstant();

    private static string NewId(string prefix) => $"{prefix}_{Guid.CreateVersion7():N}";

    private static string? NullIfEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;
}
