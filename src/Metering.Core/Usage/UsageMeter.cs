using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Ports;
using Metering.Core.Validation;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// The use cases of MeteringService. The ledger is the record and decides every grant (a hold, an enforced event)
/// under the subject's lock; the counter cache answers the reads.
/// </summary>
public sealed class UsageMeter(
    CallContext context,
    EventRecorder recorder,
    IUsageLedger ledger,
    CounterCache cache,
    ICatalogProvider catalog,
    MeteringSettings settings,
    TimeProvider time)
{
    /// <summary>
    /// Whether every amount fits; with reserve, holds them all or none, durably. A check without a hold is one counter
    /// read when this instance knows the subject (see <see cref="CallContext.ReadAsync"/>).
    /// </summary>
    public async Task<CheckLimitResult> CheckLimitAsync(CheckLimitCommand command, CancellationToken cancellationToken)
    {
        void Validate(RequestValidator v) => v
            .SubjectId("subject_id", command.SubjectId)
            .Usage("usage", command.Usage)
            .ReservationTtl("reservation_ttl", command.ReservationTtl)
            .Token("request_id", command.RequestId, RequestValidator.MaxIdempotencyKeyLength, required: false);

        return command.Reserve
            ? await ReserveAsync(command, await context.BeginAsync(command.SubjectId, Validate, cancellationToken), cancellationToken)
            : await context.ReadAsync(command.SubjectId, Validate, call => CheckAsync(command, call, cancellationToken), cancellationToken);
    }

    /// <summary>Records usage once per idempotency key; answers only after the ledger has committed.</summary>
    public async Task<TrackUsageResult> TrackUsageAsync(TrackUsageCommand command, CancellationToken cancellationToken)
    {
        var now = Now();
        var call = await context.BeginAsync(command.SubjectId, v => v
            .SubjectId("subject_id", command.SubjectId)
            .Token("idempotency_key", command.IdempotencyKey, RequestValidator.MaxIdempotencyKeyLength)
            .Usage("usage", command.Usage)
            .Token("reservation_id", command.ReservationId, RequestValidator.MaxReservationIdLength, required: false)
            .Attributes("attributes", command.Attributes),
            cancellationToken);
        var fingerprint = UsageFingerprint.Compute(command);
        var usageTypes = command.Usage.Select(u => u.UsageType);
        if (await recorder.CheckOccurredAtAsync(call, command.IdempotencyKey, fingerprint, command.OccurredAt, now, usageTypes, cancellationToken) is { } duplicate)
        {
            return new TrackUsageResult(true, duplicate.Limits);
        }

        var occurredAt = command.OccurredAt ?? await SettledPeriodInstantAsync(command, now, cancellationToken) ?? now;
        var recording = await recorder.RecordAsync(call, current =>
        {
            var lines = current.Lines(command.Usage, occurredAt);
            return new UsageEvent(
                command.SubjectId,
                command.IdempotencyKey,
                fingerprint,
                occurredAt,
                now,
                current.Subject.Subscription.Calendar,
                [.. lines.Select(l => new UsageLine(l.Key, l.Amount))],
                command.ReservationId,
                command.Attributes,
                command.RecordedBy,
                FinalSettle: command.Final,
                EnforcedLimits: command.Enforce ? [.. lines.Select(l => l.Limit)] : null);
        }, cancellationToken);
        return recording switch
        {
            EventRecorder.Recording.Recorded recorded => new TrackUsageResult(false, recorded.Limits),
            EventRecorder.Recording.Duplicate again => new TrackUsageResult(true, again.Limits),
            EventRecorder.Recording.Refused refused => throw Refusal(refused),
            _ => throw new InvalidOperationException($"Unexpected recording {recording}."),
        };
    }

    /// <summary>The current standing of each usage type asked (all when none), changing nothing.</summary>
    public async Task<RemainingResult> GetRemainingAsync(string subjectId, IReadOnlyList<string> usageTypes, CancellationToken cancellationToken)
    {
        void Validate(RequestValidator v)
        {
            v.SubjectId("subject_id", subjectId);
            for (var i = 0; i < usageTypes.Count; i++)
            {
                v.UsageType($"usage_types[{i}]", usageTypes[i]);
            }
        }

        return await context.ReadAsync(subjectId, Validate, async call =>
        {
            var names = usageTypes.Count == 0
                ? call.Catalog.UsageTypes.Select(t => t.Name)
                : usageTypes.Distinct(StringComparer.Ordinal);
            var lines = call.Lines(names, Now());
            if (await cache.ReadAsync(call, lines, cancellationToken) is not { } reading)
            {
                return null;
            }

            var plan = call.Subject.Plan;
            return new RemainingResult(subjectId, plan.Id, SubjectCall.Evaluate(lines, reading), plan.Version, reading.Degraded);
        }, cancellationToken);
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

    /// <summary>A check without a hold: answered from the counters (or, when they are unavailable, by policy); null when the call's copies are stale.</summary>
    private async Task<CheckLimitResult?> CheckAsync(CheckLimitCommand command, SubjectCall call, CancellationToken cancellationToken)
    {
        var lines = call.Lines(command.Usage, Now());
        if (await cache.ReadAsync(call, lines, cancellationToken) is not { } reading)
        {
            return null;
        }

        var limits = SubjectCall.Evaluate(lines, reading);
        var allowed = limits.All(l => l.Decision == Decision.Allowed);
        var plan = call.Subject.Plan;
        return new CheckLimitResult(
            allowed, limits, plan.Id, null, null, allowed ? [] : call.UpgradeOptions(lines, reading.Readings), plan.Version, reading.Degraded);
    }

    /// <summary>A check that holds every amount or none: decided by the ledger under the subject's lock, whatever the cache's state.</summary>
    private Task<CheckLimitResult> ReserveAsync(CheckLimitCommand command, SubjectCall call, CancellationToken cancellationToken)
    {
        var ttl = command.ReservationTtl ?? settings.DefaultReservationTtl;
        return context.OnCurrentCalendarAsync(call, async current =>
        {
            var (reservationId, placedAt) = ReservationIds.New(Now());
            var lines = current.Lines(command.Usage, placedAt);
            var request = new HoldRequest(
                command.SubjectId, reservationId, NullIfEmpty(command.RequestId), current.Subject.Subscription.Calendar, lines, placedAt, ttl, settings.MaxLiveHoldsPerSubject);
            switch (await ledger.HoldAsync(request, cancellationToken))
            {
                case HoldOutcome.Decided decided:
                    await cache.ApplyAsync(decided.Changes);
                    return Reserved(current, lines, decided);

                case HoldOutcome.TooManyHolds tooMany:
                    throw new TooManyHoldsException(tooMany.Live, settings.MaxLiveHoldsPerSubject);

                case HoldOutcome.RequestIdConflict:
                    throw new RequestIdConflictException(command.RequestId!);

                default:
                    return null; // the calendar changed: recompute
            }
        }, cancellationToken);
    }

    private static CheckLimitResult Reserved(SubjectCall call, IReadOnlyList<CounterLine> lines, HoldOutcome.Decided decided)
    {
        var readings = decided.Readings;
        var limits = SubjectCall.Evaluate(lines, CounterCache.Reading.Exact(readings));
        var hold = decided.Hold;
        if (hold is null && lines.Select((l, i) => LimitRules.Fits(l.Limit, readings[i].Used, readings[i].Reserved, l.Amount)).All(f => f))
        {
            // Every line fits its limit, so only the ceiling can have refused it: the caller's error, whatever the plan.
            throw OverCeiling(lines, readings);
        }

        if (hold is not null)
        {
            // Report the state the caller leaves behind: its own hold counts as reserved.
            limits = [.. limits.Select((status, i) => LimitRules.WithHold(status, lines[i].Amount))];
        }

        return new CheckLimitResult(
            hold is not null,
            limits,
            call.Subject.Plan.Id,
            hold?.ReservationId,
            hold?.ExpiresAt,
            hold is null ? call.UpgradeOptions(lines, readings) : [],
            call.Subject.Plan.Version);
    }

    /// <summary>
    /// A settle that names no occurred_at counts in the periods its hold was placed in: a session reserved before
    /// midnight and settled after it is the day it started on. A reservation id carries that instant
    /// (<see cref="ReservationIds"/>), so the ledger is asked only for an id of another form, or one whose instant is
    /// outside the window an occurred_at may take (an id a caller made up counts no further back than its own
    /// occurred_at could). Null when there is no hold to learn it from.
    /// </summary>
    private async Task<Instant?> SettledPeriodInstantAsync(TrackUsageCommand command, Instant now, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(command.ReservationId))
        {
            return null;
        }

        return ReservationIds.PlacedAt(command.ReservationId) is { } placedAt && RequestValidator.InEventWindow(placedAt, now)
            ? placedAt
            : (await ledger.FindHoldAsync(command.SubjectId, command.ReservationId, cancellationToken))?.PlacedAt;
    }

    /// <summary>The refusal of an enforced event: not in the plan, or over the limit, with the plans that would allow it.</summary>
    private static MeteringException Refusal(EventRecorder.Recording.Refused refused)
    {
        var (call, usageEvent, readings) = (refused.Call, refused.Event, refused.Readings);
        var lines = usageEvent.Lines.Select((l, i) => new CounterLine(l.Key, l.Amount, usageEvent.EnforcedLimits![i])).ToList();
        var statuses = SubjectCall.Evaluate(lines, CounterCache.Reading.Exact(readings));
        if (statuses.FirstOrDefault(s => s.Decision == Decision.NotInPlan) is { } notInPlan)
        {
            return new NotInPlanException(notInPlan.UsageType, call.Subject.Plan.Id, call.UpgradeOptions(lines, readings));
        }

        if (statuses.FirstOrDefault(s => s.Decision != Decision.Allowed) is { } exceeded)
        {
            return new LimitExceededException(exceeded.UsageType, exceeded.Limit, exceeded.Remaining, call.UpgradeOptions(lines, readings));
        }

        return OverCeiling(lines, readings);
    }

    private static TotalCeilingException OverCeiling(IReadOnlyList<CounterLine> lines, IReadOnlyList<CounterReading> readings) =>
        new(lines.Where((l, i) => LimitRules.OverCeiling(readings[i].Used, readings[i].Reserved, l.Amount)).First().Key.UsageType);

    private Instant Now() => time.GetUtcNow().ToInstant();

    private static string? NullIfEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;
}
