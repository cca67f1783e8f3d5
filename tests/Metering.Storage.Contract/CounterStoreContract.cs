using Metering.Core.Usage;

namespace Metering.Storage.Contract;

/// <summary>
/// The contract of <see cref="Core.Ports.ICounterStore"/>: a cache of ledger values that only moves to newer versions,
/// names what it lacks, and refuses values computed before a fence.
/// </summary>
[TestFixtureSource(typeof(StorageBackends), nameof(StorageBackends.All))]
public sealed class CounterStoreContract(StorageBackend backend) : ContractFixture(backend)
{
    [Test]
    public async Task Counters_check_names_every_counter_it_lacks()
    {
        var subject = NewId("subject");
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, total: 3, held: 0, version: 10)], Token);

        var result = await Ports.Counters.CheckAsync(Check(subject, Minutes, Calls), Token);

        Assert.Multiple(() =>
        {
            Assert.That(result.Missing, Is.EqualTo(new[] { Key(subject, Calls) }));
            Assert.That(result.Readings, Is.Empty);
        });
    }

    [Test]
    public async Task Counters_check_reads_every_line_when_all_are_cached()
    {
        var subject = NewId("subject");
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 30, 5, 10), Value(subject, Calls, 2, 1, 11)], Token);

        var result = await Ports.Counters.CheckAsync(Check(subject, Minutes, Calls), Token);

        Assert.Multiple(() =>
        {
            Assert.That(result.Missing, Is.Empty);
            Assert.That(result.Readings, Is.EqualTo(new[] { new CounterReading(30, 5), new CounterReading(2, 1) }), "in the order of the lines");
        });
    }

    [Test]
    public async Task Counters_apply_replaces_a_value_only_with_a_newer_version()
    {
        var subject = NewId("subject");
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 7, 0, 20)], Token);

        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 0, 0, 19)], Token);
        var afterOlder = await Ports.Counters.InspectAsync(Key(subject), Token);
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 99, 0, 20)], Token);
        var afterSame = await Ports.Counters.InspectAsync(Key(subject), Token);
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 9, 4, 21)], Token);
        var afterNewer = await Ports.Counters.InspectAsync(Key(subject), Token);

        Assert.Multiple(() =>
        {
            Assert.That(afterOlder, Is.EqualTo(new CounterSnapshot(7, 0, 20)), "a late rebuild does not undo a newer write");
            Assert.That(afterSame, Is.EqualTo(new CounterSnapshot(7, 0, 20)), "the same version again changes nothing");
            Assert.That(afterNewer, Is.EqualTo(new CounterSnapshot(9, 4, 21)));
        });
    }

    [Test]
    public async Task Counters_values_applied_in_any_order_converge_to_the_newest()
    {
        var subject = NewId("subject");
        var values = Enumerable.Range(1, 20).Select(v => Value(subject, Minutes, v * 10, 0, v)).ToList();

        await Task.WhenAll(values.OrderBy(_ => Random.Shared.Next()).Select(v => Ports.Counters.ApplyAsync([v], Token)));

        Assert.That(await Ports.Counters.InspectAsync(Key(subject), Token), Is.EqualTo(new CounterSnapshot(200, 0, 20)));
    }

    [Test]
    public async Task Counters_apply_of_several_subjects_and_counters_stores_each()
    {
        var alice = NewId("alice");
        var bob = NewId("bob");

        await Ports.Counters.ApplyAsync([Value(alice, Minutes, 1, 0, 5), Value(bob, Minutes, 2, 0, 6), Value(bob, Calls, 3, 1, 7)], Token);

        Assert.Multiple(async () =>
        {
            Assert.That(await Ports.Counters.InspectAsync(Key(alice), Token), Is.EqualTo(new CounterSnapshot(1, 0, 5)));
            Assert.That(await Ports.Counters.InspectAsync(Key(bob), Token), Is.EqualTo(new CounterSnapshot(2, 0, 6)));
            Assert.That(await Ports.Counters.InspectAsync(Key(bob, Calls), Token), Is.EqualTo(new CounterSnapshot(3, 1, 7)));
        });
    }

    [Test]
    public async Task Counters_of_other_periods_are_separate()
    {
        var subject = NewId("subject");
        var lastMonth = Now().Minus(NodaTime.Duration.FromDays(40));
        var old = new CounterValue(Key(subject, Minutes, lastMonth), 50, 0, 30);

        await Ports.Counters.ApplyAsync([old, Value(subject, Minutes, 5, 0, 31)], Token);

        Assert.Multiple(async () =>
        {
            Assert.That(await Ports.Counters.InspectAsync(old.Key, Token), Is.EqualTo(new CounterSnapshot(50, 0, 30)));
            Assert.That(await Ports.Counters.InspectAsync(Key(subject), Token), Is.EqualTo(new CounterSnapshot(5, 0, 31)));
        });
    }

    [Test]
    public async Task Counters_inspect_of_a_missing_counter_is_empty_and_changes_nothing()
    {
        var subject = NewId("subject");

        var snapshot = await Ports.Counters.InspectAsync(Key(subject), Token);
        var check = await Ports.Counters.CheckAsync(Check(subject, Minutes), Token);

        Assert.Multiple(() =>
        {
            Assert.That(snapshot, Is.EqualTo(new CounterSnapshot(null, null, null)));
            Assert.That(check.Missing, Is.EqualTo(new[] { Key(subject) }));
        });
    }

    [Test]
    public async Task Counters_fence_empties_the_counter_so_the_next_read_rebuilds_it()
    {
        var subject = NewId("subject");
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 40, 0, 10)], Token);

        await Ports.Counters.FenceAsync([Key(subject)], 15, Token);

        Assert.That((await Ports.Counters.CheckAsync(Check(subject, Minutes), Token)).Missing, Is.EqualTo(new[] { Key(subject) }));
    }

    [Test]
    public async Task Counters_fence_refuses_a_rebuild_computed_before_it()
    {
        var subject = NewId("subject");
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 40, 0, 10)], Token);
        await Ports.Counters.FenceAsync([Key(subject)], 15, Token);

        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 40, 0, 14)], Token);
        var afterOlder = await Ports.Counters.CheckAsync(Check(subject, Minutes), Token);
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 3, 0, 16)], Token);
        var afterNewer = await Ports.Counters.CheckAsync(Check(subject, Minutes), Token);

        Assert.Multiple(() =>
        {
            Assert.That(afterOlder.Missing, Is.EqualTo(new[] { Key(subject) }), "a value from before the fence stays out");
            Assert.That(afterNewer.Readings, Is.EqualTo(new[] { new CounterReading(3, 0) }), "a value after the fence is taken");
        });
    }

    [Test]
    public async Task Counters_fence_of_a_counter_never_cached_still_refuses_older_rebuilds()
    {
        var subject = NewId("subject");

        await Ports.Counters.FenceAsync([Key(subject), Key(subject, Calls)], 50, Token);
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 1, 0, 49), Value(subject, Calls, 1, 0, 51)], Token);

        Assert.That((await Ports.Counters.CheckAsync(Check(subject, Minutes, Calls), Token)).Missing, Is.EqualTo(new[] { Key(subject) }));
    }

    [Test]
    public async Task Counters_evict_drops_the_counter_and_takes_any_version_afterwards()
    {
        var subject = NewId("subject");
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 999, 0, 1_000_000)], Token);

        await Ports.Counters.EvictAsync([Key(subject)], Token);
        var afterEvict = await Ports.Counters.CheckAsync(Check(subject, Minutes), Token);
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 12, 0, 40)], Token);

        Assert.Multiple(async () =>
        {
            Assert.That(afterEvict.Missing, Is.EqualTo(new[] { Key(subject) }));
            Assert.That(await Ports.Counters.InspectAsync(Key(subject), Token), Is.EqualTo(new CounterSnapshot(12, 0, 40)),
                "a counter ahead of the ledger is replaced by the ledger's value");
        });
    }

    [Test]
    public async Task Counters_evict_leaves_other_counters_alone()
    {
        var subject = NewId("subject");
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 1, 0, 5), Value(subject, Calls, 2, 0, 6)], Token);

        await Ports.Counters.EvictAsync([Key(subject)], Token);

        Assert.That(await Ports.Counters.InspectAsync(Key(subject, Calls), Token), Is.EqualTo(new CounterSnapshot(2, 0, 6)));
    }

    [Test]
    public async Task Counters_create_empty_creates_missing_counters_at_zero_below_every_ledger_version()
    {
        var subject = NewId("subject");

        var created = await Ports.Counters.CreateEmptyAsync([Key(subject), Key(subject, Calls)], Token);
        var check = await Ports.Counters.CheckAsync(Check(subject, Minutes, Calls), Token);
        var again = await Ports.Counters.CreateEmptyAsync([Key(subject), Key(subject, Calls)], Token);
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 4, 1, 1)], Token);

        Assert.Multiple(async () =>
        {
            Assert.That(created, Is.EqualTo(2));
            Assert.That(check.Readings, Is.EqualTo(new[] { new CounterReading(0, 0), new CounterReading(0, 0) }));
            Assert.That(again, Is.Zero, "a counter that exists is not created again");
            Assert.That(await Ports.Counters.InspectAsync(Key(subject), Token), Is.EqualTo(new CounterSnapshot(4, 1, 1)),
                "the lowest ledger version replaces an empty counter");
        });
    }

    [Test]
    public async Task Counters_create_empty_leaves_a_cached_value_alone_whatever_its_version()
    {
        var subject = NewId("subject");
        await Ports.Counters.ApplyAsync([Value(subject, Minutes, 7, 2, 1)], Token);

        var created = await Ports.Counters.CreateEmptyAsync([Key(subject)], Token);

        Assert.Multiple(async () =>
        {
            Assert.That(created, Is.Zero);
            Assert.That(await Ports.Counters.InspectAsync(Key(subject), Token), Is.EqualTo(new CounterSnapshot(7, 2, 1)));
        });
    }

    [Test]
    public async Task Counters_create_empty_leaves_a_fence_alone_and_a_later_fence_empties_it()
    {
        var subject = NewId("subject");
        await Ports.Counters.FenceAsync([Key(subject)], 1, Token);

        var createdOverFence = await Ports.Counters.CreateEmptyAsync([Key(subject)], Token);
        var fenced = await Ports.Counters.CheckAsync(Check(subject, Minutes), Token);
        await Ports.Counters.CreateEmptyAsync([Key(subject, Calls)], Token);
        await Ports.Counters.FenceAsync([Key(subject, Calls)], 1, Token);
        var fencedAfter = await Ports.Counters.CheckAsync(Check(subject, Calls), Token);

        Assert.Multiple(() =>
        {
            Assert.That(createdOverFence, Is.Zero, "a fenced counter is rebuilt from the ledger, not created empty");
            Assert.That(fenced.Missing, Is.EqualTo(new[] { Key(subject) }));
            Assert.That(fencedAfter.Missing, Is.EqualTo(new[] { Key(subject, Calls) }), "the lowest fence empties a created counter");
        });
    }

    private static CounterValue Value(string subject, string usageType, long total, long held, long version) =>
        new(Key(subject, usageType), total, held, version);

    private static CounterCheck Check(string subject, params string[] usageTypes) =>
        new(subject, [.. usageTypes.Select(t => new CounterLine(Key(subject, t), 1, 100))]);
}
