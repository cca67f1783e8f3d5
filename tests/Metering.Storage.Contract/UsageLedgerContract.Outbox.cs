using Metering.Core.Usage;
using NodaTime;

namespace Metering.Storage.Contract;

/// <summary>The outbox: every change reaches the cache with the counters' current values, even when no caller hears back.</summary>
public sealed partial class UsageLedgerContract
{
    [Test]
    public async Task Ledger_outbox_is_drained_with_the_counters_current_values()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 5);
        await HoldAsync(Hold(subject, Minutes, 20, 100));
        var last = (await RecordAsync(subject, Minutes, 7)).Changes.Values.Single();

        var drained = await DrainAllAsync();

        Assert.That(
            drained.SelectMany(b => b.Counters).Where(v => v.Key.SubjectId == subject).Distinct(),
            Is.EqualTo(new[] { new CounterValue(Key(subject), 12, 20, last.Version) }),
            "the current total, held amount and version, whatever the entry was queued with");
    }

    [Test]
    public async Task Ledger_outbox_entries_are_taken_once()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 5);

        await DrainAllAsync();
        var second = await DrainAllAsync();

        Assert.That(second.SelectMany(b => b.Counters).Where(v => v.Key.SubjectId == subject), Is.Empty);
    }

    [Test]
    public async Task Ledger_outbox_entries_stay_when_applying_them_fails()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 5);

        Assert.ThrowsAsync<InvalidOperationException>(() =>
            Ports.Ledger.DrainOutboxAsync(_ => throw new InvalidOperationException("the cache refused"), Duration.Zero, 10_000, Token));
        var retried = await DrainAllAsync();

        Assert.That(retried.SelectMany(b => b.Counters).Select(v => v.Key), Does.Contain(Key(subject)), "the next drain brings it");
    }

    [Test]
    public async Task Ledger_outbox_leaves_entries_younger_than_the_minimum_age()
    {
        var subject = await NewSubjectAsync();
        await RecordAsync(subject, Minutes, 5);

        var young = new List<OutboxBatch>();
        await Ports.Ledger.DrainOutboxAsync(batch => { young.Add(batch); return Task.CompletedTask; }, Duration.FromHours(1), 10_000, Token);
        var all = await DrainAllAsync();

        Assert.Multiple(() =>
        {
            Assert.That(young.SelectMany(b => b.Counters).Where(v => v.Key.SubjectId == subject), Is.Empty, "the committing instance applies its own first");
            Assert.That(all.SelectMany(b => b.Counters).Select(v => v.Key), Does.Contain(Key(subject)));
        });
    }

    [Test]
    public async Task Ledger_outbox_names_changed_subscriptions_and_catalog_changes()
    {
        var subject = await NewSubjectAsync();
        await DrainAllAsync();

        await Ports.Subscriptions.SaveAsync(subject, Plan, DefaultCalendar with { BillingAnchorDay = 9 }, Now(), Token);
        await Ports.Catalog.SaveUsageTypeAsync(new Core.Catalog.UsageType(NewId("type"), "unit", Core.Periods.ResetPeriod.Day), Now(), Token);
        var drained = await DrainAllAsync();

        Assert.Multiple(() =>
        {
            Assert.That(drained.SelectMany(b => b.Subscriptions), Does.Contain(subject));
            Assert.That(drained.Any(b => b.Catalog), Is.True);
        });
    }

    [Test]
    public async Task Ledger_outbox_drain_takes_at_most_the_batch_size()
    {
        var subject = await NewSubjectAsync();
        await DrainAllAsync();
        for (var i = 0; i < 3; i++)
        {
            await RecordAsync(subject, Minutes, 1);
        }

        var taken = await Ports.Ledger.DrainOutboxAsync(_ => Task.CompletedTask, Duration.Zero, 2, Token);
        var rest = await Ports.Ledger.DrainOutboxAsync(_ => Task.CompletedTask, Duration.Zero, 10_000, Token);

        Assert.Multiple(() =>
        {
            Assert.That(taken, Is.EqualTo(2));
            Assert.That(rest, Is.GreaterThanOrEqualTo(1));
        });
    }

    /// <summary>Drains every entry, whatever its age, batch after batch; returns the batches.</summary>
    private async Task<List<OutboxBatch>> DrainAllAsync()
    {
        var batches = new List<OutboxBatch>();
        while (await Ports.Ledger.DrainOutboxAsync(batch => { batches.Add(batch); return Task.CompletedTask; }, Duration.Zero, 1000, Token) > 0)
        {
        }

        return batches;
    }
}
