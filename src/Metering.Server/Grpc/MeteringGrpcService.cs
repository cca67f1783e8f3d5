using Grpc.Core;
using Metering.Api.V1;
using Metering.Core.Telemetry;
using Metering.Core.Usage;
using Metering.Server.Security;
using Microsoft.AspNetCore.Authorization;

namespace Metering.Server.Grpc;

/// <summary>
/// metering.v1.MeteringService: maps the wire messages and delegates to <see cref="UsageMeter"/>.
/// Each RPC names the one scope it requires. Records the domain metrics from each use case's result.
/// </summary>
internal sealed class MeteringGrpcService(UsageMeter meter, MeteringMetrics metrics) : MeteringService.MeteringServiceBase
{
    [Authorize(Policy = Scopes.Check)]
    public override async Task<CheckLimitResponse> CheckLimit(CheckLimitRequest request, ServerCallContext context)
    {
        var result = await meter.CheckLimitAsync(
            new CheckLimitCommand(request.SubjectId, request.Usage.ToDomain(), request.Reserve, request.ReservationTtl.ToDuration("reservation_ttl"), request.RequestId),
            context.CancellationToken);
        metrics.RecordDecisions(result.Limits);
        if (result.ReservationId is not null)
        {
            metrics.HoldPlaced();
        }

        return new CheckLimitResponse
        {
            Allowed = result.Allowed,
            Limits = { result.Limits.Select(l => l.ToProto()) },
            PlanId = result.PlanId,
            ReservationId = result.ReservationId ?? string.Empty,
            ReservationExpiresAt = result.ReservationExpiresAt?.ToTimestamp(),
            UpgradeOptions = { result.UpgradeOptions.Select(o => o.ToProto()) },
            PlanVersion = result.PlanVersion,
            Degraded = result.Degraded,
        };
    }

    [Authorize(Policy = Scopes.Track)]
    public override async Task<TrackUsageResponse> TrackUsage(TrackUsageRequest request, ServerCallContext context)
    {
        var result = await meter.TrackUsageAsync(
            new TrackUsageCommand(
                request.SubjectId,
                request.IdempotencyKey,
                request.Usage.ToDomain(),
                request.OccurredAt.ToInstant("occurred_at"),
                request.ReservationId,
                request.Enforce,
                request.Attributes,
                context.CallerName(),
                !request.HasFinal || request.Final),
            context.CancellationToken);
        if (!result.Duplicate)
        {
            metrics.RecordUsage(request.Usage.Select(u => (u.UsageType, u.Amount)));
            if (request.ReservationId.Length > 0)
            {
                metrics.HoldSettled();
            }
        }

        return new TrackUsageResponse { Duplicate = result.Duplicate, Limits = { result.Limits.Select(l => l.ToProto()) } };
    }

    [Authorize(Policy = Scopes.Read)]
    public override async Task<GetRemainingResponse> GetRemaining(GetRemainingRequest request, ServerCallContext context)
    {
        var result = await meter.GetRemainingAsync(request.SubjectId, request.UsageTypes, context.CancellationToken);
        return new GetRemainingResponse
        {
            SubjectId = result.SubjectId,
            PlanId = result.PlanId,
            Limits = { result.Limits.Select(l => l.ToProto()) },
            PlanVersion = result.PlanVersion,
            Degraded = result.Degraded,
        };
    }

    [Authorize(Policy = Scopes.Check)]
    public override async Task<ReleaseReservationResponse> ReleaseReservation(ReleaseReservationRequest request, ServerCallContext context)
    {
        var released = await meter.ReleaseReservationAsync(request.SubjectId, request.ReservationId, context.CancellationToken);
        if (released)
        {
            metrics.HoldReleased();
        }

        return new ReleaseReservationResponse { Released = released };
    }
}
