using Metering.Core.Validation;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// AdjustUsage and ResetUsage: signed corrections recorded as their own ledger events, through the same transaction,
/// total upsert and cache path as TrackUsage, idempotent per key like it. Limits do not apply to corrections, but a
/// period total never goes below zero.
/// </summary>
public sealed class UsageCorrections(CallContext context, EventRecorder recorder, TimeProvider time)
{
    /// <summary>Records a signed correction of one usage type.</summary>
    public Task<AdjustmentResult> AdjustUsageAsync(AdjustUsageCommand command, CancellationToken cancellationToken) =>
        RecordAsync(
            command.SubjectId,
            command.UsageType,
            command.IdempotencyKey,
            UsageFingerprint.Compute(UsageEventKind.Adjustment, command.UsageType, command.Amount, command.Reason, command.OccurredAt),
            UsageEventKind.Adjustment,
            command.Amount,
            command.Reason,
            command.OccurredAt,
            command.RecordedBy,
            v => v.AdjustmentAmount("amount", command.Amount),
            cancellationToken);

    /// <summary>
    /// Zeroes the current period of one usage type as a recorded adjustment of minus its total (never by deleting
    /// events); the ledger works the amount out under the subject's lock, so usage racing it is never lost.
    /// </summary>
    public Task<AdjustmentResult> ResetUsageAsync(ResetUsageCommand command, CancellationToken cancellationToken) =>
        RecordAsync(
            command.SubjectId,
            command.UsageType,
            command.IdempotencyKey,
            UsageFingerprint.Compute(UsageEventKind.Reset, command.UsageType, 0, command.Reason, null),
            UsageEventKind.Reset,
            0,
            command.Reason,
            null,
            command.RecordedBy,
            _ => { },
            cancellationToken);

    private async Task<AdjustmentResult> RecordAsync(
        string subjectId,
        string usageType,
        string idempotencyKey,
        string fingerprint,
        UsageEventKind kind,
        long amount,
        string reason,
        Instant? occurredAt,
        string recordedBy,
        Action<RequestValidator> validateAmount,
        CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().ToInstant();
        var call = await context.BeginAsync(subjectId, v =>
        {
            v.SubjectId("subject_id", subjectId).UsageType("usage_type", usageType);
            validateAmount(v);
            v.Text("reason", reason, RequestValidator.MaxReasonLength)
                .Token("idempotency_key", idempotencyKey, RequestValidator.MaxIdempotencyKeyLength);
        }, cancellationToken);
        if (await recorder.CheckOccurredAtAsync(call, idempotencyKey, fingerprint, occurredAt, now, [usageType], cancellationToken) is { } duplicate)
        {
            return new AdjustmentResult(true, 0, duplicate.Limits[0]);
        }

        var recording = await recorder.RecordAsync(call, current => new UsageEvent(
            subjectId,
            idempotencyKey,
            fingerprint,
            occurredAt ?? now,
            now,
            current.Subject.Subscription.Calendar,
            [new UsageLine(current.Lines([usageType], occurredAt ?? now)[0].Key, amount)],
            null,
            new Dictionary<string, string>(),
            recordedBy,
            kind,
            reason), cancellationToken);
        return recording switch
        {
            EventRecorder.Recording.Recorded recorded => new AdjustmentResult(false, recorded.Outcome.Lines[0].Amount, recorded.Limits[0]),
            EventRecorder.Recording.Duplicate again => new AdjustmentResult(true, 0, again.Limits[0]),
            _ => throw new InvalidOperationException($"A correction is never enforced, yet the ledger answered {recording}."),
        };
    }
}
