using System.Collections.Concurrent;
using System.Diagnostics;
using Metering.Api.V1;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.IntegrationTests.Infrastructure;
using Metering.Storage.Postgres;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using NodaTime;
using StackExchange.Redis;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// The first call of a subject never seen before: it enrolls the subject and creates its counters empty instead of
/// rebuilding them from the ledger. Two instances on one PostgreSQL and Redis; instance A can be paused right after it
/// committed an enrolment, so that another instance, a subscription change or a lost cache write lands exactly between
/// the enrolment and the counters' creation.
/// </summary>
public sealed class FirstCallTests
{
    private const long FreeMinutes = 30;

    private static readonly DateTimeOffset Start = ServiceTest.DefaultStartForTests;

    private MeteringHost _a = null!;
    private MeteringHost _b = null!;
    private EnrolmentPause _pause = null!;

    [SetUp]
    public async Task StartTwoInstancesAsync()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("first_call");
        _a = await MeteringHost.StartAsync(Start, database, services: services =>
        {
            services.RemoveAll<ISubscriptionStore>();
            services.AddSingleton(provider => new EnrolmentPause(ActivatorUtilities.CreateInstance<PostgresSubscriptionStore>(provider)));
            services.AddSingleton<ISubscriptionStore>(provider => provider.GetRequiredService<EnrolmentPause>());
        });
        _b = await MeteringHost.StartAsync(Start, database);
        _pause = _a.Services.GetRequiredService<EnrolmentPause>();

        // Redis learns the scripts of a first call (a script it does not know yet runs after the check sent with it,
        // which then rebuilds from the ledger), so that every test below takes the path it means to.
        await Check(_a, NewSubject(), 1);
    }

    [TearDown]
    public async Task StopAsync()
    {
        await _a.DisposeAsync();
        await _b.DisposeAsync();
    }

    [Test]
    public async Task FirstCheck_OfANewSubject_CreatesItsCountersEmpty_WithoutTouchingTheLedgerTotals()
    {
        var subject = NewSubject();

        var first = await Check(_a, subject, 10);
        var totalRows = await LedgerProbe.TotalRowCountAsync(_a, subject);
        var counters = await LedgerProbe.CountersAsync(_a, subject, Minutes);
        var cachedVersion = await _a.Redis.HashGetAsync($"mtr:{{{subject}}}:sub", "v");
        await Track(_a, subject, 4);
        var after = await Remaining(_a, subject);

        Assert.Multiple(() =>
        {
            Assert.That(first.Allowed, Is.True);
            Assert.That(first.PlanId, Is.EqualTo("free"));
            Assert.That(first.Limits[0].Used, Is.Zero);
            Assert.That(first.Limits[0].Remaining, Is.EqualTo(FreeMinutes));
            Assert.That(totalRows, Is.Zero, "no total was rebuilt from the ledger for a subject enrolled by the call");
            Assert.That(counters, Is.EqualTo(new[] { (0L, 0L) }), "the counter was created empty, at version 0");
            Assert.That((long)cachedVersion, Is.EqualTo(1), "the enrolment is in the shared cache");
            Assert.That(after.Used, Is.EqualTo(4), "the first ledger value replaces the empty counter");
        });
    }

    [Test]
    public async Task FirstCheck_RacingTrackUsageOnAnotherInstance_ReadsTheTrackedUsage()
    {
        var subject = NewSubject();
        _pause.After(subject, async () => await Track(_b, subject, 25));

        var first = await Check(_a, subject, 1);

        Assert.Multiple(() =>
        {
            Assert.That(first.Limits[0].Used, Is.EqualTo(25), "the counter B wrote is not replaced by an empty one");
            Assert.That(first.Limits[0].Remaining, Is.EqualTo(FreeMinutes - 25));
        });
    }

    [Test]
    public async Task FirstCheck_WhenTheOtherInstancesCacheWriteWasLost_TheCounterReachesTheLedgerWithinTheOutboxWindow()
    {
        var subject = NewSubject();
        _pause.After(subject, async () =>
        {
            var spent = Stopwatch.StartNew();
            await Track(_b, subject, 25);
            await ForgetCountersAsync(subject); // B's cache write is lost; its outbox entry is still waiting
            _a.Clock.Advance(spent.Elapsed);
        });

        await Check(_a, subject, 1);
        var converged = await EventuallyUsedAsync(_a, subject, 25, TimeSpan.FromSeconds(5));

        Assert.Multiple(async () =>
        {
            Assert.That(converged, Is.True, "the outbox drain replaced the empty counter with the ledger's value");
            Assert.That((await LedgerProbe.CountersAsync(_a, subject, Minutes)).Select(c => c.Total), Is.EqualTo(new[] { 25L }));
        });
    }

    [Test]
    public async Task FirstCheck_LongAfterTheEnrolment_WhenACommittedValueWasDrainedAndThenFlushed_IsRebuiltFromTheLedger()
    {
        var subject = NewSubject();
        _pause.After(subject, async () =>
        {
            var spent = Stopwatch.StartNew();
            await Track(_b, subject, 25);
            await LedgerProbe.OutboxDrainedAsync(_b, subject);
            await ForgetCountersAsync(subject); // Redis flushed: nothing will apply 25 again
            _a.Clock.Advance(spent.Elapsed);
        });

        var first = await Check(_a, subject, 1);
        var counters = await LedgerProbe.CountersAsync(_a, subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(first.Limits[0].Used, Is.EqualTo(25), "counters created this late are not trusted: read from the ledger");
            Assert.That(counters.Select(c => c.Total), Is.EqualTo(new[] { 25L }));
            Assert.That(counters.Select(c => c.Version), Has.All.GreaterThan(0L), "the ledger's value replaced the empty one");
        });
    }

    [Test]
    public async Task FirstCheck_OverACounterOfAnotherRedisLife_RebuildsItFromTheLedger()
    {
        var subject = NewSubject();
        _pause.After(subject, async () =>
        {
            await Track(_b, subject, 25);
            await LedgerProbe.OutboxDrainedAsync(_b, subject);

            // A restart from a snapshot: the counter is there, written by another server's life.
            foreach (var key in await CounterKeysAsync(subject))
            {
                await _a.Redis.HashSetAsync(key, "e", "0000000000000000000000000000000000000000");
            }
        });

        var first = await Check(_a, subject, 1);

        Assert.That(first.Limits[0].Used, Is.EqualTo(25), "a record of another life is rebuilt, never replaced by an empty counter");
    }

    [TestCase(false, TestName = "FirstCheck_RacingAPlanChangeOnAnotherInstance_KeepsTheChangeAndItsFence")]
    [TestCase(true, TestName = "FirstCheck_RacingACalendarChangeOnAnotherInstance_KeepsTheChangeAndItsFence")]
    public async Task FirstCheck_RacingSetSubscription(bool calendarChanges)
    {
        var subject = NewSubject();
        _pause.After(subject, async () => await _b.Admin.SetSubscriptionAsync(new SetSubscriptionRequest
        {
            SubjectId = subject,
            PlanId = "pro",
            TimeZone = calendarChanges ? "Asia/Tokyo" : "",
            BillingAnchorDay = calendarChanges ? 15 : 0,
        }));

        var first = await Check(_a, subject, 1);
        var cachedVersion = (long)await _a.Redis.HashGetAsync($"mtr:{{{subject}}}:sub", "v");
        var next = await Check(_a, subject, 1);
        await Track(_b, subject, 7);
        var tracked = await Remaining(_a, subject);

        Assert.Multiple(() =>
        {
            Assert.That(first.Limits[0].Used, Is.Zero);
            Assert.That(cachedVersion, Is.EqualTo(2), "the enrolment's cache write did not replace the change");
            Assert.That(next.PlanId, Is.EqualTo("pro"), "the change is in force on A's next call");
            Assert.That(next.Limits[0].Limit, Is.EqualTo(1000));
            Assert.That(next.Limits[0].Used, Is.Zero);
            Assert.That(tracked.Used, Is.EqualTo(7), "the counter of the new calendar follows the ledger");
        });
    }

    [Test]
    public async Task FirstChecks_RacingTrackUsageOnAnotherInstance_EndWithEveryCounterEqualToTheLedger()
    {
        var subjects = Enumerable.Range(0, 40).Select(_ => NewSubject()).ToList();

        await Task.WhenAll(subjects.SelectMany(subject => new Task[] { Check(_a, subject, 1), Track(_b, subject, 3) }));
        foreach (var subject in subjects)
        {
            await LedgerProbe.OutboxDrainedAsync(_a, subject);
        }

        var used = await Task.WhenAll(subjects.Select(async subject => (await Remaining(_a, subject)).Used));
        var counters = await Task.WhenAll(subjects.Select(subject => LedgerProbe.CountersAsync(_a, subject, Minutes)));

        Assert.Multiple(() =>
        {
            Assert.That(used, Has.All.EqualTo(3));
            Assert.That(counters.Select(c => c.Single().Total), Has.All.EqualTo(3L));
        });
    }

    private static string NewSubject() => $"first-{Guid.NewGuid():N}";

    private static async Task<CheckLimitResponse> Check(MeteringHost host, string subject, long amount) =>
        await host.Metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = subject, Usage = { new UsageAmount { UsageType = Minutes, Amount = amount } } });

    private static async Task<LimitStatus> Remaining(MeteringHost host, string subject) =>
        (await host.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } })).Limits.Single();

    private static async Task Track(MeteringHost host, string subject, long amount) =>
        await host.Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = Guid.NewGuid().ToString("N"),
            Usage = { new UsageAmount { UsageType = Minutes, Amount = amount } },
        });

    private static async Task<bool> EventuallyUsedAsync(MeteringHost host, string subject, long used, TimeSpan within)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < within)
        {
            if ((await Remaining(host, subject)).Used == used)
            {
                return true;
            }

            await Task.Delay(50);
        }

        return false;
    }

    private async Task<IReadOnlyList<RedisKey>> CounterKeysAsync(string subject) =>
        await LedgerProbe.KeysAsync(_a.Services.GetRequiredService<IConnectionMultiplexer>(), $"mtr:{{{subject}}}:c:*");

    private async Task ForgetCountersAsync(string subject)
    {
        foreach (var key in await CounterKeysAsync(subject))
        {
            await _a.Redis.KeyDeleteAsync(key);
        }
    }

    /// <summary>The store of record, running an action right after it committed the enrolment of a chosen subject.</summary>
    private sealed class EnrolmentPause(ISubscriptionStore inner) : ISubscriptionStore
    {
        private readonly ConcurrentDictionary<string, Func<Task>> _after = new(StringComparer.Ordinal);

        public void After(string subjectId, Func<Task> action) => _after[subjectId] = action;

        public async Task<SubscriptionOfRecord> GetOrEnrollAsync(string subjectId, string defaultPlanId, Instant now, CancellationToken cancellationToken)
        {
            var read = await inner.GetOrEnrollAsync(subjectId, defaultPlanId, now, cancellationToken);
            if (read.Enrolled && _after.TryRemove(subjectId, out var action))
            {
                await action();
            }

            return read;
        }

        public Task<Core.Ports.SubscriptionChange> SaveAsync(string subjectId, string planId, BillingCalendar calendar, Instant now, CancellationToken cancellationToken) =>
            inner.SaveAsync(subjectId, planId, calendar, now, cancellationToken);
    }
}
