using Metering.Core.Catalog;
using Metering.Core.Periods;

namespace Metering.Core.Tests.Catalog;

public sealed class PlanCatalogTests
{
    [Test]
    public void Plans_AreInRankOrder_UsageTypesInNameOrder()
    {
        var catalog = TestCatalog.Create();

        Assert.Multiple(() =>
        {
            Assert.That(catalog.Plans.Select(p => p.Id), Is.EqualTo(new[] { "free", "starter", "pro", "premium" }));
            Assert.That(catalog.UsageTypes.Select(t => t.Name), Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal));
        });
    }

    [Test]
    public void LimitFor_AUsageTypeThePlanDoesNotName_IsNotInPlan()
    {
        var plan = new Plan("tiny", "Tiny", 0, new Dictionary<string, long> { ["minutes_per_month"] = 5 });

        Assert.Multiple(() =>
        {
            Assert.That(plan.LimitFor("minutes_per_month"), Is.EqualTo(5));
            Assert.That(plan.LimitFor("video_review_per_month"), Is.EqualTo(Limit.NotInPlan));
        });
    }

    [Test]
    public void Constructor_PlanWithUnknownUsageType_Throws()
    {
        var types = new[] { new UsageType("minutes_per_month", "minute", ResetPeriod.Month) };
        var plans = new[] { new Plan("p", "P", 0, new Dictionary<string, long> { ["tokens"] = 5 }) };

        Assert.That(() => new PlanCatalog(types, plans), Throws.ArgumentException.With.Message.Contains("tokens"));
    }

    [Test]
    public void Constructor_LimitBelowMinusOne_Throws()
    {
        var types = new[] { new UsageType("minutes_per_month", "minute", ResetPeriod.Month) };
        var plans = new[] { new Plan("p", "P", 0, new Dictionary<string, long> { ["minutes_per_month"] = -2 }) };

        Assert.That(() => new PlanCatalog(types, plans), Throws.ArgumentException.With.Message.Contains("-2"));
    }

    [Test]
    public void TryGet_UnknownNames_ReturnFalse()
    {
        var catalog = TestCatalog.Create();

        Assert.Multiple(() =>
        {
            Assert.That(catalog.TryGetPlan("gold", out _), Is.False);
            Assert.That(catalog.TryGetUsageType("Minutes_Per_Month", out _), Is.False, "names are case-sensitive");
            Assert.That(catalog.TryGetPlan("pro", out var pro), Is.True);
            Assert.That(pro!.LimitFor("detailed_analysis_per_month"), Is.EqualTo(20));
        });
    }
}
