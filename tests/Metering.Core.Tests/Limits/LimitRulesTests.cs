using Metering.Core.Limits;
using NodaTime;
using Period = Metering.Core.Periods.Period;

namespace Metering.Core.Tests.Limits;

public sealed class LimitRulesTests
{
    [TestCase(300, 295, 0, 10, ExpectedResult = Decision.LimitExceeded)]
    [TestCase(300, 290, 0, 10, ExpectedResult = Decision.Allowed)]
    [TestCase(300, 280, 10, 10, ExpectedResult = Decision.Allowed)]
    [TestCase(300, 280, 11, 10, ExpectedResult = Decision.LimitExceeded)]
    [TestCase(3, 0, 3, 1, ExpectedResult = Decision.LimitExceeded)]
    [TestCase(3, 3, 0, 1, ExpectedResult = Decision.LimitExceeded)]
    [TestCase(3, 2, 0, 1, ExpectedResult = Decision.Allowed)]
    [TestCase(-1, 1_000_000, 5_000, 999, ExpectedResult = Decision.Allowed)]
    [TestCase(0, 0, 0, 1, ExpectedResult = Decision.NotInPlan)]
    [TestCase(0, 7, 0, 1, ExpectedResult = Decision.NotInPlan)]
    public Decision Decide_ReturnsTheVerdictForTheAmount(long limit, long used, long reserved, long amount) =>
        LimitRules.Decide(limit, used, reserved, amount);

    [TestCase(300, 295, 0, ExpectedResult = 5)]
    [TestCase(300, 200, 50, ExpectedResult = 50)]
    [TestCase(300, 500, 0, ExpectedResult = 0)]
    [TestCase(300, 250, 100, ExpectedResult = 0)]
    [TestCase(-1, 12345, 10, ExpectedResult = -1)]
    [TestCase(0, 0, 0, ExpectedResult = 0)]
    public long Remaining_IsNeverNegativeAndMinusOneWhenUnlimited(long limit, long used, long reserved) =>
        LimitRules.Remaining(limit, used, reserved);

    [Test]
    public void Fits_ExactlyAtTheLimit_Fits()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LimitRules.Fits(limit: 10, used: 7, reserved: 2, amount: 1), Is.True);
            Assert.That(LimitRules.Fits(limit: 10, used: 7, reserved: 2, amount: 2), Is.False);
        });
    }

    [Test]
    public void Evaluate_CarriesEveryFieldOfTheStatus()
    {
        var period = new Period(Instant.FromUtc(2026, 11, 1, 0, 0), Instant.FromUtc(2026, 12, 1, 0, 0));

        var status = LimitRules.Evaluate("minutes_per_month", limit: 300, used: 295, reserved: 0, amount: 10, period);

        Assert.That(status, Is.EqualTo(new LimitStatus("minutes_per_month", 300, 295, 0, 5, Decision.LimitExceeded, period)));
    }

    [Test]
    public void WithHold_CountsTheHoldButKeepsTheVerdict()
    {
        var period = new Period(Instant.FromUtc(2026, 11, 1, 0, 0), Instant.FromUtc(2026, 12, 1, 0, 0));
        var before = LimitRules.Evaluate("interviews_per_day", limit: 3, used: 1, reserved: 0, amount: 2, period);

        var after = LimitRules.WithHold(before, 2);

        Assert.That(after, Is.EqualTo(new LimitStatus("interviews_per_day", 3, 1, 2, 0, Decision.Allowed, period)));
    }

    [Test]
    public void WithHold_OnUnlimited_KeepsRemainingUnlimited()
    {
        var period = new Period(Instant.FromUtc(2026, 11, 1, 0, 0), Instant.FromUtc(2026, 12, 1, 0, 0));

        var after = LimitRules.WithHold(LimitRules.Evaluate("minutes_per_month", -1, 10, 0, 5, period), 5);

        Assert.Multiple(() =>
        {
            Assert.That(after.Reserved, Is.EqualTo(5));
            Assert.That(after.Remaining, Is.EqualTo(-1));
        });
    }
}
