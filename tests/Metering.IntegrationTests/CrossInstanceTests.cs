using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;
using static Metering.IntegrationTests.PlanAdminTests;

namespace Metering.IntegrationTests;

/// <summary>
/// Two instances of the service on the same PostgreSQL and Redis: a change made through one returns only when the
/// other decides with it on its very next call.
/// </summary>
public sealed class CrossInstanceTests
{
    private static readonly DateTimeOffset Start = new(2026, 11, 18, 12, 0, 0, TimeSpan.Zero);

    private MeteringHost _a = null!;
    private MeteringHost _b = null!;

    [SetUp]
    public async Task StartTwoInstancesAsync()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("two_instances");
        _a = await MeteringHost.StartAsync(Start, database);
        _b = await MeteringHost.StartAsync(Start, database);
    }

    [TearDown]
    public async Task StopAsync()
    {
        await _a.DisposeAsync();
        await _b.DisposeAsync();
    }

    [Test]
    public async Task UpsertPlan_OnOneInstance_TheOtherDecidesWithTheNewLimitsOnItsNextCall()
    {
        var subject = $"user-{Guid.NewGuid():N}";
        await _a.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await Track(_b, subject, Minutes, 100);
        Assert.That((await Check(_b, subject, Minutes, 100)).Allowed, Is.True, "B has the old plan loaded and warm");

        // Downgrade the plan on A; B's very next call must deny with the new limit.
        var downgrade = await _a.Admin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "starter", DisplayName = "Starter", Rank = 1, Limits = { Limit(Minutes, 120), Limit(Interviews, 3) } });
        var denied = await Check(_b, subject, Minutes, 100);

        // Upgrade it again on B; A's very next call must allow.
        var upgrade = await _b.Admin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "starter", DisplayName = "Starter", Rank = 1, Limits = { Limit(Minutes, 600), Limit(Interviews, 3) } });
        var allowed = await Check(_a, subject, Minutes, 100);

        Assert.Multiple(() =>
        {
            Assert.That(denied.PlanVersion, Is.EqualTo(downgrade.CatalogVersion), "B decided with the version A just wrote");
            Assert.That(allowed.PlanVersion, Is.EqualTo(upgrade.CatalogVersion), "A decided with the version B just wrote");
            Assert.That(denied.Allowed, Is.False);
            Assert.That(denied.Limits[0].Limit, Is.EqualTo(120));
            Assert.That(denied.Limits[0].Remaining, Is.EqualTo(20));
            Assert.That(allowed.Allowed, Is.True);
            Assert.That(allowed.Limits[0].Limit, Is.EqualTo(600));
        });
    }

    [Test]
    public async Task RepeatedPlanChanges_AlternatingInstances_AreSeenImmediatelyEveryTime()
    {
        var subject = $"user-{Guid.NewGuid():N}";
        await _a.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" });

        for (var i = 0; i < 20; i++)
        {
            var (writer, reader) = i % 2 == 0 ? (_a, _b) : (_b, _a);
            var limit = 500 + i;
            await writer.Admin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "pro", DisplayName = "Pro", Rank = 2, Limits = { Limit(Minutes, limit) } });

            var status = (await reader.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } })).Limits.Single();

            Assert.That(status.Limit, Is.EqualTo(limit), $"change {i}: the other instance decided with an old plan");
        }
    }

    [Test]
    public async Task ConcurrentPlanChanges_OnBothInstances_GetDistinctVersions_AndBothInstancesEndOnTheLast()
    {
        var responses = await Task.WhenAll(Enumerable.Range(0, 20).Select(i =>
            (i % 2 == 0 ? _a : _b).Admin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "pro", DisplayName = "Pro", Rank = 2, Limits = { Limit(Minutes, 2000 + i) } }).ResponseAsync));

        var last = responses.MaxBy(r => r.CatalogVersion)!;
        var onA = (await _a.Admin.GetPlanAsync(new GetPlanRequest { PlanId = "pro" })).Plan;
        var onB = (await _b.Admin.GetPlanAsync(new GetPlanRequest { PlanId = "pro" })).Plan;

        Assert.Multiple(() =>
        {
            Assert.That(responses.Select(r => r.CatalogVersion), Is.Unique);
            Assert.That(onA.Version, Is.EqualTo(last.CatalogVersion));
            Assert.That(onB.Version, Is.EqualTo(last.CatalogVersion));
            Assert.That(onA.Limits.Single(l => l.UsageType == Minutes).Limit, Is.EqualTo(last.Plan.Limits.Single(l => l.UsageType == Minutes).Limit));
            Assert.That(onB.Limits.Single(l => l.UsageType == Minutes).Limit, Is.EqualTo(last.Plan.Limits.Single(l => l.UsageType == Minutes).Limit));
        });
    }

    [Test]
    public async Task NewPlanAndUsageType_CreatedOnOneInstance_AreUsableOnTheOtherAtOnce()
    {
        var subject = $"user-{Guid.NewGuid():N}";

        await _a.Admin.UpsertUsageTypeAsync(new UpsertUsageTypeRequest { Name = "coding_tasks_per_day", Unit = "task", ResetPeriod = ResetPeriod.Day });
        await _a.Admin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "team", DisplayName = "Team", Rank = 10, Limits = { Limit("coding_tasks_per_day", 5), Limit(Minutes, 2000) } });
        await _b.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "team" });
        var tracked = await _b.Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "task-1",
            Usage = { new UsageAmount { UsageType = "coding_tasks_per_day", Amount = 2 } },
            Enforce = true,
        });

        Assert.Multiple(() =>
        {
            Assert.That(tracked.Limits[0].Limit, Is.EqualTo(5));
            Assert.That(tracked.Limits[0].Remaining, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task SetSubscription_OnOneInstance_TheOtherDecidesWithTheNewPlanOnItsNextCall()
    {
        var subject = $"user-{Guid.NewGuid():N}";
        await _a.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" });
        await Track(_a, subject, Minutes, 500);
        Assert.That((await Check(_b, subject, Minutes, 100)).Allowed, Is.True);

        await _a.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        var status = (await _b.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } })).Limits.Single();

        Assert.Multiple(() =>
        {
            Assert.That(status.Limit, Is.EqualTo(300));
            Assert.That(status.Remaining, Is.Zero, "downgraded below what is used: 0, never negative");
        });
    }

    [Test]
    public async Task CatalogVersionMissingFromRedis_IsReadFromPostgres_AndChangesStillApply()
    {
        var subject = $"user-{Guid.NewGuid():N}";
        await _a.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await _a.Admin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "starter", DisplayName = "Starter", Rank = 1, Limits = { Limit(Minutes, 42) } });

        // Lose the shared version (eviction, flush): B must still find the change, from the store of record.
        foreach (var key in await CatalogVersionKeysAsync())
        {
            await _a.Redis.KeyDeleteAsync(key);
        }

        await _a.Admin.UpsertPlanAsync(new UpsertPlanRequest { PlanId = "starter", DisplayName = "Starter", Rank = 1, Limits = { Limit(Minutes, 43) } });
        foreach (var key in await CatalogVersionKeysAsync())
        {
            await _a.Redis.KeyDeleteAsync(key);
        }

        var status = (await _b.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } })).Limits.Single();

        Assert.That(status.Limit, Is.EqualTo(43));
    }

    private async Task<List<StackExchange.Redis.RedisKey>> CatalogVersionKeysAsync()
    {
        var keys = new List<StackExchange.Redis.RedisKey>();
        var cursor = 0L;
        do
        {
            var result = (StackExchange.Redis.RedisResult[])(await _a.Redis.ExecuteAsync("SCAN", cursor, "MATCH", "mtr:catalog:*", "COUNT", 1000))!;
            cursor = long.Parse((string)result[0]!, System.Globalization.CultureInfo.InvariantCulture);
            keys.AddRange(((StackExchange.Redis.RedisResult[])result[1]!).Select(k => (StackExchange.Redis.RedisKey)(string)k!));
        }
        while (cursor != 0);
        return keys;
    }

    private static async Task<CheckLimitResponse> Check(MeteringHost host, string subject, string usageType, long amount) =>
        await host.Metering.CheckLimitAsync(new CheckLimitRequest { SubjectId = subject, Usage = { new UsageAmount { UsageType = usageType, Amount = amount } } });
}
