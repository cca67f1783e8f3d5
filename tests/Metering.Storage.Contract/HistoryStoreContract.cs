using Metering.Core.History;
using Metering.Core.Usage;
using NodaTime;

namespace Metering.Storage.Contract;

/// <summary>The contract of <see cref="Core.Ports.IHistoryStore"/> over ledger events: newest first by (occurred_at, id), paged by cursor.</summary>
[TestFixtureSource(typeof(StorageBackends), nameof(StorageBackends.All))]
public sealed class HistoryStoreContract(StorageBackend backend) : ContractFixture(backend)
{
    [Test]
    public async Task History_pages_return_every_event_once_newest_first()
    {
        var subject = await NewSubjectAsync();
        var start = Whole(Now()) - Duration.FromHours(1);
        for (var i = 0; i < 7; i++)
        {
            // Two events per instant: the id breaks the tie.
            await RecordAsync(Event(subject, $"e{i}", [(Minutes, 1)], occurredAt: start + Duration.FromMinutes(i / 2)));
        }

        var keys = new List<string>();
        EventCursor? after = null;
        var pages = 0;
        while (true)
        {
            var page = await Ports.History.ListEventsAsync(new EventQuery(subject, null, null, null, after, 3), Token);
            keys.AddRange(page.Select(e => e.IdempotencyKey));
            pages++;
            if (page.Count < 3)
            {
                break;
            }

            after = new EventCursor(page[^1].OccurredAt, page[^1].Id);
        }

        Assert.Multiple(() =>
        {
            Assert.That(keys, Is.EqualTo(new[] { "e6", "e5", "e4", "e3", "e2", "e1", "e0" }));
            Assert.That(pages, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task History_events_arriving_between_pages_do_not_shift_the_pages()
    {
        var subject = await NewSubjectAsync();
        var start = Whole(Now()) - Duration.FromHours(1);
        for (var i = 0; i < 4; i++)
        {
            await RecordAsync(Event(subject, $"e{i}", [(Minutes, 1)], occurredAt: start + Duration.FromMinutes(i)));
        }

        var first = await Ports.History.ListEventsAsync(new EventQuery(subject, null, null, null, null, 2), Token);
        await RecordAsync(Event(subject, "newer", [(Minutes, 1)], occurredAt: start + Duration.FromMinutes(30)));
        var second = await Ports.History.ListEventsAsync(
            new EventQuery(subject, null, null, null, new EventCursor(first[^1].OccurredAt, first[^1].Id), 10), Token);

        Assert.That(first.Concat(second).Select(e => e.IdempotencyKey), Is.EqualTo(new[] { "e3", "e2", "e1", "e0" }));
    }

    [Test]
    public async Task History_filters_by_usage_type_and_time_range()
    {
        var subject = await NewSubjectAsync();
        var start = Whole(Now()) - Duration.FromHours(2);
        await RecordAsync(Event(subject, "minutes-early", [(Minutes, 1)], occurredAt: start));
        await RecordAsync(Event(subject, "calls-mid", [(Calls, 1)], occurredAt: start + Duration.FromMinutes(30)));
        await RecordAsync(Event(subject, "both-mid", [(Minutes, 2), (Calls, 1)], occurredAt: start + Duration.FromMinutes(40)));
        await RecordAsync(Event(subject, "minutes-late", [(Minutes, 3)], occurredAt: start + Duration.FromMinutes(60)));

        var calls = await Ports.History.ListEventsAsync(new EventQuery(subject, Calls, null, null, null, 10), Token);
        var window = await Ports.History.ListEventsAsync(
            new EventQuery(subject, null, start + Duration.FromMinutes(30), start + Duration.FromMinutes(60), null, 10), Token);

        Assert.Multiple(() =>
        {
            Assert.That(calls.Select(e => e.IdempotencyKey), Is.EqualTo(new[] { "both-mid", "calls-mid" }));
            Assert.That(window.Select(e => e.IdempotencyKey), Is.EqualTo(new[] { "both-mid", "calls-mid" }), "from inclusive, to exclusive");
        });
    }

    [Test]
    public async Task History_shows_kind_key_reason_attributes_and_lines_with_their_period()
    {
        var subject = await NewSubjectAsync();
        var at = Whole(Now()) - Duration.FromMinutes(5);
        var hold = (await HoldAsync(Hold(subject, Minutes, 10, 100))).Hold!;
        await RecordAsync(Event(subject, "usage", [(Minutes, 4), (Calls, 1)], occurredAt: at, reservationId: hold.ReservationId,
            attributes: new Dictionary<string, string> { ["session"] = "42" }));
        await RecordAsync(Event(subject, "fix", [(Minutes, -1)], kind: UsageEventKind.Adjustment, reason: "goodwill", occurredAt: at + Duration.FromMinutes(1)));

        var events = await Ports.History.ListEventsAsync(new EventQuery(subject, null, null, null, null, 10), Token);

        Assert.Multiple(() =>
        {
            Assert.That(events.Select(e => (e.IdempotencyKey, e.Kind, e.Reason)), Is.EqualTo(new[]
            {
                ("fix", UsageEventKind.Adjustment, (string?)"goodwill"), ("usage", UsageEventKind.Usage, null),
            }));
            var usage = events[1];
            Assert.That(usage.OccurredAt, Is.EqualTo(at));
            Assert.That(usage.ReservationId, Is.EqualTo(hold.ReservationId));
            Assert.That(usage.Attributes, Is.EquivalentTo(new Dictionary<string, string> { ["session"] = "42" }));
            Assert.That(usage.Lines, Is.EquivalentTo(new[]
            {
                new LedgerEventLine(Minutes, 4, Key(subject, Minutes, at).Period.Start),
                new LedgerEventLine(Calls, 1, Key(subject, Calls, at).Period.Start),
            }));
        });
    }

    [Test]
    public async Task History_of_another_subject_is_not_shown()
    {
        var subject = await NewSubjectAsync();
        var other = await NewSubjectAsync();
        await RecordAsync(other, Minutes, 1);

        Assert.That(await Ports.History.ListEventsAsync(new EventQuery(subject, null, null, null, null, 10), Token), Is.Empty);
    }
}
