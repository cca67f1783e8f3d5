using Metering.Core.Catalog;
using Metering.Core.Periods;

namespace Metering.Core.Tests;

/// <summary>The product's catalog, as the service seeds it.</summary>
internal static class TestCatalog
{
    public static PlanCatalog Create() => new(
        [
            new UsageType("minutes_per_month", "minute", ResetPeriod.Month),
            new UsageType("interviews_per_day", "interview", ResetPeriod.Day),
            new UsageType("detailed_analysis_per_month", "analysis", ResetPeriod.Month),
            new UsageType("video_review_per_month", "review", ResetPeriod.Month),
        ],
        [
            Plan("premium", 3, -1, -1, -1, -1),
            Plan("free", 0, 30, 1, 0, 0),
            Plan("pro", 2, 1000, 10, 20, 10),
            Plan("starter", 1, 300, 3, 0, 0),
        ]);

    private static Plan Plan(string id, int rank, long minutes, long interviews, long analyses, long reviews) =>
        new(id, id, rank, new Dictionary<string, long>
        {
            ["minutes_per_month"] = minutes,
            ["interviews_per_day"] = interviews,
            ["detailed_analysis_per_month"] = analyses,
            ["video_review_per_month"] = reviews,
        });
}
