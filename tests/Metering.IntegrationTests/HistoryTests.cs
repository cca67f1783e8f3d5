using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>What support reads: a subject's ledger events and its subscription changes.</summary>
public sealed class HistoryTests : ServiceTest
{
    [Test]
    public async Task ListUsageEvents_PagedRead_ReturnsEveryEventOnce_NewestFirst()
    {
        var subject = await SubscribeAsync("premium");

        // 25 events over 13 distinct instants, so pages also split events that occurred at the same instant.
        for (var i = 0; i < 25; i++)
        {
            await TrackAsync(subject, Minutes, i + 1, occurredAt: Start.AddMinutes(-(i / 2) * 10), key: $"e{i:D2}");
        }

        var events = await ReadAllAsync(new ListUsageEventsRequest { SubjectId = subject, PageSize = 4 });

        Assert.Multiple(() =>
        {
            Assert.That(events.Select(e => e.IdempotencyKey), Is.Unique);
            Assert.That(events, Has.Count.EqualTo(25));
            Assert.That(events.Select(e => e.OccurredAt.ToDateTimeOffset()), Is.Ordered.Descending);
            Assert.That(events.Sum(e => e.Lines.Single().Amount), Is.EqualTo(Enumerable.Range(1, 25).Sum()));
        });
    }

    [Test]
    public async Task ListUsageEvents_ShowsKindKeyAttributesReasonAndPeriod()
    {
        var subject = await SubscribeAsync("starter");
        await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "session-1",
            Usage = { Usage(Minutes, 40), Usage(Interviews, 1) },
            OccurredAt = Timestamp.FromDateTimeOffset(Start.AddMinutes(-3)),
            Attributes = { ["session_id"] = "s-1" },
        });
        await Admin.AdjustUsageAsync(new AdjustUsageRequest { SubjectId = subject, UsageType = Minutes, Amount = -10, Reason = "broken audio", IdempotencyKey = "refund-1", OccurredAt = Timestamp.FromDateTimeOffset(Start.AddMinutes(-2)) });
        Host.Clock.Advance(TimeSpan.FromSeconds(1));
        await Admin.ResetUsageAsync(new ResetUsageRequest { SubjectId = subject, UsageType = Interviews, Reason = "support ticket 7", IdempotencyKey = "reset-1" });

        var events = (await Admin.ListUsageEventsAsync(new ListUsageEventsRequest { SubjectId = subject })).Events;

        Assert.Multiple(() =>
        {
            Assert.That(events.Select(e => e.Kind), Is.EqualTo(new[] { UsageEventKind.Reset, UsageEventKind.Adjustment, UsageEventKind.Usage }));
            Assert.That(events.Select(e => e.IdempotencyKey), Is.EqualTo(new[] { "reset-1", "refund-1", "session-1" }));
            Assert.That(events[0].Reason, Is.EqualTo("support ticket 7"));
            Assert.That(events[0].Lines.Single().Amount, Is.EqualTo(-1));
            Assert.That(events[1].Lines.Single().Amount, Is.EqualTo(-10));
            Assert.That(events[2].Attributes["session_id"], Is.EqualTo("s-1"));
            Assert.That(events[2].Lines.Select(l => l.UsageType), Is.EquivalentTo(new[] { Minutes, Interviews }));
            Assert.That(events[2].Lines.Single(l => l.UsageType == Minutes).PeriodStart.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero)));
            Assert.That(events[2].Lines.Single(l => l.UsageType == Interviews).PeriodStart.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 11, 18, 0, 0, 0, TimeSpan.Zero)));
        });
    }

    [Test]
    public async Task ListUsageEvents_FiltersByUsageTypeAndTimeRange()
    {
        var subject = await SubscribeAsync("pro");
        await TrackAsync(subject, Minutes, 1, occurredAt: Start.AddHours(-3), key: "m-3h");
        await TrackAsync(subject, Minutes, 1, occurredAt: Start.AddHours(-2), key: "m-2h");
        await TrackAsync(subject, Interviews, 1, occurredAt: Start.AddHours(-2), key: "i-2h");
        await TrackAsync(subject, Minutes, 1, occurredAt: Start.AddHours(-1), key: "m-1h");

        var minutes = (await Admin.ListUsageEventsAsync(new ListUsageEventsRequest { SubjectId = subject, UsageType = Minutes })).Events;
        var window = (await Admin.ListUsageEventsAsync(new ListUsageEventsRequest
        {
            SubjectId = subject,
            From = Timestamp.FromDateTimeOffset(Start.AddHours(-2)),
            To = Timestamp.FromDateTimeOffset(Start.AddHours(-1)),
        })).Events;

        Assert.Multiple(() =>
        {
            Assert.That(minutes.Select(e => e.IdempotencyKey), Is.EqualTo(new[] { "m-1h", "m-2h", "m-3h" }));
            Assert.That(window.Select(e => e.IdempotencyKey), Is.EquivalentTo(new[] { "m-2h", "i-2h" }), "from inclusive, to exclusive");
        });
    }

    [Test]
    public void ListUsageEvents_BadPageTokenOrPageSize_IsInvalidArgumentNamingThem()
    {
        var error = FailsWith(StatusCode.InvalidArgument, () => Admin.ListUsageEventsAsync(new ListUsageEventsRequest
        {
            SubjectId = NewSubject(),
            PageSize = 501,
            PageToken = "not-a-token",
            UsageType = "hours",
        }).ResponseAsync);

        var fields = error.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations.Select(v => v.Field);
        Assert.That(fields, Is.EquivalentTo(new[] { "page_size", "page_token", "usage_type" }));
    }

    [Test]
    public async Task ListSubscriptionChanges_FirstSetSubscription_HasNoPrevious()
    {
        var subject = await SubscribeAsync("pro");

        var change = (await Admin.ListSubscriptionChangesAsync(new ListSubscriptionChangesRequest { SubjectId = subject })).Changes.Single();

        Assert.Multiple(() =>
        {
            Assert.That(change.Kind, Is.EqualTo(SubscriptionChangeKind.Changed));
            Assert.That(change.PlanId, Is.EqualTo("pro"));
            Assert.That(change.PreviousPlanId, Is.Empty);
            Assert.That(change.Version, Is.EqualTo(1));
        });
    }

    private async Task<List<UsageEvent>> ReadAllAsync(ListUsageEventsRequest request)
    {
        var events = new List<UsageEvent>();
        for (var pages = 0; ; pages++)
        {
            Assert.That(pages, Is.LessThan(100), "paging does not end");
            var page = await Admin.ListUsageEventsAsync(request);
            events.AddRange(page.Events);
            if (page.NextPageToken.Length == 0)
            {
                return events;
            }

            request = request.Clone();
            request.PageToken = page.NextPageToken;
        }
    }
}
