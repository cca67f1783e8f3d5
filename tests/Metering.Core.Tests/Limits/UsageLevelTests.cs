using Metering.Core.Limits;

namespace Metering.Core.Tests.Limits;

public sealed class UsageLevelTests
{
    [TestCase(100, 0, 0, ExpectedResult = UsageLevel.Ok)]
    [TestCase(100, 79, 0, ExpectedResult = UsageLevel.Ok)]
    [TestCase(100, 80, 0, ExpectedResult = UsageLevel.Warning)]
    [TestCase(100, 70, 10, ExpectedResult = UsageLevel.Warning)]
    [TestCase(100, 94, 0, ExpectedResult = UsageLevel.Warning)]
    [TestCase(100, 95, 0, ExpectedResult = UsageLevel.Critical)]
    [TestCase(100, 99, 0, ExpectedResult = UsageLevel.Critical)]
    [TestCase(100, 100, 0, ExpectedResult = UsageLevel.Exhausted)]
    [TestCase(100, 60, 40, ExpectedResult = UsageLevel.Exhausted)]
    [TestCase(300, 500, 0, ExpectedResult = UsageLevel.Exhausted)]
    [TestCase(3, 2, 0, ExpectedResult = UsageLevel.Ok)]
    [TestCase(30, 24, 0, ExpectedResult = UsageLevel.Warning)]
    [TestCase(30, 23, 0, ExpectedResult = UsageLevel.Ok)]
    [TestCase(1000, 950, 0, ExpectedResult = UsageLevel.Critical)]
    [TestCase(1000, 949, 0, ExpectedResult = UsageLevel.Warning)]
    [TestCase(1, 0, 0, ExpectedResult = UsageLevel.Ok)]
    [TestCase(1, 1, 0, ExpectedResult = UsageLevel.Exhausted)]
    [TestCase(-1, 0, 0, ExpectedResult = UsageLevel.Ok)]
    [TestCase(-1, long.MaxValue / 2, 5, ExpectedResult = UsageLevel.Ok)]
    [TestCase(0, 0, 0, ExpectedResult = UsageLevel.Exhausted)]
    [TestCase(0, 12, 0, ExpectedResult = UsageLevel.Exhausted)]
    public UsageLevel Level_FollowsTheThresholds(long limit, long used, long reserved) => LimitRules.Level(limit, used, reserved);

    [TestCase(100, 0, 0, 0.0)]
    [TestCase(100, 25, 0, 25.0)]
    [TestCase(300, 200, 25, 75.0)]
    [TestCase(3, 1, 0, 100.0 / 3)]
    [TestCase(300, 600, 0, 200.0)]
    [TestCase(-1, 12345, 10, 0.0)]
    [TestCase(0, 0, 0, 100.0)]
    public void PercentUsed_CountsUsedAndHeldAgainstTheLimit(long limit, long used, long reserved, double expected) =>
        Assert.That(LimitRules.PercentUsed(limit, used, reserved), Is.EqualTo(expected).Within(1e-9));

    [Test]
    public void Level_AgreesWithRemaining_ExhaustedExactlyWhenNothingIsLeft()
    {
        foreach (var limit in new long[] { 1, 3, 7, 30, 100, 300, 1000 })
        {
            for (var used = 0L; used <= limit + 2; used++)
            {
                var exhausted = LimitRules.Level(limit, used, 0) == UsageLevel.Exhausted;
                Assert.That(exhausted, Is.EqualTo(LimitRules.Remaining(limit, used, 0) == 0), $"limit {limit}, used {used}");
            }
        }
    }

    [Test]
    public void LimitStatus_CarriesPercentAndLevel()
    {
        var period = new Metering.Core.Periods.Period(NodaTime.Instant.FromUtc(2026, 11, 1, 0, 0), NodaTime.Instant.FromUtc(2026, 12, 1, 0, 0));
        var status = LimitRules.Evaluate("minutes_per_month", 300, 250, 20, 1, period);

        Assert.Multiple(() =>
        {
            Assert.That(status.PercentUsed, Is.EqualTo(90.0).Within(1e-9));
            Assert.That(status.Level, Is.EqualTo(UsageLevel.Warning));
        });
    }
}
