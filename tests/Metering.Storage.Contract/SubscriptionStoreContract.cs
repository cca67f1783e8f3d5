using Metering.Core.Errors;
using Metering.Core.History;
using Metering.Core.Subscriptions;

namespace Metering.Storage.Contract;

/// <summary>
/// The contract of <see cref="Core.Ports.ISubscriptionStore"/> and the subscription audit of
/// <see cref="Core.Ports.IHistoryStore"/>.
/// </summary>
[TestFixtureSource(typeof(StorageBackends), nameof(StorageBackends.All))]
public sealed class SubscriptionStoreContract(StorageBackend backend) : ContractFixture(backend)
{
    [Test]
    public async Task Subscriptions_first_read_enrolls_on_the_default_plan_with_the_default_calendar()
    {
        var subject = NewId("subject");

        var first = await Ports.Subscriptions.GetOrEnrollAsync(subject, Plan, Now(), Token);
        var second = await Ports.Subscriptions.GetOrEnrollAsync(subject, "other-default", Now(), Token);

        Assert.Multiple(() =>
        {
            Assert.That(first.Subscription, Has.Property(nameof(Subscription.PlanId)).EqualTo(Plan)
                .And.Property(nameof(Subscription.Calendar)).EqualTo(DefaultCalendar)
                .And.Property(nameof(Subscription.Version)).EqualTo(1));
            Assert.That(second.Subscription, Is.EqualTo(first.Subscription), "enrolled once");
            Assert.That(first.Enrolled, Is.True, "the first read enrolled the subject");
            Assert.That(second.Enrolled, Is.False, "the second read found it");
        });
    }

    [Test]
    public async Task Subscriptions_first_read_of_a_subject_created_by_a_save_does_not_enroll()
    {
        var subject = NewId("subject");
        var change = await Ports.Subscriptions.SaveAsync(subject, Plan, DefaultCalendar, Whole(Now()), Token);

        var read = await Ports.Subscriptions.GetOrEnrollAsync(subject, Plan, Now(), Token);

        Assert.Multiple(() =>
        {
            Assert.That(read.Enrolled, Is.False, "the subject may have events already: only an enrolment says it has none");
            Assert.That(read.Subscription, Is.EqualTo(change.Subscription));
        });
    }

    [Test]
    public async Task Subscriptions_concurrent_first_reads_enroll_once()
    {
        var subject = NewId("subject");

        var all = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => Ports.Subscriptions.GetOrEnrollAsync(subject, Plan, Now(), Token)));
        var changes = await Ports.History.ListSubscriptionChangesAsync(subject, 100, Token);

        Assert.Multiple(() =>
        {
            Assert.That(all.Select(s => s.Subscription.Version).Distinct(), Is.EqualTo(new[] { 1L }));
            Assert.That(all.Count(s => s.Enrolled), Is.EqualTo(1), "exactly one of the concurrent reads says it enrolled the subject");
            Assert.That(changes, Has.Count.EqualTo(1));
        });
    }

    [Test]
    public async Task Subscriptions_save_stores_a_higher_version()
    {
        var subject = await NewSubjectAsync();
        var calendar = new BillingCalendar("Europe/Berlin", 15);

        var change = await Ports.Subscriptions.SaveAsync(subject, Plan, calendar, Whole(Now()), Token);
        var read = (await Ports.Subscriptions.GetOrEnrollAsync(subject, Plan, Now(), Token)).Subscription;

        Assert.Multiple(() =>
        {
            Assert.That(change.Subscription.Version, Is.EqualTo(2));
            Assert.That(change.Subscription.Calendar, Is.EqualTo(calendar));
            Assert.That(read, Is.EqualTo(change.Subscription));
        });
    }

    [Test]
    public async Task Subscriptions_save_of_a_new_subject_creates_it()
    {
        var subject = NewId("subject");

        var change = await Ports.Subscriptions.SaveAsync(subject, Plan, new BillingCalendar("UTC", 3), Whole(Now()), Token);

        Assert.That((await Ports.Subscriptions.GetOrEnrollAsync(subject, "ignored", Now(), Token)).Subscription, Is.EqualTo(change.Subscription));
    }

    [Test]
    public async Task Subscriptions_save_without_a_change_keeps_the_version_but_still_fences()
    {
        var subject = await NewSubjectAsync();
        var first = await Ports.Subscriptions.SaveAsync(subject, Plan, DefaultCalendar with { BillingAnchorDay = 5 }, Now(), Token);

        var again = await Ports.Subscriptions.SaveAsync(subject, Plan, DefaultCalendar with { BillingAnchorDay = 5 }, Now(), Token);

        Assert.Multiple(() =>
        {
            Assert.That(again.Subscription.Version, Is.EqualTo(first.Subscription.Version));
            Assert.That(again.CounterFence, Is.GreaterThan(first.CounterFence), "a retry after a lost fence fences again");
        });
    }

    [Test]
    public async Task Subscriptions_fence_is_above_every_total_before_it_and_below_every_total_after_it()
    {
        var subject = await NewSubjectAsync();
        var before = (await RecordAsync(subject, Minutes, 5)).Changes.Values.Single();

        var change = await Ports.Subscriptions.SaveAsync(subject, Plan, DefaultCalendar, Now(), Token);
        var after = (await RecordAsync(subject, Minutes, 5)).Changes.Values.Single();

        Assert.Multiple(() =>
        {
            Assert.That(change.CounterFence, Is.GreaterThan(before.Version));
            Assert.That(after.Version, Is.GreaterThan(change.CounterFence));
        });
    }

    [Test]
    public async Task Subscriptions_save_on_an_unknown_plan_is_an_invalid_request_naming_the_plan()
    {
        var subject = await NewSubjectAsync();

        var error = Assert.ThrowsAsync<InvalidRequestException>(() =>
            Ports.Subscriptions.SaveAsync(subject, "no-such-plan", DefaultCalendar, Now(), Token));

        Assert.Multiple(async () =>
        {
            Assert.That(error!.Violations.Select(v => v.Field), Is.EqualTo(new[] { "plan_id" }));
            Assert.That((await Ports.Subscriptions.GetOrEnrollAsync(subject, Plan, Now(), Token)).Subscription.Version, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task Subscriptions_audit_records_enrolment_and_every_change_newest_first()
    {
        var subject = NewId("subject");
        await Ports.Subscriptions.GetOrEnrollAsync(subject, Plan, Now(), Token);
        await Ports.Subscriptions.SaveAsync(subject, Plan, new BillingCalendar("Asia/Tokyo", 1), Now(), Token);
        await Ports.Subscriptions.SaveAsync(subject, Plan, new BillingCalendar("Asia/Tokyo", 20), Now(), Token);
        await Ports.Subscriptions.SaveAsync(subject, Plan, new BillingCalendar("Asia/Tokyo", 20), Now(), Token);

        var changes = await Ports.History.ListSubscriptionChangesAsync(subject, 10, Token);
        var limited = await Ports.History.ListSubscriptionChangesAsync(subject, 1, Token);

        Assert.Multiple(() =>
        {
            Assert.That(changes.Select(c => (c.Version, c.Kind)), Is.EqualTo(new[]
            {
                (3L, SubscriptionChangeKind.Changed), (2L, SubscriptionChangeKind.Changed), (1L, SubscriptionChangeKind.Enrolled),
            }), "an unchanged save records nothing");
            Assert.That(changes[0], Has.Property(nameof(SubscriptionChangeRecord.BillingAnchorDay)).EqualTo(20)
                .And.Property(nameof(SubscriptionChangeRecord.PreviousBillingAnchorDay)).EqualTo(1)
                .And.Property(nameof(SubscriptionChangeRecord.PreviousTimeZone)).EqualTo("Asia/Tokyo"));
            Assert.That(changes[2].PreviousPlanId, Is.Null);
            Assert.That(limited.Single().Version, Is.EqualTo(3));
        });
    }
}
