using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Validation;
using Microsoft.Extensions.Logging;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// The use cases of MeteringService. It validates, works out periods and limits, and drives the two stores:
/// the ledger is written first and is the record; the counter store is a cache of ledger totals plus the holds.
/// </summary>
public sealed partial class UsageMeter(
    SubscriptionDirectory subscriptions,
    IUsageLedger ledger,
    ICounterStore counters,
    ICatalogProvider catalog,
    MeteringSettings settings,
    TimeProvider time,
    ILogger<UsageMeter> logger)
{
    private const int MaxCounterRebuilds = 3;
    private const int MaxCalendarRetries = 3;

    /// <summary>Whether every amount fits; with reserve, holds them all or none.</summary>
    public async Task<CheckLimitResult> CheckLimitAsync(CheckLimitCommand command, CancellationToken cancellationToken)
    {
        var peeked = subscriptions.PeekAsync(command.SubjectId, cancellationToken); // travels with the catalog version read
        new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .Usage("usage", command.Usage)
            .ReservationTtl("reservation_ttl", command.ReservationTtl)
            .ThrowIfInvalid();

        var subject = await subscriptions.ResolveAsync(command.SubjectId, peeked, cancellationToken);
        var now = Now();
        var lines = Lines(subject, command.Usage, now);
        var hold = command.Reserve
            ? new HoldSpec(NewId("rsv"), now + (command.ReservationTtl ?? settings.DefaultReservationTtl))
            : null;

        var result = await CheckCountersAsync(new CounterCheck(command.SubjectId, lines, now, hold), cancellationToken);
        ThrowIfOverCeiling(lines, result);
        var limits = Evaluate(lines, result.Readings);
        var allowed = limits.All(l => l.Decision == Decision.Allowed);
        if (result.Held)
        {
            // Report the state the caller leaves behind: its own hold counts as reserved.
            limits = [.. limits.Select((status, i) => LimitRules.WithHold(status, lines[i].Amount))];
        }

        return new CheckLimitResult(
            allowed,
            limits,
            subject.Plan.Id,
            result.Held ? hold!.ReservationId : null,
            result.Held ? hold!.ExpiresAt : null,
            allowed ? [] : UpgradeOptions(subject, lines, result.Readings),
            subject.Plan.Version);
    }

    /// <summary>Records usage once per idempotency key; answers only after the ledger has committed.</summary>
    public async Task<TrackUsageResult> TrackUsageAsync(TrackUsageCommand command, CancellationToken cancellationToken)
    {
        var now = Now();
        var peeked = subscriptions.PeekAsync(command.SubjectId, cancellationToken); // travels with the catalog version read
        new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .Token("idempotency_key", command.IdempotencyKey, RequestValidator.MaxIdempotencyKeyLength)
            .Usage("usage", command.Usage)
            .OccurredAt("occurred_at", command.OccurredAt, now)
            .Token("reservation_id", command.ReservationId, RequestValidator.MaxReservationIdLength, required: false)
            .Attributes("attributes", command.Attributes)
            .ThrowIfInvalid();

        var fingerprint = UsageFingerprint.Compute(command);
        var subject = await subscriptions.ResolveAsync(command.SubjectId, peeked, cancellationToken);
        var known = await ledger.FindFingerprintAsync(command.SubjectId, command.IdempotencyKey, cancellationToken);
        if (known is not null)
        {
            return await DuplicateAsync(command, subject, known, fingerprint, cancellationToken);
        }

        var occurredAt = command.OccurredAt ?? now;
        for (var attempt = 1; ; attempt++)
        {
            var lines = Lines(subject, command.Usage, occurredAt);
            var gate = command.Enforce ? await EnforceAsync(command, subject, lines, now, cancellationToken) : null;
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
                command.RecordedBy);

            RecordOutcome outcome;
            try
            {
                outcome = await ledger.RecordAsync(usageEvent, cancellationToken);
            }
            catch
            {
                await ReleaseQuietlyAsync(command.SubjectId, gate, cancellationToken);
                throw;
            }

            switch (outcome)
            {
                case RecordOutcome.Recorded recorded:
                    string[] releases = [.. new[] { command.ReservationId, gate }.OfType<string>().Where(id => id.Length > 0)];
                    await ApplyQuietlyAsync(command.SubjectId, recorded.Totals, releases, cancellationToken);
                    return new TrackUsageResult(false, await CurrentLimitsAsync(subject, command.Usage.Select(u => u.UsageType), cancellationToken));

                case RecordOutcome.AlreadyRecorded already:
                    await ReleaseQuietlyAsync(command.SubjectId, gate, cancellationToken);
                    return await DuplicateAsync(command, subject, already.Fingerprint, fingerprint, cancellationToken);

                case RecordOutcome.TotalCeilingReached ceiling:
                    await ReleaseQuietlyAsync(command.SubjectId, gate, cancellationToken);
                    throw new TotalCeilingException(ceiling.UsageType);

                case RecordOutcome.CalendarChanged when attempt < MaxCalendarRetries:
                    await ReleaseQuietlyAsync(command.SubjectId, gate, cancellationToken);
                    subject = await subscriptions.ResolveFreshAsync(command.SubjectId, cancellationToken);
                    break;

                default:
                    await ReleaseQuietlyAsync(command.SubjectId, gate, cancellationToken);
                    throw new InvalidOperationException($"The subscription of '{command.SubjectId}' kept changing while usage was recorded.");
            }
        }
    }

    /// <summary>
    /// Records a signed correction as its own ledger event, through the same transaction, total upsert and
    /// apply-if-newer path as TrackUsage; idempotent per key like TrackUsage. Limits do not apply to corrections,
    /// but a period total never goes below zero.
    /// </summary>
    public async Task<AdjustmentResult> AdjustUsageAsync(AdjustUsageCommand command, CancellationToken cancellationToken)
    {
        var now = Now();
        new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .UsageType("usage_type", command.UsageType)
            .AdjustmentAmount("amount", command.Amount)
            .Text("reason", command.Reason, RequestValidator.MaxReasonLength)
            .Token("idempotency_key", command.IdempotencyKey, RequestValidator.MaxIdempotencyKeyLength)
            .OccurredAt("occurred_at", command.OccurredAt, now)
            .ThrowIfInvalid();

        var fingerprint = UsageFingerprint.Compute(UsageEventKind.Adjustment, command.UsageType, command.Amount, command.Reason, command.OccurredAt);
        return await RecordCorrectionAsync(
            command.SubjectId, command.UsageType, command.IdempotencyKey, fingerprint, UsageEventKind.Adjustment,
            command.Amount, command.Reason, command.OccurredAt ?? now, now, command.RecordedBy, cancellationToken);
    }

    /// <summary>
    /// Zeroes the current period of one usage type as a recorded adjustment of minus its total (never by deleting
    /// events); the ledger works the amount out under the total's row lock, so usage racing it is never lost.
    /// </summary>
    public async Task<AdjustmentResult> ResetUsageAsync(ResetUsageCommand command, CancellationToken cancellationToken)
    {
        var now = Now();
        new RequestValidator(await catalog.RefreshAsync(cancellationToken))
            .SubjectId("subject_id", command.SubjectId)
            .UsageType("usage_type", command.UsageType)
            .Text("reason", command.Reason, RequestValidator.MaxReasonLength)
            .Token("idempotency_key", command.IdempotencyKey, RequestValidator.MaxIdempotencyKeyLength)
            .ThrowIfInvalid();

        var fingerprint = UsageFingerprint.Compute(UsageEventKind.Reset, command.UsageType, 0, command.Reason, null);
        return await RecordCorrectionAsync(
            command.SubjectId, command.UsageType, command.IdempotencyKey, fingerprint, UsageEventKind.Reset,
            0, command.Reason, now, now, command.RecordedBy, cancellationToken);
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
        var limits = await CurrentLimitsAsync(subject, names, cancellationToken);
        return new RemainingResult(subjectId, subject.Plan.Id, limits, subject.Plan.Version);
    }

    /// <summary>Gives a hold back; false when it is unknown, expired or already settled.</summary>
    public async Task<bool> ReleaseReservationAsync(string subjectId, string reservationId, CancellationToken cancellationToken)
    {
        new RequestValidator(catalog.Current)
            .SubjectId("subject_id", subjectId)
            .Token("reservation_id", reservationId, RequestValidator.MaxReservationIdLength)
            .ThrowIfInvalid();
        return await counters.ReleaseAsync(subjectId, reservationId, Now(), cancellationToken);
    }

    private async Task<AdjustmentResult> RecordCorrectionAsync(
        string subjectId,
        string usageType,
        string idempotencyKey,
        string fingerprint,
        UsageEventKind kind,
        long amount,
        string reason,
        Instant occurredAt,
        Instant now,
        string recordedBy,
        CancellationToken cancellationToken)
    {
        var subject = await subscriptions.ResolveAsync(subjectId, cancellationToken);
        var known = await ledger.FindFingerprintAsync(subjectId, idempotencyKey, cancellationToken);
        for (var attempt = 1; ; attempt++)
        {
            if (known is not null)
            {
                if (!string.Equals(known, fingerprint, StringComparison.Ordinal))
                {
                    throw new IdempotencyConflictException(idempotencyKey);
                }

                return new AdjustmentResult(true, 0, (await CurrentLimitsAsync(subject, [usageType], cancellationToken))[0]);
            }

            var line = Lines(subject, [new UsageRequest(usageType, 1)], occurredAt)[0];
            var usageEvent = new UsageEvent(
                subjectId,
                idempotencyKey,
                fingerprint,
                occurredAt,
                now,
                subject.Subscription.Calendar,
                [new UsageLine(line.Key, amount)],
                null,
                new Dictionary<string, string>(),
                recordedBy,
                kind,
                reason);
            switch (await ledger.RecordAsync(usageEvent, cancellationToken))
            {
                case RecordOutcome.Recorded recorded:
                    await ApplyQuietlyAsync(subjectId, recorded.Totals, [], cancellationToken);
                    return new AdjustmentResult(false, recorded.Lines[0].Amount, (await CurrentLimitsAsync(subject, [usageType], cancellationToken))[0]);

                case RecordOutcome.AlreadyRecorded already:
                    known = already.Fingerprint;
                    break;

                case RecordOutcome.CalendarChanged when attempt < MaxCalendarRetries:
                    subject = await subscriptions.ResolveFreshAsync(subjectId, cancellationToken);
                    break;

                default:
                    throw new InvalidOperationException($"The subscription of '{subjectId}' kept changing while a correction was recorded.");
            }
        }
    }

    /// <summary>
    /// Gates an enforced TrackUsage through the same atomic check as CheckLimit: a short hold of the amounts
    /// (the caller's own reservation not counted against them), so that concurrent calls cannot overspend.
    /// Returns the gate hold's id, or throws when an amount does not fit.
    /// </summary>
    private async Task<string> EnforceAsync(TrackUsageCommand command, SubjectPlan subject, IReadOnlyList<CounterLine> lines, Instant now, CancellationToken cancellationToken)
    {
        var gate = new HoldSpec(NewId("trk"), now + settings.EnforceHoldTtl);
        var check = new CounterCheck(command.SubjectId, lines, now, gate, command.ReservationId);
        var result = await CheckCountersAsync(check, cancellationToken);
        if (result.Held)
        {
            return gate.ReservationId;
        }

        ThrowIfOverCeiling(lines, result);

        var statuses = Evaluate(lines, result.Readings);
        if (statuses.FirstOrDefault(s => s.Decision == Decision.NotInPlan) is { } notInPlan)
        {
            throw new NotInPlanException(notInPlan.UsageType, subject.Plan.Id, UpgradeOptions(subject, lines, result.Readings));
        }

        var exceeded = statuses.First(s => s.Decision != Decision.Allowed);
        throw new LimitExceededException(exceeded.UsageType, exceeded.Limit, exceeded.Remaining, UpgradeOptions(subject, lines, result.Readings));
    }

    private async Task<TrackUsageResult> DuplicateAsync(TrackUsageCommand command, SubjectPlan subject, string recorded, string fingerprint, CancellationToken cancellationToken)
    {
        if (!string.Equals(recorded, fingerprint, StringComparison.Ordinal))
        {
            throw new IdempotencyConflictException(command.IdempotencyKey);
        }

        // The first call may have died between the commit and the release of the hold it settled.
        await ReleaseQuietlyAsync(command.SubjectId, string.IsNullOrEmpty(command.ReservationId) ? null : command.ReservationId, cancellationToken);
        return new TrackUsageResult(true, await CurrentLimitsAsync(subject, command.Usage.Select(u => u.UsageType), cancellationToken));
    }

    /// <summary>
    /// Current-period status of each usage type named, with the verdict for one more unit; from the counters, or from
    /// the ledger alone if the counters are down.
    /// </summary>
    private async Task<IReadOnlyList<LimitStatus>> CurrentLimitsAsync(SubjectPlan subject, IEnumerable<string> usageTypes, CancellationToken cancellationToken)
    {
        var lines = Lines(subject, [.. usageTypes.Select(t => new UsageRequest(t, 1))], Now());
        try
        {
            var result = await CheckCountersAsync(new CounterCheck(subject.Subscription.SubjectId, lines, Now()), cancellationToken);
            return Evaluate(lines, result.Readings);
        }
        catch (StoreUnavailableException ex) when (ex.Store == "counter")
        {
            LogCountersDown("reporting limits from the ledger", ex.Message);
            var totals = await ledger.GetTotalsAsync([.. lines.Select(l => l.Key)], cancellationToken);
            return Evaluate(lines, [.. totals.Select(t => new CounterReading(t.Total, 0))]);
        }
    }

    /// <summary>Runs a counter check, rebuilding from the ledger any counter the cache lacks, then checking again.</summary>
    private async Task<CounterCheckResult> CheckCountersAsync(CounterCheck check, CancellationToken cancellationToken)
    {
        for (var rebuild = 0; ; rebuild++)
        {
            var result = await counters.CheckAsync(check, cancellationToken);
            if (result.Missing.Count == 0)
            {
                return result;
            }

            if (rebuild == MaxCounterRebuilds)
            {
                throw new InvalidOperationException($"Counters of '{check.SubjectId}' vanished {rebuild} times in a row while being rebuilt.");
            }

            var totals = await ledger.GetTotalsAsync(result.Missing, cancellationToken);
            await counters.ApplyAsync(check.SubjectId, totals, [], cancellationToken);
        }
    }

    private async Task ApplyQuietlyAsync(string subjectId, IReadOnlyList<CounterValue> totals, IReadOnlyList<string> releases, CancellationToken cancellationToken)
    {
        try
        {
            await counters.ApplyAsync(subjectId, totals, releases, cancellationToken);
        }
        catch (StoreUnavailableException ex)
        {
            // The ledger has committed, so the usage is safe. The cached counters are at most one
            // counter TTL behind; the holds expire on their own.
            LogCountersDown("usage recorded in the ledger but not yet in the counters", ex.Message);
        }
    }

    private async Task ReleaseQuietlyAsync(string subjectId, string? reservationId, CancellationToken cancellationToken)
    {
        if (reservationId is null)
        {
            return;
        }

        try
        {
            await counters.ReleaseAsync(subjectId, reservationId, Now(), cancellationToken);
        }
        catch (StoreUnavailableException ex)
        {
            LogCountersDown($"hold {reservationId} left to expire", ex.Message);
        }
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

    /// <summary>A hold was refused because a line would pass the period-total ceiling: the caller's error, whatever the plan.</summary>
    private static void ThrowIfOverCeiling(IReadOnlyList<CounterLine> lines, CounterCheckResult result)
    {
        if (!result.OverCeiling)
        {
            return;
        }

        var over = Enumerable.Range(0, lines.Count)
            .Where(i => result.Readings[i].Used + result.Readings[i].Reserved + lines[i].Amount > RequestValidator.MaxPeriodTotal)
            .DefaultIfEmpty(0)
            .First();
        throw new TotalCeilingException(lines[over].Key.UsageType);
    }

    private IReadOnlyList<UpgradeOption> UpgradeOptions(SubjectPlan subject, IReadOnlyList<CounterLine> lines, IReadOnlyList<CounterReading> readings) =>
        UpgradeAdvisor.Options(
            catalog.Current,
            subject.Plan.Id,
            [.. lines.Select((line, i) => new RequestedLine(line.Key.UsageType, line.Amount, readings[i].Used, readings[i].Reserved))]);

    private static List<LimitStatus> Evaluate(IReadOnlyList<CounterLine> lines, IReadOnlyList<CounterReading> readings) =>
        [.. lines.Select((line, i) => LimitRules.Evaluate(line.Key.UsageType, line.Limit, readings[i].Used, readings[i].Reserved, line.Amount, line.Key.Period))];

    private Instant Now() => time.GetUtcNow().ToInstant();

    private static string NewId(string prefix) => $"{prefix}_{Guid.CreateVersion7():N}";

    [LoggerMessage(Level = LogLevel.Warning, Message = "Counter store unavailable, {Consequence}: {Reason}")]
    private partial void LogCountersDown(string consequence, string reason);
}
