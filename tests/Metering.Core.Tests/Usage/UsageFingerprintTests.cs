using Metering.Core.Usage;
using NodaTime;

namespace Metering.Core.Tests.Usage;

public sealed class UsageFingerprintTests
{
    private static TrackUsageCommand Command(
        IReadOnlyList<UsageRequest>? usage = null,
        Instant? occurredAt = null,
        string? reservationId = null,
        bool enforce = false,
        IReadOnlyDictionary<string, string>? attributes = null) =>
        new("user-1", "key-1", usage ?? [new("minutes_per_month", 23), new("interviews_per_day", 1)], occurredAt, reservationId, enforce, attributes ?? new Dictionary<string, string>(), "test");

    [Test]
    public void Compute_SamePayloadInAnotherOrder_IsTheSame()
    {
        var a = Command(usage: [new("minutes_per_month", 23), new("interviews_per_day", 1)], attributes: new Dictionary<string, string> { ["a"] = "1", ["b"] = "2" });
        var b = Command(usage: [new("interviews_per_day", 1), new("minutes_per_month", 23)], attributes: new Dictionary<string, string> { ["b"] = "2", ["a"] = "1" });

        Assert.That(UsageFingerprint.Compute(a), Is.EqualTo(UsageFingerprint.Compute(b)));
    }

    [Test]
    public void Compute_IsAHexSha256()
    {
        Assert.That(UsageFingerprint.Compute(Command()), Does.Match("^[0-9a-f]{64}$"));
    }

    public static IEnumerable<TestCaseData> Changes()
    {
        yield return new TestCaseData(Command(usage: [new("minutes_per_month", 24), new("interviews_per_day", 1)])).SetName("Compute_DifferentAmount_Differs");
        yield return new TestCaseData(Command(usage: [new("minutes_per_month", 23)])).SetName("Compute_MissingUsageType_Differs");
        yield return new TestCaseData(Command(occurredAt: Instant.FromUtc(2026, 11, 1, 0, 0))).SetName("Compute_OccurredAtSet_Differs");
        yield return new TestCaseData(Command(reservationId: "rsv_1")).SetName("Compute_ReservationId_Differs");
        yield return new TestCaseData(Command(enforce: true)).SetName("Compute_Enforce_Differs");
        yield return new TestCaseData(Command(attributes: new Dictionary<string, string> { ["session"] = "1" })).SetName("Compute_Attribute_Differs");
    }

    [TestCaseSource(nameof(Changes))]
    public void Compute_ChangedPayload_Differs(TrackUsageCommand changed)
    {
        Assert.That(UsageFingerprint.Compute(changed), Is.Not.EqualTo(UsageFingerprint.Compute(Command())));
    }

    [Test]
    public void Compute_AttributeKeyAndValueBoundaries_AreUnambiguous()
    {
        var a = Command(attributes: new Dictionary<string, string> { ["ab"] = "c" });
        var b = Command(attributes: new Dictionary<string, string> { ["a"] = "bc" });

        Assert.That(UsageFingerprint.Compute(a), Is.Not.EqualTo(UsageFingerprint.Compute(b)));
    }

    [Test]
    public void Compute_AValueThatImitatesAnotherAttribute_Differs()
    {
        var forged = Command(attributes: new Dictionary<string, string> { ["a"] = "x\nattribute\t1:b\t1:y" });
        var real = Command(attributes: new Dictionary<string, string> { ["a"] = "x", ["b"] = "y" });

        Assert.That(UsageFingerprint.Compute(forged), Is.Not.EqualTo(UsageFingerprint.Compute(real)));
    }
}

public sealed class CorrectionFingerprintTests
{
    [Test]
    public void Compute_SameCorrection_SameFingerprint() =>
        Assert.That(
            UsageFingerprint.Compute(UsageEventKind.Adjustment, "minutes_per_month", -10, "refund", null),
            Is.EqualTo(UsageFingerprint.Compute(UsageEventKind.Adjustment, "minutes_per_month", -10, "refund", null)));

    [Test]
    public void Compute_AnyFieldDiffers_FingerprintDiffers()
    {
        var baseline = UsageFingerprint.Compute(UsageEventKind.Adjustment, "minutes_per_month", -10, "refund", null);
        string[] variants =
        [
            UsageFingerprint.Compute(UsageEventKind.Reset, "minutes_per_month", -10, "refund", null),
            UsageFingerprint.Compute(UsageEventKind.Adjustment, "interviews_per_day", -10, "refund", null),
            UsageFingerprint.Compute(UsageEventKind.Adjustment, "minutes_per_month", 10, "refund", null),
            UsageFingerprint.Compute(UsageEventKind.Adjustment, "minutes_per_month", -10, "refund ", null),
            UsageFingerprint.Compute(UsageEventKind.Adjustment, "minutes_per_month", -10, "refund", NodaTime.Instant.FromUnixTimeSeconds(0)),
        ];

        Assert.That(variants, Has.None.EqualTo(baseline));
    }
}
