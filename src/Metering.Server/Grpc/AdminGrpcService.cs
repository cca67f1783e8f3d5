using Grpc.Core;
using Metering.Api.V1;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using Metering.Core.Validation;
using Metering.Server.Security;
using Microsoft.AspNetCore.Authorization;

namespace Metering.Server.Grpc;

/// <summary>metering.v1.AdminService: plans and subscriptions for ops and billing. Reads need metering.read, writes metering.admin.</summary>
internal sealed class AdminGrpcService(SubscriptionDirectory subscriptions, ICatalogProvider catalog) : AdminService.AdminServiceBase
{
    [Authorize(Policy = Scopes.Read)]
    public override Task<ListPlansResponse> ListPlans(ListPlansRequest request, ServerCallContext context)
    {
        var current = catalog.Current;
        return Task.FromResult(new ListPlansResponse { Plans = { current.Plans.Select(p => p.ToProto(current.UsageTypes)) } });
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
        new RequestValidator(catalog.Current).SubjectId("subject_id", request.SubjectId).ThrowIfInvalid();
        var subject = await subscriptions.ResolveAsync(request.SubjectId, context.CancellationToken);
        return new GetSubscriptionResponse { Subscription = subject.Subscription.ToProto() };
    }
}
