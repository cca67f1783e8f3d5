using Grpc.Core;
using Metering.Api.V1;
using Metering.Core.Catalog;
using Metering.Core.History;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Telemetry;
using Metering.Core.Usage;
using Metering.Server.Security;
using Microsoft.AspNetCore.Authorization;

namespace Metering.Server.Grpc;

/// <summary>
/// metering.v1.AdminService: plans, usage types, subscriptions, corrections, history and diagnostics for ops and
/// billing. Reads need metering.read, writes metering.admin.
/// </summary>
internal sealed class AdminGrpcService(SubscriptionDirectory subscriptions, CatalogDirectory catalogs, ICatalogProvider catalog, UsageCorrections corrections, HistoryReader history, CounterAuditor auditor, MeteringMetrics metrics) : AdminService.AdminServiceBase
{
    [Authorize(Policy = Scopes.Read)]
    public override async Task<ListPlansResponse> ListPlans(ListPlansRequest request, ServerCallContext context)
    {
        var current = await catalog.RefreshAsync(context.CancellationToken);
        return new ListPlansResponse
        {
            Plans = { current.Plans.Select(p => p.ToProto(current.UsageTypes)) },
            CatalogVersion = current.Version,
        };
    }

    [Authorize(Policy = Scopes.Read)]
    public override async Task<GetPlanResponse> GetPlan(GetPlanRequest request, ServerCallContext context)
    {
        var plan = await catalogs.GetPlanAsync(request.PlanId, context.CancellationToken);
        var current = catalog.Current;
        return new GetPlanResponse { Plan = plan.ToProto(current.UsageTypes), CatalogVersion = current.Version };
    }

    [Authorize(Policy = Scopes.Admin)]
    public override async Task<UpsertPlanResponse> UpsertPlan(UpsertPlanRequest request, ServerCallContext context)
    {
        var (plan, version) = await catalogs.UpsertPlanAsync(
            new UpsertPlanCommand(
                request.PlanId,
                request.DisplayName,
                request.Rank,
                [.. request.Limits.Select(l => new LimitRequest(l.UsageType, l.Limit))]),
            context.CancellationToken);
        return new UpsertPlanResponse { Plan = plan.ToProto(catalog.Current.UsageTypes), CatalogVersion = version };
    }

    [Authorize(Policy = Scopes.Admin)]
    public override async Task<DeletePlanResponse> DeletePlan(DeletePlanRequest request, ServerCallContext context) =>
        new() { CatalogVersion = await catalogs.DeletePlanAsync(request.PlanId, context.CancellationToken) };

    [Authorize(Policy = Scopes.Admin)]
    public override async Task<UpsertUsageTypeResponse> UpsertUsageType(UpsertUsageTypeRequest request, ServerCallContext context)
    {
        var (usageType, version) = await catalogs.UpsertUsageTypeAsync(
            new UpsertUsageTypeCommand(request.Name, request.Unit, request.ResetPeriod.ToDomain(), request.DegradedPolicy.ToDomain()),
            context.CancellationToken);
        return new UpsertUsageTypeResponse { UsageType = usageType.ToProto(), CatalogVersion = version };
    }

    [Authorize(Policy = Scopes.Read)]
    public override async Task<ListUsageTypesResponse> ListUsageTypes(ListUsageTypesRequest request, ServerCallContext context)
    {
        var current = await catalog.RefreshAsync(context.CancellationToken);
        return new ListUsageTypesResponse
        {
            UsageTypes = { current.UsageTypes.Select(t => t.ToProto()) },
            CatalogVersion = current.Version,
        };
    }

    [Authorize(Policy = Scopes.Admin)]
    public override async Task<AdjustUsageResponse> AdjustUsage(AdjustUsageRequest request, ServerCallContext context)
    {
        var result = await corrections.AdjustUsageAsync(
            new AdjustUsageCommand(
                request.SubjectId,
                request.UsageType,
                request.Amount,
                request.Reason,
                request.IdempotencyKey,
                request.OccurredAt.ToInstant("occurred_at"),
                context.CallerName()),
            context.CancellationToken);
        return new AdjustUsageResponse { Duplicate = result.Duplicate, Limit = result.Limit.ToProto() };
    }

    [Authorize(Policy = Scopes.Admin)]
    public override async Task<ResetUsageResponse> ResetUsage(ResetUsageRequest request, ServerCallContext context)
    {
        var result = await corrections.ResetUsageAsync(
            new ResetUsageCommand(request.SubjectId, request.UsageType, request.Reason, request.IdempotencyKey, context.CallerName()),
            context.CancellationToken);
        return new ResetUsageResponse { Duplicate = result.Duplicate, AdjustedBy = result.Amount, Limit = result.Limit.ToProto() };
    }

    [Authorize(Policy = Scopes.Read)]
    public override async Task<ListUsageEventsResponse> ListUsageEvents(ListUsageEventsRequest request, ServerCallContext context)
    {
        var page = await history.ListEventsAsync(
            request.SubjectId,
            request.UsageType,
            request.From.ToInstant("from"),
            request.To.ToInstant("to"),
            request.PageSize,
            request.PageToken,
            context.CancellationToken);
        return new ListUsageEventsResponse
        {
            Events = { page.Events.Select(e => e.ToProto()) },
            NextPageToken = page.NextPageToken ?? string.Empty,
        };
    }

    [Authorize(Policy = Scopes.Read)]
    public override async Task<ListSubscriptionChangesResponse> ListSubscriptionChanges(ListSubscriptionChangesRequest request, ServerCallContext context)
    {
        var changes = await history.ListSubscriptionChangesAsync(request.SubjectId, context.CancellationToken);
        return new ListSubscriptionChangesResponse { Changes = { changes.Select(c => c.ToProto()) } };
    }

    [Authorize(Policy = Scopes.Read)]
    public override async Task<ExplainUsageResponse> ExplainUsage(ExplainUsageRequest request, ServerCallContext context) =>
        (await auditor.ExplainAsync(request.SubjectId, request.UsageType, context.CancellationToken)).ToProto();

    [Authorize(Policy = Scopes.Admin)]
    public override async Task<ReconcileCountersResponse> ReconcileCounters(ReconcileCountersRequest request, ServerCallContext context)
    {
        var result = await auditor.ReconcileAsync(request.SubjectId, context.CancellationToken);
        metrics.ReconcileRepaired(result.Repairs.Count);
        return new ReconcileCountersResponse
        {
            SubjectsChecked = result.SubjectsChecked,
            CountersChecked = result.CountersChecked,
            Repairs = { result.Repairs.Select(r => r.ToProto()) },
        };
    }

    [Authorize(Policy = Scopes.Admin)]
    public override async Task<SetSubscriptionResponse> SetSubscription(SetSubscriptionRequest request, ServerCallContext context)
    {
        var subscription = await subscriptions.SetAsync(
            new SetSubscriptionCommand(request.SubjectId, request.PlanId, request.BillingAnchorDay, request.TimeZone),
            context.CancellationToken);
        return new SetSubscriptionResponse { Subscription = subscription.ToProto() };
    }

    [Authorize(Policy = Scopes.Read)]
    public override async Task<GetSubscriptionResponse> GetSubscription(GetSubscriptionRequest request, ServerCallContext context)
    {
        var subject = await subscriptions.GetAsync(request.SubjectId, context.CancellationToken);
        return new GetSubscriptionResponse { Subscription = subject.Subscription.ToProto() };
    }
}
