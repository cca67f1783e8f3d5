using Google.Protobuf;
using Google.Protobuf.Reflection;
using Google.Rpc;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;
using Status = Grpc.Core.Status;

namespace Metering.IntegrationTests;

/// <summary>
/// Every RPC × no key, an unknown key and a key of each scope: only the RPC's own scope gets through; everything
/// else is UNAUTHENTICATED or PERMISSION_DENIED and records, holds and changes nothing.
/// </summary>
public sealed class AuthorizationTests : ServiceTest
{
    private const string UnknownKey = "mtr_this_key_is_not_configured";

    /// <summary>The one scope each RPC requires. A new RPC must be added here, or the coverage test fails.</summary>
    private static readonly Dictionary<string, string> RequiredScope = new()
    {
        ["metering.v1.MeteringService/CheckLimit"] = "metering.check",
        ["metering.v1.MeteringService/ReleaseReservation"] = "metering.check",
        ["metering.v1.MeteringService/TrackUsage"] = "metering.track",
        ["metering.v1.MeteringService/GetRemaining"] = "metering.read",
        ["metering.v1.AdminService/ListPlans"] = "metering.read",
        ["metering.v1.AdminService/GetSubscription"] = "metering.read",
        ["metering.v1.AdminService/SetSubscription"] = "metering.admin",
        ["metering.v1.AdminService/GetPlan"] = "metering.read",
        ["metering.v1.AdminService/UpsertPlan"] = "metering.admin",
        ["metering.v1.AdminService/DeletePlan"] = "metering.admin",
        ["metering.v1.AdminService/UpsertUsageType"] = "metering.admin",
        ["metering.v1.AdminService/ListUsageTypes"] = "metering.read",
        ["metering.v1.AdminService/AdjustUsage"] = "metering.admin",
        ["metering.v1.AdminService/ResetUsage"] = "metering.admin",
        ["metering.v1.AdminService/ListUsageEvents"] = "metering.read",
        ["metering.v1.AdminService/ListSubscriptionChanges"] = "metering.read",
        ["metering.v1.AdminService/ExplainUsage"] = "metering.read",
        ["metering.v1.AdminService/ReconcileCounters"] = "metering.admin",
    };

    /// <summary>Plan and usage type changes reach every fixture sharing a catalog, so this one has its own.</summary>
    protected override bool OwnDatabase => true;

    private static IEnumerable<MethodDescriptor> AllMethods =>
        MeteringService.Descriptor.Methods.Concat(AdminService.Descriptor.Methods);

    public static IEnumerable<TestCaseData> Matrix()
    {
        var callers = new List<string> { "none", "unknown" };
        callers.AddRange(TestKeys.ByScope.Keys);
        foreach (var method in AllMethods)
        {
            foreach (var caller in callers)
            {
                yield return new TestCaseData(method.FullName, caller).SetName($"{method.Service.Name}_{method.Name}_As_{caller.Replace('.', '_')}");
            }
        }
    }

    [Test]
    public void Matrix_CoversEveryRpcOfTheContract()
    {
        Assert.That(AllMethods.Select(m => $"{m.Service.FullName}/{m.Name}"), Is.EquivalentTo(RequiredScope.Keys));
    }

    [Test]
    public void EveryRpcEndpoint_RequiresExactlyItsOneScope()
    {
        var endpoints = Host.Services.GetRequiredService<EndpointDataSource>().Endpoints
            .Where(e => e.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method.ServiceName.StartsWith("metering.v1.", StringComparison.Ordinal) == true)
            .Select(e => (
                Method: e.Metadata.GetMetadata<GrpcMethodMetadata>()!.Method.FullName.TrimStart('/'),
                Policies: string.Join(' ', e.Metadata.GetOrderedMetadata<IAuthorizeData>().Select(a => a.Policy))))
            .GroupBy(e => e.Method) // a method with an HTTP/JSON route has two endpoints; each must carry the scope
            .ToDictionary(g => g.Key, g => g.Select(e => e.Policies).Distinct().ToArray());

        Assert.That(endpoints, Is.EquivalentTo(RequiredScope.ToDictionary(r => r.Key, r => new[] { r.Value })));
    }

    [TestCaseSource(nameof(Matrix))]
    public async Task Call_IsAllowedOnlyWithItsScope(string methodFullName, string caller)
    {
        var method = AllMethods.Single(m => m.FullName == methodFullName);
        var path = $"{method.Service.FullName}/{method.Name}";
        var subject = NewSubject("authz");
        var key = caller switch
        {
            "none" => null,
            "unknown" => UnknownKey,
            _ => TestKeys.ByScope[caller],
        };
        using var channel = Host.ChannelFor(key);
        if (method.Name == "DeletePlan")
        {
            await Admin.UpsertPlanAsync((UpsertPlanRequest)RequestFor("UpsertPlan", subject));
        }

        var catalogBefore = (await Admin.ListPlansAsync(new ListPlansRequest())).CatalogVersion;
        var status = await CallAsync(channel, method, RequestFor(method.Name, subject));

        var expected = caller switch
        {
            "none" or "unknown" => StatusCode.Unauthenticated,
            _ when RequiredScope[path] == caller => StatusCode.OK,
            _ => StatusCode.PermissionDenied,
        };
        Assert.That(status.StatusCode, Is.EqualTo(expected), status.Detail);
        if (expected != StatusCode.OK)
        {
            await AssertNothingChangedAsync(subject);
            Assert.That((await Admin.ListPlansAsync(new ListPlansRequest())).CatalogVersion, Is.EqualTo(catalogBefore), "catalog unchanged");
        }
    }

    [Test]
    public async Task PermissionDenied_NamesTheMissingScope()
    {
        using var channel = Host.ChannelFor(TestKeys.ByScope["metering.read"]);
        var client = new MeteringService.MeteringServiceClient(channel);

        var error = FailsWith(StatusCode.PermissionDenied, () => client.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = NewSubject(),
            IdempotencyKey = "k",
            Usage = { Usage(Minutes, 1) },
        }).ResponseAsync);

        var info = error.GetRpcStatus()!.GetDetail<ErrorInfo>();
        Assert.Multiple(() =>
        {
            Assert.That(info.Reason, Is.EqualTo("MISSING_SCOPE"));
            Assert.That(info.Metadata["scope"], Is.EqualTo("metering.track"));
            Assert.That(error.Status.Detail, Does.Contain("test-read"));
        });
    }

    [TestCase("Basic dXNlcjpwYXNz")]
    [TestCase("Bearer")]
    [TestCase("Bearer ")]
    [TestCase("bearer mtr_not_a_key")]
    public async Task MalformedAuthorization_IsUnauthenticatedAndDoesNotEchoIt(string header)
    {
        using var channel = GrpcChannel.ForAddress(Host.Server.BaseAddress, new GrpcChannelOptions { HttpHandler = Host.Server.CreateHandler() });
        var client = new MeteringService.MeteringServiceClient(channel);
        var subject = NewSubject();

        var error = FailsWith(StatusCode.Unauthenticated, () => client.TrackUsageAsync(
            new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "k", Usage = { Usage(Minutes, 1) } },
            new Metadata { { "authorization", header } }).ResponseAsync);

        Assert.That(error.Status.Detail, Does.Not.Contain("dXNlcjpwYXNz").And.Not.Contain("mtr_not_a_key"));
        await AssertNothingChangedAsync(subject);
    }

    [Test]
    public async Task HealthAndReflection_NeedNoKey()
    {
        using var channel = Host.ChannelFor(null);

        var health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest());
        using var reflection = new Grpc.Reflection.V1Alpha.ServerReflection.ServerReflectionClient(channel).ServerReflectionInfo();
        await reflection.RequestStream.WriteAsync(new Grpc.Reflection.V1Alpha.ServerReflectionRequest { ListServices = "" });
        await reflection.RequestStream.CompleteAsync();
        Assert.That(await reflection.ResponseStream.MoveNext(CancellationToken.None), Is.True);
        var services = reflection.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name);

        Assert.Multiple(() =>
        {
            Assert.That(health.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.Serving));
            Assert.That(services, Does.Contain("metering.v1.MeteringService"));
        });
    }

    [Test]
    public async Task TrackUsage_RecordsTheCallersKeyName()
    {
        var subject = await SubscribeAsync("starter");
        using var channel = Host.ChannelFor(TestKeys.ByScope["metering.track"]);
        await new MeteringService.MeteringServiceClient(channel).TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "session-1",
            Usage = { Usage(Minutes, 4) },
        });

        await using var connection = new NpgsqlConnection(Host.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT recorded_by FROM usage_events WHERE subject_id = @s", connection);
        command.Parameters.AddWithValue("s", subject);

        Assert.That(await command.ExecuteScalarAsync(), Is.EqualTo("test-track"));
    }

    [Test]
    public async Task ApiKeyCommand_PrintsAKeyThatTheServiceAccepts_FromTheKeysFile()
    {
        using var output = new StringWriter();
        var exit = global::Metering.Server.Security.ApiKeyCommand.Run(["ops-tool", "metering.read"], output, TextWriter.Null);
        var lines = output.ToString().Split('\n', StringSplitOptions.TrimEntries);
        var key = lines.Single(l => l.StartsWith("mtr_", StringComparison.Ordinal));
        var fileEntry = lines.Single(l => l.StartsWith("{ \"ops-tool\"", StringComparison.Ordinal));
        var file = Path.GetTempFileName();
        await File.WriteAllTextAsync(file, fileEntry);
        try
        {
            await using var host = await MeteringHost.StartAsync(Start, settings: new Dictionary<string, string?> { ["Auth:ApiKeysFile"] = file });
            using var channel = host.ChannelFor(key);

            var plans = await new AdminService.AdminServiceClient(channel).ListPlansAsync(new ListPlansRequest());
            var denied = FailsWith(StatusCode.PermissionDenied, () => new AdminService.AdminServiceClient(channel)
                .SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = NewSubject(), PlanId = "pro" }).ResponseAsync);

            Assert.Multiple(() =>
            {
                Assert.That(exit, Is.Zero);
                Assert.That(output.ToString(), Does.Contain($"Auth__ApiKeys__ops-tool__Hash={TestKeys.Hash(key)}"));
                Assert.That(plans.Plans, Is.Not.Empty);
                Assert.That(denied.Status.Detail, Does.Contain("ops-tool"));
            });
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Test]
    public async Task Call_IsTaggedWithTheCallersKeyName_OnItsTrace()
    {
        var tagged = new System.Collections.Concurrent.ConcurrentBag<string>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == "Microsoft.AspNetCore",
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                if (activity.GetTagItem("metering.caller") is string caller)
                {
                    tagged.Add($"{caller} {activity.DisplayName}");
                }
            },
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        using var channel = Host.ChannelFor(TestKeys.ByScope["metering.read"]);

        await new MeteringService.MeteringServiceClient(channel).GetRemainingAsync(new GetRemainingRequest { SubjectId = NewSubject() });

        Assert.That(tagged, Has.Some.StartsWith("test-read "));
    }

    private async Task AssertNothingChangedAsync(string subject)
    {
        var remaining = await Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject });
        var subscription = await Admin.GetSubscriptionAsync(new GetSubscriptionRequest { SubjectId = subject });
        Assert.Multiple(() =>
        {
            Assert.That(remaining.Limits.Sum(l => l.Used), Is.Zero, "nothing recorded");
            Assert.That(remaining.Limits.Sum(l => l.Reserved), Is.Zero, "nothing held");
            Assert.That(subscription.Subscription.PlanId, Is.EqualTo("free"), "subscription unchanged");
        });
    }

    private static IMessage RequestFor(string method, string subject) => method switch
    {
        "CheckLimit" => new CheckLimitRequest { SubjectId = subject, Usage = { Usage(Minutes, 1) }, Reserve = true },
        "ReleaseReservation" => new ReleaseReservationRequest { SubjectId = subject, ReservationId = "rsv_unknown" },
        "TrackUsage" => new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "k-1", Usage = { Usage(Minutes, 1) } },
        "GetRemaining" => new GetRemainingRequest { SubjectId = subject },
        "ListPlans" => new ListPlansRequest(),
        "GetSubscription" => new GetSubscriptionRequest { SubjectId = subject },
        "SetSubscription" => new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" },
        "GetPlan" => new GetPlanRequest { PlanId = "pro" },
        "UpsertPlan" => new UpsertPlanRequest
        {
            PlanId = $"plan-{subject}",
            DisplayName = "Authorization test",
            Rank = 50,
            Limits = { new PlanLimit { UsageType = Minutes, Limit = 5 } },
        },
        "DeletePlan" => new DeletePlanRequest { PlanId = $"plan-{subject}" },
        "UpsertUsageType" => new UpsertUsageTypeRequest { Name = $"type-{subject}", Unit = "unit", ResetPeriod = ResetPeriod.Day },
        "ListUsageTypes" => new ListUsageTypesRequest(),
        "AdjustUsage" => new AdjustUsageRequest { SubjectId = subject, UsageType = Minutes, Amount = 5, Reason = "authorization test", IdempotencyKey = "k-adjust" },
        "ResetUsage" => new ResetUsageRequest { SubjectId = subject, UsageType = Minutes, Reason = "authorization test", IdempotencyKey = "k-reset" },
        "ListUsageEvents" => new ListUsageEventsRequest { SubjectId = subject },
        "ListSubscriptionChanges" => new ListSubscriptionChangesRequest { SubjectId = subject },
        "ExplainUsage" => new ExplainUsageRequest { SubjectId = subject, UsageType = Minutes },
        "ReconcileCounters" => new ReconcileCountersRequest { SubjectId = subject },
        _ => throw new ArgumentException($"no request for {method}: add one", nameof(method)),
    };

    /// <summary>Calls any unary method by its descriptor and returns the status it ended with.</summary>
    private static async Task<Status> CallAsync(GrpcChannel channel, MethodDescriptor descriptor, IMessage request)
    {
        var method = new Method<IMessage, IMessage>(
            MethodType.Unary,
            descriptor.Service.FullName,
            descriptor.Name,
            Marshallers.Create<IMessage>(m => m.ToByteArray(), descriptor.InputType.Parser.ParseFrom),
            Marshallers.Create<IMessage>(m => m.ToByteArray(), descriptor.OutputType.Parser.ParseFrom));
        try
        {
            await channel.CreateCallInvoker().AsyncUnaryCall(method, null, new CallOptions(), request);
            return Status.DefaultSuccess;
        }
        catch (RpcException ex)
        {
            return ex.Status;
        }
    }
}
