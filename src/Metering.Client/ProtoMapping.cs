using Google.Protobuf.WellKnownTypes;
using Proto = Metering.Api.V1;

namespace Metering.Client;

/// <summary>Plain C# types ↔ the generated messages, in one place.</summary>
internal static class ProtoMapping
{
    public static Proto.CheckLimitRequest ToProto(CheckRequest request)
    {
        var proto = new Proto.CheckLimitRequest
        {
            SubjectId = request.SubjectId,
            Reserve = request.Reserve,

            // Every reserve carries a request id, so a retried or resent one returns the same hold instead of a second.
            RequestId = request.RequestId ?? (request.Reserve ? Guid.NewGuid().ToString("N") : string.Empty),
        };
        proto.Usage.AddRange(request.Usage.Select(ToProto));
        if (request.ReservationTtl is { } ttl)
        {
            proto.ReservationTtl = Duration.FromTimeSpan(ttl);
        }

        return proto;
    }

    public static Proto.TrackUsageRequest ToProto(TrackRequest request, DateTimeOffset occurredAt)
    {
        var proto = new Proto.TrackUsageRequest
        {
            SubjectId = request.SubjectId,
            IdempotencyKey = request.IdempotencyKey,
            OccurredAt = Timestamp.FromDateTimeOffset(occurredAt),
            ReservationId = request.ReservationId ?? string.Empty,
            Enforce = request.Enforce,
        };
        proto.Usage.AddRange(request.Usage.Select(ToProto));
        if (request.Attributes is not null)
        {
            foreach (var (key, value) in request.Attributes)
            {
                proto.Attributes[key] = value;
            }
        }

        return proto;
    }

    public static CheckResult FromProto(Proto.CheckLimitResponse response) => new()
    {
        Allowed = response.Allowed,
        Limits = response.Limits.Select(FromProto).ToList(),
        ReservationId = string.IsNullOrEmpty(response.ReservationId) ? null : response.ReservationId,
        ReservationExpiresAt = response.ReservationExpiresAt?.ToDateTimeOffset(),
        PlanId = response.PlanId,
        PlanVersion = response.PlanVersion,
        UpgradeOptions = response.UpgradeOptions.Select(FromProto).ToList(),
        Degraded = response.Degraded,
        DegradedReason = response.Degraded ? "The service answered without its counters (Redis unavailable), by each usage type's degraded policy." : null,
    };

    public static TrackResult FromProto(Proto.TrackUsageResponse response) =>
        new(response.Duplicate, response.Limits.Select(FromProto).ToList());

    public static RemainingResult FromProto(Proto.GetRemainingResponse response) => new()
    {
        SubjectId = response.SubjectId,
        PlanId = response.PlanId,
        PlanVersion = response.PlanVersion,
        Limits = response.Limits.Select(FromProto).ToList(),
        Degraded = response.Degraded,
    };

    public static LimitStatus FromProto(Proto.LimitStatus status) => new()
    {
        UsageType = status.UsageType,
        Limit = status.Limit,
        Used = status.Used,
        Reserved = status.Reserved,
        Remaining = status.Remaining,
        Decision = (Decision)(int)status.Decision,
        PeriodStart = status.PeriodStart?.ToDateTimeOffset(),
        ResetsAt = status.ResetsAt?.ToDateTimeOffset(),
        PercentUsed = status.PercentUsed,
        Level = (UsageLevel)(int)status.Level,
    };

    private static UpgradeOption FromProto(Proto.UpgradeOption option) =>
        new(option.PlanId, option.DisplayName, option.Rank, option.Limits.Select(l => new PlanLimit(l.UsageType, l.Limit)).ToList());

    private static Proto.UsageAmount ToProto(Usage usage) => new() { UsageType = usage.UsageType, Amount = usage.Amount };
}
