using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>Plans and usage types as data. Each test edits a catalog of its own (a private ledger database).</summary>
public sealed class PlanAdminTests : ServiceTest
{
    private MeteringHost _host = null!;

    private AdminService.AdminServiceClient CatalogAdmin => _host.Admin;

    [SetUp]
    public async Task StartPrivateHostAsync() =>
        _host = await MeteringHost.StartAsync(Start, await Servers.Instance.CreateDatabaseAsync("plans"));

    [TearDown]
    public async Task StopPrivateHostAsync() => await _host.DisposeAsync();

    [Test]
    public async Task UpsertPlan_NewPlan_IsListedInRankOrderWithItsLimitsAndVersion()
    {
        var before = await CatalogAdmin.ListPlansAsync(new ListPlansRequest());

        var response = await CatalogAdmin.UpsertPlanAsync(new UpsertPlanRequest
        {
            PlanId = "team",
            DisplayName = "Team",
            Rank = 5,
            Limits = { Limit(Minutes, 5000), Limit(Interviews, 50) },
        });
        var after = await CatalogAdmin.ListPlansAsync(new ListPlansRequest());
        var team = after.Plans.Single(p => p.PlanId == "team");

        Assert.Multiple(() =>
        {
            Assert.That(response.CatalogVersion, Is.EqualTo(before.CatalogVersion + 1));
            Assert.That(response.Plan.Version, Is.EqualTo(response.CatalogVersion));
            Assert.That(after.CatalogVersion, Is.EqualTo(response.CatalogVersion));
            Assert.That(after.Plans.Select(p => p.PlanId), Is.EqualTo(new[] { "free", "starter", "pro", "premium", "team" }));
            Assert.That(team.DisplayName, Is.EqualTo("Team"));
            Assert.That(team.Limits.ToDictionary(l => l.UsageType, l => l.Limit), Is.EqualTo(new Dictionary<string, long>
            {
                [DetailedAnalysis] = 0,
                [Interviews] = 50,
                [Minutes] = 5000,
                [VideoReview] = 0,
            }));
        });
    }

    [Test]
    public async Task UpsertPlan_ExistingPlan_ReplacesNameRankAndLimits_AndGetPlanReturnsIt()
    {
        await CatalogAdmin.UpsertPlanAsync(new UpsertPlanRequest
        {
            PlanId = "starter",
            DisplayName = "Starter 2027",
            Rank = 1,
            Limits = { Limit(Minutes, 400) },
        });

        var plan = (await CatalogAdmin.GetPlanAsync(new GetPlanRequest { PlanId = "starter" })).Plan;

        Assert.Multiple(() =>
        {
            Assert.That(plan.DisplayName, Is.EqualTo("Starter 2027"));
            Assert.That(plan.Limits.Single(l => l.UsageType == Minutes).Limit, Is.EqualTo(400));
            Assert.That(plan.Limits.Single(l => l.UsageType == Interviews).Limit, Is.Zero, "a limit left out is not in the plan");
        });
    }

    [Test]
    public async Task UpsertPlan_ChangesLimitsOfSubscribedSubjects_OnTheNextCall()
    {
        var subject = NewSubject();
        await _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await Track(_host, subject, Minutes, 250);

        await CatalogAdmin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "starter", DisplayName = "Starter", Rank = 1, Limits = { Limit(Minutes, 200), Limit(Interviews, 3) } });
        var status = (await _host.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } })).Limits.Single();

        Assert.Multiple(() =>
        {
            Assert.That(status.Limit, Is.EqualTo(200));
            Assert.That(status.Used, Is.EqualTo(250));
            Assert.That(status.Remaining, Is.Zero, "a downgrade below what is used leaves 0, never negative");
            Assert.That(status.Level, Is.EqualTo(UsageLevel.Exhausted));
        });
    }

    [Test]
    public void UpsertPlan_UnknownUsageTypeOrLimitBelowMinusOne_IsInvalidArgumentNamingEachField()
    {
        var error = FailsWith(StatusCode.InvalidArgument, () => CatalogAdmin.UpsertPlanAsync(new UpsertPlanRequest
        {
            PlanId = "Bad Plan",
            DisplayName = "",
            Rank = 1,
            Limits = { Limit("hours_per_week", 3), Limit(Minutes, -2), Limit(Minutes, 5) },
        }).ResponseAsync);

        var fields = error.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations.Select(v => v.Field);
        Assert.That(fields, Is.EquivalentTo(new[] { "plan_id", "display_name", "limits[0].usage_type", "limits[1].limit", "limits[2].usage_type" }));
    }

    [Test]
    public void GetPlan_Unknown_IsNotFound() =>
        FailsWith(StatusCode.NotFound, () => CatalogAdmin.GetPlanAsync(new GetPlanRequest { PlanId = "gold" }).ResponseAsync);

    [Test]
    public async Task DeletePlan_Unused_RemovesItAndBumpsTheVersion()
    {
        await CatalogAdmin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "trial", DisplayName = "Trial", Rank = 0, Limits = { Limit(Minutes, 10) } });

        var deleted = await CatalogAdmin.DeletePlanAsync(new DeletePlanRequest { PlanId = "trial" });
        var plans = await CatalogAdmin.ListPlansAsync(new ListPlansRequest());

        Assert.Multiple(() =>
        {
            Assert.That(plans.Plans.Select(p => p.PlanId), Does.Not.Contain("trial"));
            Assert.That(plans.CatalogVersion, Is.EqualTo(deleted.CatalogVersion));
        });
        FailsWith(StatusCode.InvalidArgument, () => _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = NewSubject(), PlanId = "trial" }).ResponseAsync);
        FailsWith(StatusCode.NotFound, () => CatalogAdmin.DeletePlanAsync(new DeletePlanRequest { PlanId = "trial" }).ResponseAsync);
    }

    [Test]
    public async Task DeletePlan_WhileASubscriptionUsesIt_IsFailedPrecondition_AndKeepsThePlan()
    {
        var subject = NewSubject();
        await _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" });

        var error = FailsWith(StatusCode.FailedPrecondition, () => CatalogAdmin.DeletePlanAsync(new DeletePlanRequest { PlanId = "pro" }).ResponseAsync);

        Assert.Multiple(async () =>
        {
            Assert.That(error.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason, Is.EqualTo("PLAN_IN_USE"));
            Assert.That((await CatalogAdmin.GetPlanAsync(new GetPlanRequest { PlanId = "pro" })).Plan.PlanId, Is.EqualTo("pro"));
        });

        // Once nobody uses it, it can go.
        await _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await CatalogAdmin.DeletePlanAsync(new DeletePlanRequest { PlanId = "pro" });
    }

    [Test]
    public void DeletePlan_TheDefaultPlan_IsFailedPrecondition()
    {
        var error = FailsWith(StatusCode.FailedPrecondition, () => CatalogAdmin.DeletePlanAsync(new DeletePlanRequest { PlanId = "free" }).ResponseAsync);

        Assert.That(error.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason, Is.EqualTo("DEFAULT_PLAN"));
    }

    [Test]
    public async Task UpsertUsageType_New_IsListed_AndMeteredOncePlansIncludeIt()
    {
        var created = await CatalogAdmin.UpsertUsageTypeAsync(new UpsertUsageTypeRequest { Name = "mock_exams_per_day", Unit = "exam", ResetPeriod = ResetPeriod.Day });
        await CatalogAdmin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "pro", DisplayName = "Pro", Rank = 2, Limits = { Limit(Minutes, 1000), Limit("mock_exams_per_day", 2) } });
        var subject = NewSubject();
        await _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" });

        await Track(_host, subject, "mock_exams_per_day", 2);
        var check = await _host.Metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = subject, Usage = { Usage("mock_exams_per_day", 1) } });
        var types = await CatalogAdmin.ListUsageTypesAsync(new ListUsageTypesRequest());

        Assert.Multiple(() =>
        {
            Assert.That(created.UsageType.ResetPeriod, Is.EqualTo(ResetPeriod.Day));
            Assert.That(types.UsageTypes.Select(t => t.Name), Does.Contain("mock_exams_per_day"));
            Assert.That(types.CatalogVersion, Is.EqualTo(created.CatalogVersion + 1));
            Assert.That(check.Allowed, Is.False);
            Assert.That(check.Limits[0].Used, Is.EqualTo(2));
            Assert.That(check.UpgradeOptions, Is.Empty, "no other plan includes mock exams");
        });
    }

    [Test]
    public async Task UpsertUsageType_ChangesTheUnit_ButNeverTheResetPeriod()
    {
        await CatalogAdmin.UpsertUsageTypeAsync(new UpsertUsageTypeRequest { Name = Minutes, Unit = "min", ResetPeriod = ResetPeriod.Month });

        var error = FailsWith(StatusCode.InvalidArgument, () => CatalogAdmin.UpsertUsageTypeAsync(
            new UpsertUsageTypeRequest { Name = Minutes, Unit = "minute", ResetPeriod = ResetPeriod.Day }).ResponseAsync);
        var missing = FailsWith(StatusCode.InvalidArgument, () => CatalogAdmin.UpsertUsageTypeAsync(
            new UpsertUsageTypeRequest { Name = "x", Unit = "x" }).ResponseAsync);

        var minutes = (await CatalogAdmin.ListUsageTypesAsync(new ListUsageTypesRequest())).UsageTypes.Single(t => t.Name == Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(minutes.Unit, Is.EqualTo("min"));
            Assert.That(minutes.ResetPeriod, Is.EqualTo(ResetPeriod.Month));
            Assert.That(error.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations.Single().Field, Is.EqualTo("reset_period"));
            Assert.That(missing.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations.Single().Field, Is.EqualTo("reset_period"));
        });
    }

    [Test]
    public async Task CatalogChanges_SurviveARestart_AndTheSeedDoesNotBringADeletedPlanBack()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("restart");
        await using (var first = await MeteringHost.StartAsync(Start, database))
        {
            await first.Admin.DeletePlanAsync(new DeletePlanRequest { PlanId = "starter" });
            await first.Admin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "pro", DisplayName = "Pro+", Rank = 2, Limits = { Limit(Minutes, 1200) } });
        }

        await using var second = await MeteringHost.StartAsync(Start, database);
        var plans = (await second.Admin.ListPlansAsync(new ListPlansRequest())).Plans;

        Assert.Multiple(() =>
        {
            Assert.That(plans.Select(p => p.PlanId), Is.EqualTo(new[] { "free", "pro", "premium" }));
            Assert.That(plans.Single(p => p.PlanId == "pro").DisplayName, Is.EqualTo("Pro+"));
        });
    }

    internal static PlanLimit Limit(string usageType, long limit) => new() { UsageType = usageType, Limit = limit };

    internal static async Task Track(MeteringHost host, string subject, string usageType, long amount) =>
        await host.Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = Guid.NewGuid().ToString("N"),
            Usage = { new UsageAmount { UsageType = usageType, Amount = amount } },
        });
}
