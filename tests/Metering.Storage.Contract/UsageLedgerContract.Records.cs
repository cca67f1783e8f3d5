using Metering.Core.Errors;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using Metering.Core.Validation;

namespace Metering.Storage.Contract;

/// <summary>
/// The contract of <see cref="Core.Ports.IUsageLedger"/>: events and totals here; holds, the outbox and expiry in the
/// other parts of this class.
/// </summary>
[TestFixtureSource(typeof(StorageBackends), nameof(StorageBackends.All))]
public sealed partial class UsageLedgerContract(StorageBackend backend) : ContractFixture(backend)
{
    [Test]
    public async Task Ledger_record_adds_every_line_to_its_period_total()
    {
        var subject = await NewSubjectAsync();

        var recorded = await RecordAsync(Event(subject, "k", [(Minutes, 17), (Calls, 2)]));

        Assert.Multiple(async () =>
        {
            Assert.That(recorded.Changes.Values.Single(v => v.Key == Key(subject, Minutes)).Total, Is.EqualTo(17));
            Assert.That(recorded.Changes.Values.Single(v => v.Key == Key(subject, Calls)).Total, Is.EqualTo(2));
            Assert.That((await TotalAsync(Key(subject, Minutes))).Total, Is.EqualTo(17));
            Assert.That((await TotalAsync(Key(subject, Calls))).Total, Is.EqualTo(2));
        });
    }

    [Test]
    public async Task Ledger_record_is_idempotent_by_key()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(Event(subject, "session-1", Minutes, 10));

        var again = await Ports.Ledger.RecordAsync(Event(subject, "session-1", Minutes, 10), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(again, Is.EqualTo(new RecordOutcome.AlreadyRecorded("fp-session-1")));
            Assert.That((await TotalAsync(Key(subject))).Total, Is.EqualTo(10), "counted once");
            Assert.That((await Ports.Ledger.InspectAsync(Key(subject), Token)).EventCount, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task Ledger_duplicate_key_with_another_payload_reports_the_recorded_fingerprint_and_changes_nothing()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(Event(subject, "k", [(Minutes, 10)], fingerprint: "first"));

        var other = await Ports.Ledger.RecordAsync(Event(subject, "k", [(Minutes, 11)], fingerprint: "second"), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(other, Is.EqualTo(new RecordOutcome.AlreadyRecorded("first")), "the caller tells a retry from a mismatch by it");
            Assert.That(await Ports.Ledger.FindFingerprintAsync(subject, "k", Token), Is.EqualTo("first"));
            Assert.That((await TotalAsync(Key(subject))).Total, Is.EqualTo(10));
        });
    }

    [Test]
    public async Task Ledger_fingerprint_of_an_unknown_key_is_null()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(Event(subject, "known", Minutes, 1));

        Assert.That(await Ports.Ledger.FindFingerprintAsync(subject, "unknown", Token), Is.Null);
    }

    [Test]
    public async Task Ledger_same_key_sent_concurrently_is_recorded_once()
    {
        var subject = await NewSubjectAsync();

        var outcomes = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ =>
            Ports.Ledger.RecordAsync(Event(subject, "session-42", [(Minutes, 17), (Calls, 1)]), Token)));

        Assert.Multiple(async () =>
        {
            Assert.That(outcomes.Count(o => o is RecordOutcome.Recorded), Is.EqualTo(1));
            Assert.That(outcomes.Count(o => o is RecordOutcome.AlreadyRecorded), Is.EqualTo(19));
            Assert.That((await TotalAsync(Key(subject, Minutes))).Total, Is.EqualTo(17));
            Assert.That((await TotalAsync(Key(subject, Calls))).Total, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task Ledger_idempotency_keys_are_per_subject()
    {
        var alice = await NewSubjectAsync();
        var bob = await NewSubjectAsync();

        await RecordAsync(Event(alice, "session-1", Minutes, 10));
        var forBob = await Ports.Ledger.RecordAsync(Event(bob, "session-1", Minutes, 10), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(forBob, Is.TypeOf<RecordOutcome.Recorded>());
            Assert.That((await TotalAsync(Key(bob))).Total, Is.EqualTo(10));
        });
    }

    [Test]
    public async Task Ledger_totals_and_versions_only_grow_with_every_record()
    {
        var subject = await NewSubjectAsync();
        var versions = new List<long> { (await TotalAsync(Key(subject))).Version };
        var totals = new List<long>();
        for (var i = 1; i <= 5; i++)
        {
            var value = (await RecordAsync(subject, Minutes, i)).Changes.Values.Single();
            versions.Add(value.Version);
            totals.Add(value.Total);
        }

        Assert.Multiple(() =>
        {
            Assert.That(versions, Is.Ordered.Ascending.And.Unique, "a newer value always has a higher version");
            Assert.That(totals, Is.EqualTo(new long[] { 1, 3, 6, 10, 15 }));
        });
    }

    [Test]
    public async Task Ledger_totals_of_an_unwritten_counter_are_zero_and_reading_them_changes_no_version()
    {
        var subject = await NewSubjectAsync();

        var first = await TotalAsync(Key(subject));
        var second = await TotalAsync(Key(subject));

        Assert.Multiple(() =>
        {
            Assert.That(first with { Version = 0 }, Is.EqualTo(new CounterValue(Key(subject), 0, 0, 0)));
            Assert.That(second.Version, Is.EqualTo(first.Version), "a read is not a change");
        });
    }

    [Test]
    public async Task Ledger_counters_of_other_periods_and_usage_types_are_separate()
    {
        var subject = await NewSubjectAsync();
        var lastMonth = Now().Minus(NodaTime.Duration.FromDays(40));

        await RecordAsync(Event(subject, "old", [(Minutes, 5)], occurredAt: lastMonth));
        await RecordAsync(Event(subject, "new", [(Minutes, 7)]));
        await RecordAsync(Event(subject, "calls", [(Calls, 3)]));

        Assert.Multiple(async () =>
        {
            Assert.That((await TotalAsync(Key(subject, Minutes, lastMonth))).Total, Is.EqualTo(5));
            Assert.That((await TotalAsync(Key(subject, Minutes))).Total, Is.EqualTo(7));
            Assert.That((await TotalAsync(Key(subject, Calls))).Total, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task Ledger_record_under_a_calendar_that_changed_is_refused_and_changes_nothing()
    {
        var subject = await NewSubjectAsync();
        await Ports.Subscriptions.SaveAsync(subject, Plan, new BillingCalendar("Asia/Tokyo", 15), Now(), Token);

        var stale = await Ports.Ledger.RecordAsync(Event(subject, "k", Minutes, 5), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(stale, Is.TypeOf<RecordOutcome.CalendarChanged>());
            Assert.That(await Ports.Ledger.FindFingerprintAsync(subject, "k", Token), Is.Null, "the key stays free for the retry");
            Assert.That((await Ports.Ledger.InspectAsync(Key(subject), Token)).EventCount, Is.Zero);
        });
    }

    [Test]
    public async Task Ledger_calendar_change_recounts_recent_usage_in_the_new_periods()
    {
        var subject = await NewSubjectAsync();
        var tokyo = new BillingCalendar("Asia/Tokyo", 1);
        await RecordAsync(subject, Minutes, 40);
        var before = await TotalAsync(Key(subject));

        var change = await Ports.Subscriptions.SaveAsync(subject, Plan, tokyo, Now(), Token);
        var after = await TotalAsync(Key(subject, calendar: tokyo));

        Assert.Multiple(() =>
        {
            Assert.That(change.CounterFence, Is.GreaterThan(before.Version));
            Assert.That(after.Version, Is.GreaterThan(change.CounterFence), "rebuilt after the fence, so a cache takes it over the fence");
            Assert.That(after.Total, Is.EqualTo(40), "the event counted again under the new calendar");
        });
    }

    [Test]
    public async Task Ledger_record_past_the_total_ceiling_is_refused_and_changes_nothing()
    {
        var subject = await NewSubjectAsync();
        var steps = RequestValidator.MaxPeriodTotal / RequestValidator.MaxAmount;
        await RecordAsync(Event(subject, "bulk", [(Minutes, RequestValidator.MaxPeriodTotal - 1)]));

        var exact = await Ports.Ledger.RecordAsync(Event(subject, "exact", Minutes, 1), Token);
        var past = await Ports.Ledger.RecordAsync(Event(subject, "past", Minutes, 1), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(steps, Is.GreaterThan(1), "the ceiling is far above one amount");
            Assert.That(exact, Is.TypeOf<RecordOutcome.Recorded>(), "up to the ceiling is exact");
            Assert.That(past, Is.EqualTo(new RecordOutcome.TotalCeilingReached(Minutes)));
            Assert.That((await TotalAsync(Key(subject))).Total, Is.EqualTo(RequestValidator.MaxPeriodTotal));
            Assert.That(await Ports.Ledger.FindFingerprintAsync(subject, "past", Token), Is.Null);
        });
    }

    [Test]
    public async Task Ledger_enforced_record_that_does_not_fit_is_refused_with_the_readings_and_changes_nothing()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 95);

        var refused = await Ports.Ledger.RecordAsync(Event(subject, "big", [(Minutes, 3), (Calls, 11)], enforcedLimits: [100, 10]), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(refused, Is.TypeOf<RecordOutcome.Refused>(), "all or nothing: the calls line does not fit");
            Assert.That(((RecordOutcome.Refused)refused).Readings, Is.EqualTo(new[] { new CounterReading(95, 0), new CounterReading(0, 0) }));
            Assert.That((await TotalAsync(Key(subject, Minutes))).Total, Is.EqualTo(95), "the minutes that fit were not recorded either");
            Assert.That(await Ports.Ledger.FindFingerprintAsync(subject, "big", Token), Is.Null);
        });
    }

    [Test]
    public async Task Ledger_enforced_record_that_fits_exactly_is_recorded()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 95);

        var outcome = await Ports.Ledger.RecordAsync(Event(subject, "last", [(Minutes, 5)], enforcedLimits: [100]), Token);

        Assert.That(outcome, Is.TypeOf<RecordOutcome.Recorded>());
    }

    [Test]
    public async Task Ledger_enforced_record_counts_the_live_holds_of_others()
    {
        var subject = await NewSubjectAsync();
        await HoldAsync(Hold(subject, Minutes, 60, 100));

        var refused = await Ports.Ledger.RecordAsync(Event(subject, "k", [(Minutes, 50)], enforcedLimits: [100]), Token);

        Assert.That(refused, Is.EqualTo(new RecordOutcome.Refused([new CounterReading(0, 60)])).Using<RecordOutcome>(SameReadings));
    }

    [Test]
    public async Task Ledger_enforced_settle_does_not_count_its_own_hold_against_itself()
    {
        var subject = await NewSubjectAsync();
        var hold = (await HoldAsync(Hold(subject, Minutes, 80, 100))).Hold!;

        var settled = await Ports.Ledger.RecordAsync(
            Event(subject, "settle", [(Minutes, 90)], reservationId: hold.ReservationId, enforcedLimits: [100]), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(settled, Is.TypeOf<RecordOutcome.Recorded>(), "90 fits once its own 80 are not counted");
            Assert.That(await TotalAsync(Key(subject)), Has.Property(nameof(CounterValue.Total)).EqualTo(90).And.Property(nameof(CounterValue.Held)).Zero);
        });
    }

    [Test]
    public async Task Ledger_enforced_records_in_parallel_never_pass_the_limit()
    {
        var subject = await NewSubjectAsync();

        var outcomes = await Task.WhenAll(Enumerable.Range(0, 30).Select(i =>
            Ports.Ledger.RecordAsync(Event(subject, $"e{i}", [(Calls, 1)], enforcedLimits: [10]), Token)));

        Assert.Multiple(async () =>
        {
            Assert.That(outcomes.Count(o => o is RecordOutcome.Recorded), Is.EqualTo(10));
            Assert.That(outcomes.Count(o => o is RecordOutcome.Refused), Is.EqualTo(20));
            Assert.That((await TotalAsync(Key(subject, Calls))).Total, Is.EqualTo(10));
        });
    }

    [Test]
    public async Task Ledger_enforced_retry_racing_its_original_is_a_duplicate_not_refused()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(Event(subject, "first", [(Calls, 9)]));

        var outcomes = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ =>
            Ports.Ledger.RecordAsync(Event(subject, "last-slot", [(Calls, 1)], enforcedLimits: [10]), Token)));

        Assert.Multiple(async () =>
        {
            Assert.That(outcomes.Count(o => o is RecordOutcome.Recorded), Is.EqualTo(1));
            Assert.That(outcomes.Count(o => o is RecordOutcome.AlreadyRecorded), Is.EqualTo(9), "none refused");
            Assert.That((await TotalAsync(Key(subject, Calls))).Total, Is.EqualTo(10));
        });
    }

    [Test]
    public async Task Ledger_adjustment_adds_its_signed_amount_as_an_event_of_its_own()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 50);

        await RecordAsync(Event(subject, "refund", [(Minutes, -20)], kind: UsageEventKind.Adjustment, reason: "refund"));

        Assert.Multiple(async () =>
        {
            Assert.That((await TotalAsync(Key(subject))).Total, Is.EqualTo(30));
            Assert.That(await Ports.Ledger.InspectAsync(Key(subject), Token), Is.EqualTo(new LedgerSnapshot(30, 2, 30, (await TotalAsync(Key(subject))).Version)));
        });
    }

    [Test]
    public async Task Ledger_adjustment_below_zero_is_refused_and_changes_nothing()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 10);

        var error = Assert.ThrowsAsync<PreconditionFailedException>(() =>
            Ports.Ledger.RecordAsync(Event(subject, "too-much", [(Minutes, -11)], kind: UsageEventKind.Adjustment, reason: "x"), Token));

        Assert.Multiple(async () =>
        {
            Assert.That(error!.Reason, Is.EqualTo("USAGE_BELOW_ZERO"));
            Assert.That((await TotalAsync(Key(subject))).Total, Is.EqualTo(10));
            Assert.That(await Ports.Ledger.FindFingerprintAsync(subject, "too-much", Token), Is.Null);
        });
    }

    [Test]
    public async Task Ledger_reset_records_minus_the_period_total_and_keeps_every_event()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 30);
        await RecordAsync(subject, Minutes, 12);

        var reset = await RecordAsync(Event(subject, "reset", [(Minutes, 0)], kind: UsageEventKind.Reset, reason: "support"));
        var again = await Ports.Ledger.RecordAsync(Event(subject, "reset", [(Minutes, 0)], kind: UsageEventKind.Reset, reason: "support"), Token);
        await RecordAsync(subject, Minutes, 4);

        Assert.Multiple(async () =>
        {
            Assert.That(reset.Lines.Single().Amount, Is.EqualTo(-42), "the amount is decided inside the ledger's transaction");
            Assert.That(again, Is.TypeOf<RecordOutcome.AlreadyRecorded>(), "a retried reset resets nothing again");
            Assert.That((await TotalAsync(Key(subject))).Total, Is.EqualTo(4));
            Assert.That((await Ports.Ledger.InspectAsync(Key(subject), Token)).EventCount, Is.EqualTo(4));
        });
    }

    [Test]
    public async Task Ledger_reset_racing_usage_loses_no_event()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 10);

        var usage = Enumerable.Range(0, 20).Select(i => Ports.Ledger.RecordAsync(Event(subject, $"u{i}", Minutes, 1), Token)).ToList();
        var reset = Ports.Ledger.RecordAsync(Event(subject, "reset", [(Minutes, 0)], kind: UsageEventKind.Reset, reason: "x"), Token);
        await Task.WhenAll([.. usage, reset]);
        var snapshot = await Ports.Ledger.InspectAsync(Key(subject), Token);

        Assert.Multiple(() =>
        {
            Assert.That(snapshot.RowTotal, Is.EqualTo(snapshot.EventTotal), "the running total is the sum of the events");
            Assert.That(snapshot.EventCount, Is.EqualTo(22));
            Assert.That(snapshot.EventTotal, Is.InRange(0, 20), "the reset took away what was counted before it, no more");
        });
    }

    [Test]
    public async Task Ledger_reconcile_returns_the_event_sum_with_a_newer_version()
    {
        var subject = await NewSubjectAsync();
        var recorded = (await RecordAsync(subject, Minutes, 25)).Changes.Values.Single();

        var (value, rowFixed) = await Ports.Ledger.ReconcileAsync(Key(subject), Token);

        Assert.Multiple(() =>
        {
            Assert.That(value.Total, Is.EqualTo(25));
            Assert.That(value.Version, Is.GreaterThan(recorded.Version), "so that the cache takes it over what it holds");
            Assert.That(rowFixed, Is.False, "the running total was right");
        });
    }

    [Test]
    public async Task Ledger_active_subjects_are_those_with_a_total_in_a_current_period()
    {
        var active = await NewSubjectAsync();
        var idle = await NewSubjectAsync();
        await RecordAsync(active, Minutes, 1);

        var subjects = await Ports.Ledger.ListActiveSubjectsAsync(Now(), Token);

        Assert.Multiple(() =>
        {
            Assert.That(subjects, Does.Contain(active));
            Assert.That(subjects, Does.Not.Contain(idle));
            Assert.That(subjects, Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal));
        });
    }

    private static bool SameReadings(RecordOutcome a, RecordOutcome b) =>
        a is RecordOutcome.Refused x && b is RecordOutcome.Refused y && x.Readings.SequenceEqual(y.Readings);
}
