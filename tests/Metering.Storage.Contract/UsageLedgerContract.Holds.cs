using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using NodaTime;

namespace Metering.Storage.Contract;

/// <summary>Holds: all or nothing under the subject's lock, against totals and live holds; released, settled or expired once.</summary>
public sealed partial class UsageLedgerContract
{
    /// <summary>Short enough to wait for, long enough that a busy machine places and reads the hold before it ends.</summary>
    private static readonly Duration ShortTtl = Duration.FromSeconds(2);

    [Test]
    public async Task Ledger_hold_counts_against_totals_and_live_holds()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 30);
        await HoldAsync(Hold(subject, Minutes, 20, 100));

        var decided = await HoldAsync(Hold(subject, Minutes, 50, 100));
        var refused = await HoldAsync(Hold(subject, Minutes, 1, 100));

        Assert.Multiple(async () =>
        {
            Assert.That(decided.Hold, Is.Not.Null, "30 used + 20 held + 50 = 100 fits");
            Assert.That(decided.Readings, Is.EqualTo(new[] { new CounterReading(30, 20) }), "readings without the new hold");
            Assert.That(refused.Hold, Is.Null);
            Assert.That(refused.Readings, Is.EqualTo(new[] { new CounterReading(30, 70) }));
            Assert.That((await TotalAsync(Key(subject))).Held, Is.EqualTo(70));
        });
    }

    [Test]
    public async Task Ledger_hold_is_all_or_nothing()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Calls, 10);

        var decided = await HoldAsync(Hold(subject, [(Minutes, 10, 100), (Calls, 1, 10)]));

        Assert.Multiple(async () =>
        {
            Assert.That(decided.Hold, Is.Null);
            Assert.That(decided.Changes.Values, Is.Empty);
            Assert.That((await TotalAsync(Key(subject, Minutes))).Held, Is.Zero, "the minutes that fit are not held either");
            Assert.That(await Ports.Ledger.ListLiveHoldsAsync(Key(subject, Minutes), Token), Is.Empty);
        });
    }

    [Test]
    public async Task Ledger_hold_returns_the_changed_counters_and_lists_as_live()
    {
        var subject = await NewSubjectAsync();

        var decided = await HoldAsync(Hold(subject, [(Minutes, 15, 100), (Calls, 2, 10)]));
        var live = await Ports.Ledger.ListLiveHoldsAsync(Key(subject, Minutes), Token);
        var found = await Ports.Ledger.FindHoldAsync(subject, decided.Hold!.ReservationId, Token);

        Assert.Multiple(() =>
        {
            Assert.That(decided.Changes.Values.Select(v => (v.Key.UsageType, v.Held)), Is.EquivalentTo(new[] { (Minutes, 15L), (Calls, 2L) }));
            Assert.That(live.Select(h => (h.ReservationId, h.Amount)), Is.EqualTo(new[] { (decided.Hold.ReservationId, 15L) }));
            Assert.That(found!.ExpiresAt, Is.EqualTo(decided.Hold.ExpiresAt));
            Assert.That(decided.Hold.ExpiresAt - Now(), Is.InRange(Duration.FromMinutes(9), Duration.FromMinutes(11)), "ten minutes on the ledger's clock");
        });
    }

    [Test]
    public async Task Ledger_find_hold_of_an_unknown_reservation_is_null()
    {
        var subject = await NewSubjectAsync();

        Assert.That(await Ports.Ledger.FindHoldAsync(subject, "no-such-hold", Token), Is.Null);
    }

    [Test]
    public async Task Ledger_parallel_holds_against_a_limit_grant_exactly_the_limit()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Calls, 7);

        var decisions = await Task.WhenAll(Enumerable.Range(0, 30).Select(_ => Ports.Ledger.HoldAsync(Hold(subject, Calls, 1, 10), Token)));

        Assert.Multiple(async () =>
        {
            Assert.That(decisions.Count(d => d is HoldOutcome.Decided { Hold: not null }), Is.EqualTo(3));
            Assert.That((await TotalAsync(Key(subject, Calls))).Held, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task Ledger_hold_retried_with_its_request_id_returns_the_same_hold_and_holds_once()
    {
        var subject = await NewSubjectAsync();

        var decisions = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ =>
            Ports.Ledger.HoldAsync(Hold(subject, Minutes, 40, 100, requestId: "session-1"), Token)));
        var placed = decisions.Cast<HoldOutcome.Decided>().ToList();

        Assert.Multiple(async () =>
        {
            Assert.That(placed.Select(d => d.Hold!.ReservationId).Distinct().Count(), Is.EqualTo(1), "one hold for every retry");
            Assert.That(placed.Count(d => d.Hold!.Retried), Is.EqualTo(7));
            Assert.That(placed.All(d => d.Readings.Single() == new CounterReading(0, 0)), Is.True, "every answer as the first one was");
            Assert.That((await TotalAsync(Key(subject))).Held, Is.EqualTo(40));
        });
    }

    [Test]
    public async Task Ledger_request_id_reused_for_other_amounts_is_a_conflict_and_holds_nothing()
    {
        var subject = await NewSubjectAsync();
        await HoldAsync(Hold(subject, Minutes, 40, 100, requestId: "session-1"));

        var other = await Ports.Ledger.HoldAsync(Hold(subject, Minutes, 30, 100, requestId: "session-1"), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(other, Is.TypeOf<HoldOutcome.RequestIdConflict>());
            Assert.That((await TotalAsync(Key(subject))).Held, Is.EqualTo(40));
        });
    }

    [Test]
    public async Task Ledger_holds_past_the_live_holds_bound_are_refused_until_one_ends()
    {
        var subject = await NewSubjectAsync();
        var held = new List<PlacedHold>();
        for (var i = 0; i < 3; i++)
        {
            held.Add((await HoldAsync(Hold(subject, Minutes, 1, 100, maxLiveHolds: 3))).Hold!);
        }

        var fourth = await Ports.Ledger.HoldAsync(Hold(subject, Minutes, 1, 100, maxLiveHolds: 3), Token);
        await Ports.Ledger.ReleaseHoldAsync(subject, held[0].ReservationId, Token);
        var afterRelease = await HoldAsync(Hold(subject, Minutes, 1, 100, maxLiveHolds: 3));

        Assert.Multiple(async () =>
        {
            Assert.That(fourth, Is.EqualTo(new HoldOutcome.TooManyHolds(3)));
            Assert.That(afterRelease.Hold, Is.Not.Null);
            Assert.That((await TotalAsync(Key(subject))).Held, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task Ledger_hold_under_a_calendar_that_changed_is_refused()
    {
        var subject = await NewSubjectAsync();
        await Ports.Subscriptions.SaveAsync(subject, Plan, new BillingCalendar("Europe/Paris", 1), Now(), Token);

        var outcome = await Ports.Ledger.HoldAsync(Hold(subject, Minutes, 1, 100), Token);

        Assert.That(outcome, Is.TypeOf<HoldOutcome.CalendarChanged>());
    }

    [Test]
    public async Task Ledger_hold_placed_before_a_calendar_change_keeps_counting_under_the_new_calendar()
    {
        var subject = await NewSubjectAsync();
        var tokyo = new BillingCalendar("Asia/Tokyo", 1);
        await HoldAsync(Hold(subject, Calls, 6, 10));
        await Ports.Subscriptions.SaveAsync(subject, Plan, tokyo, Now(), Token);

        var again = await HoldAsync(Hold(subject, [(Calls, 6, 10)], calendar: tokyo));

        Assert.Multiple(() =>
        {
            Assert.That(again.Hold, Is.Null, "6 held + 6 > 10 a day, whatever the day's bounds now are");
            Assert.That(again.Readings.Single().Reserved, Is.EqualTo(6));
        });
    }

    [Test]
    public async Task Ledger_release_gives_the_hold_back_once()
    {
        var subject = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(subject, Minutes, 30, 100))).Hold!;

        var first = await Ports.Ledger.ReleaseHoldAsync(subject, hold.ReservationId, Token);
        var second = await Ports.Ledger.ReleaseHoldAsync(subject, hold.ReservationId, Token);

        Assert.Multiple(async () =>
        {
            Assert.That(first!.Values.Single().Held, Is.Zero, "the changed counter, for the cache");
            Assert.That(second, Is.Null);
            Assert.That((await TotalAsync(Key(subject))).Held, Is.Zero);
            Assert.That(await Ports.Ledger.ListLiveHoldsAsync(Key(subject), Token), Is.Empty);
            Assert.That(await Ports.Ledger.FindHoldAsync(subject, hold.ReservationId, Token), Is.Not.Null, "found, live or not");
        });
    }

    [Test]
    public async Task Ledger_release_of_an_unknown_or_another_subjects_hold_releases_nothing()
    {
        var owner = await NewSubjectAsync();
        var other = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(owner, Minutes, 30, 100))).Hold!;

        var byOther = await Ports.Ledger.ReleaseHoldAsync(other, hold.ReservationId, Token);
        var unknown = await Ports.Ledger.ReleaseHoldAsync(owner, "no-such-hold", Token);

        Assert.Multiple(async () =>
        {
            Assert.That(byOther, Is.Null);
            Assert.That(unknown, Is.Null);
            Assert.That((await TotalAsync(Key(owner))).Held, Is.EqualTo(30));
        });
    }

    [TestCase(40, 10)]
    [TestCase(40, 70)]
    public async Task Ledger_settle_records_the_actual_amount_and_ends_the_hold(long held, long actual)
    {
        var subject = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(subject, Minutes, held, 100))).Hold!;

        var settled = await RecordAsync(Event(subject, "settle", [(Minutes, actual)], reservationId: hold.ReservationId));
        var again = await Ports.Ledger.RecordAsync(Event(subject, "settle", [(Minutes, actual)], reservationId: hold.ReservationId), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(settled.Changes.Values.Single(), Has.Property(nameof(CounterValue.Total)).EqualTo(actual).And.Property(nameof(CounterValue.Held)).Zero);
            Assert.That(again, Is.TypeOf<RecordOutcome.AlreadyRecorded>());
            Assert.That(await TotalAsync(Key(subject)), Has.Property(nameof(CounterValue.Total)).EqualTo(actual).And.Property(nameof(CounterValue.Held)).Zero);
            Assert.That(await Ports.Ledger.ReleaseHoldAsync(subject, hold.ReservationId, Token), Is.Null, "settled: nothing left to release");
        });
    }

    [Test]
    public async Task Ledger_settle_leaves_the_other_holds_alone()
    {
        var subject = await NewSubjectAsync();
        var first = (await HoldAsync(Hold(subject, Minutes, 10, 100))).Hold!;
        await HoldAsync(Hold(subject, Minutes, 25, 100));

        await RecordAsync(Event(subject, "settle", [(Minutes, 10)], reservationId: first.ReservationId));

        Assert.That(await TotalAsync(Key(subject)), Has.Property(nameof(CounterValue.Total)).EqualTo(10).And.Property(nameof(CounterValue.Held)).EqualTo(25));
    }

    [Test]
    public async Task Ledger_partial_settle_keeps_the_rest_held_until_the_final_settle()
    {
        var subject = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(subject, [(Minutes, 30, 100), (Calls, 1, 10)]))).Hold!;

        await RecordAsync(Event(subject, "part-1", [(Minutes, 10)], reservationId: hold.ReservationId, final: false));
        var midwayMinutes = await TotalAsync(Key(subject, Minutes));
        var midwayCalls = await TotalAsync(Key(subject, Calls));
        await RecordAsync(Event(subject, "part-2", [(Minutes, 12), (Calls, 1)], reservationId: hold.ReservationId));

        Assert.Multiple(async () =>
        {
            Assert.That(midwayMinutes, Has.Property(nameof(CounterValue.Total)).EqualTo(10).And.Property(nameof(CounterValue.Held)).EqualTo(20));
            Assert.That(midwayCalls.Held, Is.EqualTo(1), "the line not settled yet stays held");
            Assert.That(await TotalAsync(Key(subject, Minutes)), Has.Property(nameof(CounterValue.Total)).EqualTo(22).And.Property(nameof(CounterValue.Held)).Zero);
            Assert.That(await TotalAsync(Key(subject, Calls)), Has.Property(nameof(CounterValue.Total)).EqualTo(1).And.Property(nameof(CounterValue.Held)).Zero);
        });
    }

    [Test]
    public async Task Ledger_partial_settle_sent_again_lowers_the_hold_once()
    {
        var subject = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(subject, Minutes, 30, 100))).Hold!;
        var part = Event(subject, "part", [(Minutes, 10)], reservationId: hold.ReservationId, final: false);

        // Side by side (one transaction, or several) and then once more alone.
        var together = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Ports.Ledger.RecordAsync(part, Token)));
        var again = await Ports.Ledger.RecordAsync(part, Token);

        Assert.Multiple(async () =>
        {
            Assert.That(together.Count(o => o is RecordOutcome.Recorded), Is.EqualTo(1));
            Assert.That(together.Where(o => o is not RecordOutcome.Recorded), Has.All.TypeOf<RecordOutcome.AlreadyRecorded>());
            Assert.That(again, Is.TypeOf<RecordOutcome.AlreadyRecorded>());
            Assert.That(await TotalAsync(Key(subject)), Has.Property(nameof(CounterValue.Total)).EqualTo(10).And.Property(nameof(CounterValue.Held)).EqualTo(20));
            Assert.That((await Ports.Ledger.ListLiveHoldsAsync(Key(subject), Token)).Single().Amount, Is.EqualTo(20));
        });
    }

    [Test]
    public async Task Ledger_partial_settle_of_more_than_held_holds_nothing_below_zero()
    {
        var subject = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(subject, Minutes, 10, 100))).Hold!;

        await RecordAsync(Event(subject, "part", [(Minutes, 15)], reservationId: hold.ReservationId, final: false));

        Assert.Multiple(async () =>
        {
            Assert.That(await TotalAsync(Key(subject)), Has.Property(nameof(CounterValue.Total)).EqualTo(15).And.Property(nameof(CounterValue.Held)).Zero);
            Assert.That(await Ports.Ledger.ListLiveHoldsAsync(Key(subject), Token), Has.All.Property(nameof(HoldInfo.Amount)).Zero);
        });
    }

    [Test]
    public async Task Ledger_hold_stops_counting_when_its_time_is_up_on_the_ledgers_clock()
    {
        var subject = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(subject, Calls, 8, 10, ttl: ShortTtl))).Hold!;
        var whileLive = await HoldAsync(Hold(subject, Calls, 8, 10));
        Assert.That(whileLive.Hold, Is.Null, "while it lives, the hold counts");

        await Ports.LetTimePassAsync(ShortTtl + Duration.FromMilliseconds(500));
        var afterExpiry = await HoldAsync(Hold(subject, Calls, 8, 10));

        Assert.Multiple(async () =>
        {
            Assert.That(afterExpiry.Hold, Is.Not.Null, "an expired hold counts no more, even before it is swept");
            Assert.That(afterExpiry.Readings.Single().Reserved, Is.Zero);
            Assert.That(await Ports.Ledger.ReleaseHoldAsync(subject, hold.ReservationId, Token), Is.Null, "an expired hold cannot be released");
            Assert.That((await Ports.Ledger.ListLiveHoldsAsync(Key(subject, Calls), Token)).Select(h => h.ReservationId), Is.EqualTo(new[] { afterExpiry.Hold!.ReservationId }));
        });
    }

    [Test]
    public async Task Ledger_expire_holds_ends_every_hold_whose_time_is_up_and_refreshes_its_counters()
    {
        var subject = await NewSubjectAsync();
        await HoldAsync(Hold(subject, Minutes, 5, 100, ttl: ShortTtl));
        await HoldAsync(Hold(subject, Minutes, 7, 100, ttl: ShortTtl));
        await HoldAsync(Hold(subject, Minutes, 11, 100));
        var before = await TotalAsync(Key(subject));

        await Ports.LetTimePassAsync(ShortTtl + Duration.FromMilliseconds(500));
        var expired = await Ports.Ledger.ExpireHoldsAsync(1000, Token);
        var after = await TotalAsync(Key(subject));

        Assert.Multiple(() =>
        {
            Assert.That(before.Held, Is.EqualTo(23));
            Assert.That(expired, Is.GreaterThanOrEqualTo(2), "both short holds (other subjects' may end too)");
            Assert.That(after.Held, Is.EqualTo(11), "the long hold stays");
            Assert.That(after.Version, Is.GreaterThan(before.Version), "a newer value for the cache");
        });
    }

    [Test]
    public async Task Ledger_settle_of_an_expired_hold_records_the_usage_and_holds_nothing()
    {
        var subject = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(subject, Minutes, 30, 100, ttl: ShortTtl))).Hold!;
        await Ports.LetTimePassAsync(ShortTtl + Duration.FromMilliseconds(500));

        await RecordAsync(Event(subject, "late-settle", [(Minutes, 20)], reservationId: hold.ReservationId));

        Assert.That(await TotalAsync(Key(subject)), Has.Property(nameof(CounterValue.Total)).EqualTo(20).And.Property(nameof(CounterValue.Held)).Zero);
    }
}
