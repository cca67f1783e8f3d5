using System.Text.Json;
using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>Denials say how to get unblocked, and every status says how close it is to the limit.</summary>
public sealed class UpgradeOptionsTests : ServiceTest
{
    [Test]
    public async Task CheckLimit_Denied_ListsExactlyThePlansThatWouldAllowTheRequest_InRankOrder()
    {
        var subject = await SubscribeAsync("free");
        await TrackAsync(subject, Minutes, 25);

        // 25 used + 290 asked = 315: over free (30) and starter (300), within pro (1000) and premium.
        var response = await CheckAsync(subject, Minutes, 290);

        Assert.Multiple(() =>
        {
            Assert.That(response.Allowed, Is.False);
            Assert.That(response.UpgradeOptions.Select(o => o.PlanId), Is.EqualTo(new[] { "pro", "premium" }));
            Assert.That(response.UpgradeOptions[0].DisplayName, Is.EqualTo("Pro"));
            Assert.That(response.UpgradeOptions[0].Rank, Is.EqualTo(2));
            Assert.That(response.UpgradeOptions[0].Limits.Single().UsageType, Is.EqualTo(Minutes));
            Assert.That(response.UpgradeOptions[0].Limits.Single().Limit, Is.EqualTo(1000));
            Assert.That(response.UpgradeOptions[1].Limits.Single().Limit, Is.EqualTo(-1));
        });
    }

    [Test]
    public async Task CheckLimit_DeniedOnSeveralUsageTypes_ListsOnlyPlansWhereEveryAmountFits()
    {
        var subject = await SubscribeAsync("free");

        var response = await Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 20), Usage(Interviews, 1), Usage(DetailedAnalysis, 1) },
        });

        Assert.Multiple(() =>
        {
            Assert.That(response.Allowed, Is.False);
            Assert.That(response.Limits[2].Decision, Is.EqualTo(Decision.NotInPlan));
            Assert.That(response.UpgradeOptions.Select(o => o.PlanId), Is.EqualTo(new[] { "pro", "premium" }), "starter has no detailed analyses");
            Assert.That(response.UpgradeOptions[0].Limits.Select(l => l.Limit), Is.EqualTo(new long[] { 1000, 10, 20 }));
        });
    }

    [Test]
    public async Task CheckLimit_CountsHoldsWhenListingOptions()
    {
        var subject = await SubscribeAsync("starter");
        Assert.That((await CheckAsync(subject, Minutes, 290, reserve: true)).Allowed, Is.True);

        var response = await CheckAsync(subject, Minutes, 711);

        Assert.That(response.UpgradeOptions.Select(o => o.PlanId), Is.EqualTo(new[] { "premium" }), "290 held + 711 > 1000");
    }

    [Test]
    public async Task CheckLimit_Allowed_HasNoUpgradeOptions()
    {
        var subject = await SubscribeAsync("free");

        var response = await CheckAsync(subject, Minutes, 5);

        Assert.Multiple(() =>
        {
            Assert.That(response.Allowed, Is.True);
            Assert.That(response.UpgradeOptions, Is.Empty);
        });
    }

    [Test]
    public async Task TrackUsage_EnforcedAndDenied_CarriesTheUpgradeOptionsInErrorInfo()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 290);

        var error = FailsWith(StatusCode.ResourceExhausted, () => Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "over",
            Usage = { Usage(Minutes, 11) },
            Enforce = true,
        }).ResponseAsync);

        var info = error.GetRpcStatus()!.GetDetail<ErrorInfo>();
        using var json = JsonDocument.Parse(info.Metadata["upgrade_options_json"]);
        var first = json.RootElement[0];
        Assert.Multiple(() =>
        {
            Assert.That(info.Metadata["upgrade_options"], Is.EqualTo("pro,premium"));
            Assert.That(json.RootElement.GetArrayLength(), Is.EqualTo(2));
            Assert.That(first.GetProperty("plan_id").GetString(), Is.EqualTo("pro"));
            Assert.That(first.GetProperty("display_name").GetString(), Is.EqualTo("Pro"));
            Assert.That(first.GetProperty("limits").GetProperty(Minutes).GetInt64(), Is.EqualTo(1000));
        });
    }

    [Test]
    public async Task TrackUsage_EnforcedNotInPlan_CarriesTheUpgradeOptionsInErrorInfo()
    {
        var subject = await SubscribeAsync("free");

        var error = FailsWith(StatusCode.PermissionDenied, () => Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "analysis",
            Usage = { Usage(VideoReview, 1) },
            Enforce = true,
        }).ResponseAsync);

        var info = error.GetRpcStatus()!.GetDetail<ErrorInfo>();
        Assert.Multiple(() =>
        {
            Assert.That(info.Reason, Is.EqualTo("NOT_IN_PLAN"));
            Assert.That(info.Metadata["upgrade_options"], Is.EqualTo("pro,premium"));
        });
    }

    [Test]
    public async Task LimitStatus_CarriesPercentUsedAndLevel()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 240);
        await TrackAsync(subject, Interviews, 3);

        var remaining = (await Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject })).Limits.ToDictionary(l => l.UsageType);

        Assert.Multiple(() =>
        {
            Assert.That(remaining[Minutes].PercentUsed, Is.EqualTo(80.0).Within(1e-9));
            Assert.That(remaining[Minutes].Level, Is.EqualTo(UsageLevel.Warning));
            Assert.That(remaining[Interviews].Level, Is.EqualTo(UsageLevel.Exhausted));
            Assert.That(remaining[DetailedAnalysis].Level, Is.EqualTo(UsageLevel.Exhausted), "not in the plan: nothing left");
        });
        await SubscribeAsync("premium", subject);
        var premium = await RemainingAsync(subject, Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(premium.PercentUsed, Is.Zero);
            Assert.That(premium.Level, Is.EqualTo(UsageLevel.Ok), "unlimited stays OK");
        });
    }

    [Test]
    public async Task CheckLimit_WithAHold_ReportsTheLevelIncludingIt()
    {
        var subject = await SubscribeAsync("free");

        var response = await CheckAsync(subject, Minutes, 29, reserve: true);

        Assert.Multiple(() =>
        {
            Assert.That(response.Limits[0].PercentUsed, Is.EqualTo(100.0 * 29 / 30).Within(1e-9));
            Assert.That(response.Limits[0].Level, Is.EqualTo(UsageLevel.Critical));
        });
    }
}
