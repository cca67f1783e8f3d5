using Metering.Core.Catalog;
using Metering.Core.Limits;
using Metering.Core.Periods;

namespace Metering.Core.Tests.Limits;

public sealed class UpgradeAdvisorTests
{
    private const string Minutes = "minutes_per_month";
    private const string Interviews = "interviews_per_day";
    private const string Analyses = "detailed_analysis_per_month";

    private static readonly PlanCatalog Catalog = TestCatalog.Create();

    [Test]
    public void Options_FreeUserOverMinutes_ListsEveryBiggerPlanInRankOrder()
    {
        var options = UpgradeAdvisor.Options(Catalog, "free", [new RequestedLine(Minutes, 30, 25, 0)]);

        Assert.That(options.Select(o => o.PlanId), Is.EqualTo(new[] { "starter", "pro", "premium" }));
    }

    [Test]
    public void Options_CountCurrentUsageAndHolds()
    {
        // 990 used and 5 held: 10 more fits neither starter (300) nor pro (1000), only premium.
        var options = UpgradeAdvisor.Options(Catalog, "free", [new RequestedLine(Minutes, 10, 990, 5)]);

        Assert.That(options.Select(o => o.PlanId), Is.EqualTo(new[] { "premium" }));
    }

    [Test]
    public void Options_EveryLineMustFit()
    {
        // Starter has the minutes but not the analysis; pro and premium have both.
        var options = UpgradeAdvisor.Options(Catalog, "free", [new RequestedLine(Minutes, 20, 20, 0), new RequestedLine(Analyses, 1, 0, 0)]);

        Assert.That(options.Select(o => o.PlanId), Is.EqualTo(new[] { "pro", "premium" }));
    }

    [Test]
    public void Options_CarryTheLimitThatWouldApplyToEachRequestedUsageType()
    {
        var options = UpgradeAdvisor.Options(Catalog, "starter", [new RequestedLine(Minutes, 10, 300, 0), new RequestedLine(Interviews, 1, 0, 0)]);

        Assert.Multiple(() =>
        {
            Assert.That(options.Select(o => o.PlanId), Is.EqualTo(new[] { "pro", "premium" }));
            Assert.That(options[0].DisplayName, Is.EqualTo("pro"));
            Assert.That(options[0].Rank, Is.EqualTo(2));
            Assert.That(options[0].Limits, Is.EqualTo(new[] { new UsageLimit(Minutes, 1000), new UsageLimit(Interviews, 10) }));
            Assert.That(options[1].Limits, Is.EqualTo(new[] { new UsageLimit(Minutes, -1), new UsageLimit(Interviews, -1) }));
        });
    }

    [Test]
    public void Options_NeverListTheCurrentPlan()
    {
        var options = UpgradeAdvisor.Options(Catalog, "pro", [new RequestedLine(Minutes, 1, 0, 0)]);

        Assert.That(options.Select(o => o.PlanId), Does.Not.Contain("pro"));
    }

    [Test]
    public void Options_WhenNoPlanWouldAllow_AreEmpty()
    {
        var catalog = new PlanCatalog(
            [new UsageType(Minutes, "minute", ResetPeriod.Month)],
            [
                new Plan("small", "Small", 0, new Dictionary<string, long> { [Minutes] = 10 }),
                new Plan("big", "Big", 1, new Dictionary<string, long> { [Minutes] = 100 }),
            ]);

        var options = UpgradeAdvisor.Options(catalog, "small", [new RequestedLine(Minutes, 50, 60, 0)]);

        Assert.That(options, Is.Empty);
    }

    [Test]
    public void Options_ExactlyAtTheBiggerLimit_Allow()
    {
        var options = UpgradeAdvisor.Options(Catalog, "free", [new RequestedLine(Interviews, 1, 2, 0)]);

        Assert.That(options.Select(o => o.PlanId), Is.EqualTo(new[] { "starter", "pro", "premium" }));
    }

    [Test]
    public void Options_ForNoLines_AreEmpty() =>
        Assert.That(UpgradeAdvisor.Options(Catalog, "free", []), Is.Empty);
}
