using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Ports;
using Metering.Core.Validation;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// Records ledger events once per idempotency key, for tracking and corrections alike: the ledger commits the event
/// and its totals in one transaction, the committed values go to the counter cache, and a key seen before is a
/// duplicate (same payload) or an error (another payload).
/// </summary>
public sealed class EventRecorder(IUsageLedger ledger, CounterCache cache, CallContext context, TimeProvider time)
{
    /// <summary>What became of an event.</summary>
    public abstract record Recording
    {
        /// <summary>Committed; <see cref="Limits"/> is each line's status after it, for one more unit.</summary>
        public sealed record Recorded(UsageEvent Event, RecordOutcome.Recorded Outcome, IReadOnlyList<LimitStatus> Limits) : Recording;

        /// <summary>The same event was recorded before; <see cref="Limits"/> is each usage type's status now.</summary>
        public sealed record Duplicate(IReadOnlyList<LimitStatus> Limits) : Recording;

        /// <summary>Enforced, and a line did not fit: what each line's counter showed under the subject's lock.</summary>
        public sealed record Refused(SubjectCall Call, UsageEvent Event, IReadOnlyList<CounterReading> Readings) : Recording;
    }

    /// <summary>
    /// The occurred_at check, which a retry must be able to pass after its event has aged out of the accepted window.
    /// Within the window nothing is looked up: the ledger's insert tells a duplicate (<see cref="RecordAsync"/>). Outside
    /// it, the key is looked up: the duplicate's answer when it was recorded with this <paramref name="fingerprint"/>,
    /// <see cref="IdempotencyConflictException"/> when with another, else <see cref="InvalidRequestException"/> naming
    /// occurred_at. Null when occurred_at is within the window.
    /// </summary>
    public async Task<Recording.Duplicate?> CheckOccurredAtAsync(
        SubjectCall call, string idempotencyKey, string fingerprint, Instant? occurredAt, Instant now, IEnumerable<string> usageTypes, CancellationToken cancellationToken)
    {
        var validator = new RequestValidator(call.Catalog).OccurredAt("occurred_at", occurredAt, now);
        if (validator.IsValid)
        {
            return null;
        }

        if (await ledger.FindFingerprintAsync(call.SubjectId, idempotencyKey, cancellationToken) is { } recorded)
        {
            return await DuplicateAsync(call, idempotencyKey, recorded, fingerprint, usageTypes, cancellationToken);
        }

        validator.ThrowIfInvalid();
        throw new InvalidOperationException("An invalid occurred_at passed validation.");
    }

    /// <summary>
    /// Records the event <paramref name="build"/> makes for the subject's calendar (recomputed when the calendar changes
    /// under it) and applies the committed values to the counter cache.
    /// </summary>
    public Task<Recording> RecordAsync(SubjectCall call, Func<SubjectCall, UsageEvent> build, CancellationToken cancellationToken) =>
        context.OnCurrentCalendarAsync<Recording>(call, async current =>
        {
            var usageEvent = build(current);
            switch (await ledger.RecordAsync(usageEvent, cancellationToken))
            {
                case RecordOutcome.Recorded recorded:
                    await cache.ApplyAsync(recorded.Changes);
                    var lines = current.Lines(UsageTypes(usageEvent), time.GetUtcNow().ToInstant());
                    var reading = await cache.ReadAsync(current.SubjectId, lines, current.Policies(lines), cancellationToken);
                    return new Recording.Recorded(usageEvent, recorded, SubjectCall.Evaluate(lines, reading));

                case RecordOutcome.AlreadyRecorded already:
                    return await DuplicateAsync(current, usageEvent.IdempotencyKey, already.Fingerprint, usageEvent.Fingerprint, UsageTypes(usageEvent), cancellationToken);

                case RecordOutcome.Refused refused:
                    return new Recording.Refused(current, usageEvent, refused.Readings);

                case RecordOutcome.TotalCeilingReached ceiling:
                    throw new TotalCeilingException(ceiling.UsageType);

                default:
                    return null; // the calendar changed: recompute
            }
        }, cancellationToken);

    /// <summary>
    /// The same key again. Same payload: a duplicate, answered with the ledger's current values, which are applied to
    /// the cache first (the original call may have died before it could). Another payload: an error.
    /// </summary>
    private async Task<Recording.Duplicate> DuplicateAsync(
        SubjectCall call, string idempotencyKey, string recorded, string fingerprint, IEnumerable<string> usageTypes, CancellationToken cancellationToken)
    {
        if (!string.Equals(recorded, fingerprint, StringComparison.Ordinal))
        {
            throw new IdempotencyConflictException(idempotencyKey);
        }

        var lines = call.Lines(usageTypes, time.GetUtcNow().ToInstant());
        return new Recording.Duplicate(SubjectCall.Evaluate(lines, await cache.RefreshAsync(lines, cancellationToken)));
    }

    private static IEnumerable<string> UsageTypes(UsageEvent usageEvent) => usageEvent.Lines.Select(l => l.Key.UsageType);
}
