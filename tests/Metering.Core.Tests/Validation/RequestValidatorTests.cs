using Metering.Core.Errors;
using Metering.Core.Usage;
using Metering.Core.Validation;
using NodaTime;

namespace Metering.Core.Tests.Validation;

public sealed class RequestValidatorTests
{
    private static readonly Instant Now = Instant.FromUtc(2026, 11, 18, 12, 0);

    private static RequestValidator Validator() => new(TestCatalog.Create());

    private static IReadOnlyList<FieldViolation> Violations(Action<RequestValidator> validate)
    {
        var validator = Validator();
        validate(validator);
        try
        {
            validator.ThrowIfInvalid();
            return [];
        }
        catch (InvalidRequestException ex)
        {
            return ex.Violations;
        }
    }

    [TestCase("user-1")]
    [TestCase("0b7c2a40-7a3e-4a52-9d1f-2f0c7b0c1e11")]
    [TestCase("alice@example.com")]
    [TestCase("tenant:42/user=7+x")]
    public void SubjectId_Valid_HasNoViolation(string subjectId) =>
        Assert.That(Violations(v => v.SubjectId("subject_id", subjectId)), Is.Empty);

    [TestCase("", "is required")]
    [TestCase("a b", "may contain only")]
    [TestCase("{user}", "may contain only")]
    [TestCase("user\n", "may contain only")]
    [TestCase("ü", "may contain only")]
    public void SubjectId_Invalid_IsNamed(string subjectId, string description)
    {
        var violation = Violations(v => v.SubjectId("subject_id", subjectId)).Single();

        Assert.Multiple(() =>
        {
            Assert.That(violation.Field, Is.EqualTo("subject_id"));
            Assert.That(violation.Description, Does.Contain(description));
        });
    }

    [Test]
    public void SubjectId_LengthLimit_Is128()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Violations(v => v.SubjectId("subject_id", new string('a', 128))), Is.Empty);
            Assert.That(Violations(v => v.SubjectId("subject_id", new string('a', 129))).Single().Description, Does.Contain("128"));
        });
    }

    [Test]
    public void Token_LengthLimitAndWhiteSpace()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Violations(v => v.Token("idempotency_key", new string('k', 256), 256)), Is.Empty);
            Assert.That(Violations(v => v.Token("idempotency_key", new string('k', 257), 256)).Single().Field, Is.EqualTo("idempotency_key"));
            Assert.That(Violations(v => v.Token("idempotency_key", "a b", 256)).Single().Description, Does.Contain("white space"));
            Assert.That(Violations(v => v.Token("reservation_id", "", 64, required: false)), Is.Empty);
            Assert.That(Violations(v => v.Token("reservation_id", "", 64)).Single().Description, Is.EqualTo("is required"));
        });
    }

    [Test]
    public void Usage_EveryBadEntry_IsNamedByIndex()
    {
        UsageRequest[] usage =
        [
            new("minutes_per_month", 0),
            new("tokens", 5),
            new("interviews_per_day", RequestValidator.MaxAmount + 1),
            new("minutes_per_month", 5),
        ];

        var fields = Violations(v => v.Usage("usage", usage)).Select(x => x.Field);

        Assert.That(fields, Is.EqualTo(new[] { "usage[0].amount", "usage[1].usage_type", "usage[2].amount", "usage[3].usage_type" }));
    }

    [Test]
    public void Usage_EmptyOrTooMany_IsNamed()
    {
        var many = Enumerable.Range(0, RequestValidator.MaxUsageEntries + 1).Select(_ => new UsageRequest("minutes_per_month", 1)).ToList();

        Assert.Multiple(() =>
        {
            Assert.That(Violations(v => v.Usage("usage", [])).Single().Field, Is.EqualTo("usage"));
            Assert.That(Violations(v => v.Usage("usage", many)).Single().Description, Does.Contain("at most 16"));
            Assert.That(Violations(v => v.Usage("usage", [new("minutes_per_month", RequestValidator.MaxAmount)])), Is.Empty);
        });
    }

    [Test]
    public void OccurredAt_Window_Is35DaysBackTo5MinutesAhead()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Violations(v => v.OccurredAt("occurred_at", Now - Duration.FromDays(35), Now)), Is.Empty);
            Assert.That(Violations(v => v.OccurredAt("occurred_at", Now - Duration.FromDays(35) - Duration.Epsilon, Now)), Has.Count.EqualTo(1));
            Assert.That(Violations(v => v.OccurredAt("occurred_at", Now + Duration.FromMinutes(5), Now)), Is.Empty);
            Assert.That(Violations(v => v.OccurredAt("occurred_at", Now + Duration.FromMinutes(5) + Duration.Epsilon, Now)), Has.Count.EqualTo(1));
            Assert.That(Violations(v => v.OccurredAt("occurred_at", null, Now)), Is.Empty);
        });
    }

    [TestCase("session", "s-1", true)]
    [TestCase("client.version_2-b", "1.2.3 (beta)", true)]
    [TestCase("bad key", "v", false)]
    [TestCase("k{x}", "v", false)]
    [TestCase("ключ", "v", false)]
    [TestCase("", "v", false)]
    [TestCase("k", "nul\u0000inside", false)]
    [TestCase("k", "line\nbreak", false)]
    [TestCase("k", "emoji \ud83d\ude00 is fine", true)]
    public void Attributes_KeysAreAsciiNamesAndValuesHaveNoControlCharacters(string key, string value, bool valid)
    {
        var violations = Violations(v => v.Attributes("attributes", new Dictionary<string, string> { [key] = value }));

        Assert.That(violations, valid ? Is.Empty : Has.Count.EqualTo(1));
    }

    [Test]
    public void Attributes_ValueWithALoneSurrogate_IsRefused()
    {
        // Built at run time: an attribute argument cannot carry a lone surrogate (it is stored as UTF-8).
        var value = $"lone {(char)0xD800} surrogate";

        Assert.That(Violations(v => v.Attributes("attributes", new Dictionary<string, string> { ["k"] = value })), Has.Count.EqualTo(1));
    }

    [Test]
    public void MaxPeriodTotal_StaysExactInDoubles()
    {
        Assert.Multiple(() =>
        {
            Assert.That(RequestValidator.MaxPeriodTotal * 2, Is.LessThan(1L << 53), "a rebuilt total sums at most two old periods");
            Assert.That((long)(double)(RequestValidator.MaxPeriodTotal + RequestValidator.MaxAmount), Is.EqualTo(RequestValidator.MaxPeriodTotal + RequestValidator.MaxAmount));
        });
    }

    [Test]
    public void ReservationTtl_MustBePositiveAndAtMost24Hours()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Violations(v => v.ReservationTtl("reservation_ttl", null)), Is.Empty);
            Assert.That(Violations(v => v.ReservationTtl("reservation_ttl", Duration.FromHours(24))), Is.Empty);
            Assert.That(Violations(v => v.ReservationTtl("reservation_ttl", Duration.FromHours(24) + Duration.Epsilon)), Has.Count.EqualTo(1));
            Assert.That(Violations(v => v.ReservationTtl("reservation_ttl", Duration.Zero)), Has.Count.EqualTo(1));
            Assert.That(Violations(v => v.ReservationTtl("reservation_ttl", Duration.FromSeconds(-1))), Has.Count.EqualTo(1));
        });
    }

    [TestCase(0, false)]
    [TestCase(1, true)]
    [TestCase(31, true)]
    [TestCase(32, false)]
    public void BillingAnchorDay_Range(int day, bool valid) =>
        Assert.That(Violations(v => v.BillingAnchorDay("billing_anchor_day", day)), valid ? Is.Empty : Has.Count.EqualTo(1));

    [TestCase("UTC", true)]
    [TestCase("Europe/Berlin", true)]
    [TestCase("europe/berlin", false)]
    [TestCase("Mars/Olympus_Mons", false)]
    public void TimeZone_MustBeAnIanaId(string zone, bool valid) =>
        Assert.That(Violations(v => v.TimeZone("time_zone", zone)), valid ? Is.Empty : Has.Count.EqualTo(1));

    [Test]
    public void PlanId_UnknownOrEmpty_ListsTheKnownPlans()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Violations(v => v.PlanId("plan_id", "gold")).Single().Description, Does.Contain("free, starter, pro, premium"));
            Assert.That(Violations(v => v.PlanId("plan_id", "")).Single().Description, Is.EqualTo("is required"));
            Assert.That(Violations(v => v.PlanId("plan_id", "pro")), Is.Empty);
        });
    }

    [Test]
    public void Attributes_CountAndSizes_AreBounded()
    {
        var many = Enumerable.Range(0, 17).ToDictionary(i => $"k{i}", _ => "v");

        Assert.Multiple(() =>
        {
            Assert.That(Violations(v => v.Attributes("attributes", many)).Single().Field, Is.EqualTo("attributes"));
            Assert.That(Violations(v => v.Attributes("attributes", new Dictionary<string, string> { ["k"] = new string('v', 257) })).Single().Field, Is.EqualTo("attributes[k]"));
            Assert.That(Violations(v => v.Attributes("attributes", new Dictionary<string, string> { [""] = "v" })), Has.Count.EqualTo(1));
            Assert.That(Violations(v => v.Attributes("attributes", new Dictionary<string, string> { ["session"] = "abc" })), Is.Empty);
        });
    }

    [Test]
    public void ThrowIfInvalid_ReportsEveryViolationAtOnce()
    {
        var validator = Validator()
            .SubjectId("subject_id", "")
            .Token("idempotency_key", "", 256)
            .Usage("usage", [new("minutes_per_month", -1)]);

        var exception = Assert.Throws<InvalidRequestException>(validator.ThrowIfInvalid);

        Assert.That(exception!.Violations.Select(v => v.Field), Is.EqualTo(new[] { "subject_id", "idempotency_key", "usage[0].amount" }));
    }
}
