using Metering.Core.Limits;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// The answer to CheckLimit. <see cref="Degraded"/>: the counters could not be read, so the answer follows each usage
/// type's <see cref="Catalog.DegradedPolicy"/> (decided from the ledger, by default).
/// </summary>
public sealed record CheckLimitResult(
    bool Allowed,
    IReadOnlyList<LimitStatus> Limits,
    string PlanId,
    string? ReservationId,
    Instant? ReservationExpiresAt,
    IReadOnlyList<UpgradeOption> UpgradeOptions,
    long PlanVersion,
    bool Degraded = false);

/// <summary>The answer to TrackUsage.</summary>
public sealed record TrackUsageResult(bool Duplicate, IReadOnlyList<LimitStatus> Limits);

/// <summary>The answer to GetRemaining.</summary>
public sealed record RemainingResult(string SubjectId, string PlanId, IReadOnlyList<LimitStatus> Limits, long PlanVersion, bool Degraded = false);

/// <summary>The answer to AdjustUsage and ResetUsage: the amount recorded (0 when a duplicate) and the status after it.</summary>
public sealed record AdjustmentResult(bool Duplicate, long Amount, LimitStatus Limit);
