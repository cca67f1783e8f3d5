using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Periods;

namespace Metering.Storage.Contract;

/// <summary>The contract of <see cref="Core.Ports.ICatalogStore"/>: every change bumps the catalog version and returns it.</summary>
[TestFixtureSource(typeof(StorageBackends), nameof(StorageBackends.All))]
public sealed class CatalogStoreContract(StorageBackend backend) : ContractFixture(backend)
{
    [Test]
    public async Task Catalog_every_change_returns_a_higher_version_that_load_reports()
    {
        var before = await Ports.Catalog.GetVersionAsync(Token);

        var afterType = await Ports.Catalog.SaveUsageTypeAsync(new UsageType(NewId("type"), "unit", ResetPeriod.Day), Now(), Token);
        var afterPlan = await Ports.Catalog.SavePlanAsync(new Plan(NewId("plan"), "P", 5, new Dictionary<string, long>()), Now(), Token);
        var loaded = await Ports.Catalog.LoadAsync(Token);

        Assert.Multiple(async () =>
        {
            Assert.That(afterType, Is.GreaterThan(before));
            Assert.That(afterPlan, Is.GreaterThan(afterType));
            Assert.That(await Ports.Catalog.GetVersionAsync(Token), Is.EqualTo(afterPlan));
            Assert.That(loaded.Catalog.Version, Is.EqualTo(afterPlan));
            Assert.That(loaded.CatalogId, Is.Not.Empty);
        });
    }

    [Test]
    public async Task Catalog_saved_plan_and_usage_type_load_as_saved()
    {
        var type = new UsageType(NewId("type"), "token", ResetPeriod.Month, DegradedPolicy.Deny);
        var plan = new Plan(NewId("plan"), "Team", 7, new Dictionary<string, long> { [type.Name] = 500, [Minutes] = -1 });

        await Ports.Catalog.SaveUsageTypeAsync(type, Now(), Token);
        var version = await Ports.Catalog.SavePlanAsync(plan, Now(), Token);
        var loaded = (await Ports.Catalog.LoadAsync(Token)).Catalog;

        Assert.Multiple(() =>
        {
            Assert.That(loaded.UsageTypes.Single(t => t.Name == type.Name), Is.EqualTo(type));
            var stored = loaded.Plans.Single(p => p.Id == plan.Id);
            Assert.That((stored.DisplayName, stored.Rank, stored.Version), Is.EqualTo(("Team", 7, version)));
            Assert.That(stored.Limits, Is.EquivalentTo(plan.Limits));
        });
    }

    [Test]
    public async Task Catalog_saving_a_plan_again_replaces_its_limits()
    {
        var id = NewId("plan");
        await Ports.Catalog.SavePlanAsync(new Plan(id, "Old", 1, new Dictionary<string, long> { [Minutes] = 10, [Calls] = 1 }), Now(), Token);

        await Ports.Catalog.SavePlanAsync(new Plan(id, "New", 2, new Dictionary<string, long> { [Minutes] = 20 }), Now(), Token);
        var stored = (await Ports.Catalog.LoadAsync(Token)).Catalog.Plans.Single(p => p.Id == id);

        Assert.Multiple(() =>
        {
            Assert.That(stored.DisplayName, Is.EqualTo("New"));
            Assert.That(stored.Limits, Is.EquivalentTo(new Dictionary<string, long> { [Minutes] = 20 }), "the whole set of limits is replaced");
        });
    }

    [Test]
    public async Task Catalog_delete_of_an_unused_plan_removes_it()
    {
        var id = NewId("plan");
        var saved = await Ports.Catalog.SavePlanAsync(new Plan(id, "Gone", 1, new Dictionary<string, long>()), Now(), Token);

        var deleted = await Ports.Catalog.DeletePlanAsync(id, Now(), Token);

        Assert.Multiple(async () =>
        {
            Assert.That(deleted, Is.GreaterThan(saved));
            Assert.That((await Ports.Catalog.LoadAsync(Token)).Catalog.Plans.Select(p => p.Id), Does.Not.Contain(id));
        });
    }

    [Test]
    public async Task Catalog_delete_of_an_unknown_plan_is_not_found_and_changes_no_version()
    {
        var before = await Ports.Catalog.GetVersionAsync(Token);

        Assert.ThrowsAsync<NotFoundException>(() => Ports.Catalog.DeletePlanAsync("no-such-plan", Now(), Token));

        Assert.That(await Ports.Catalog.GetVersionAsync(Token), Is.EqualTo(before));
    }

    [Test]
    public async Task Catalog_delete_of_a_plan_in_use_is_refused_and_keeps_it()
    {
        var id = NewId("plan");
        await Ports.Catalog.SavePlanAsync(new Plan(id, "Used", 1, new Dictionary<string, long>()), Now(), Token);
        await Ports.Subscriptions.SaveAsync(NewId("subject"), id, DefaultCalendar, Now(), Token);

        var error = Assert.ThrowsAsync<PreconditionFailedException>(() => Ports.Catalog.DeletePlanAsync(id, Now(), Token));

        Assert.Multiple(async () =>
        {
            Assert.That(error!.Reason, Is.EqualTo("PLAN_IN_USE"));
            Assert.That((await Ports.Catalog.LoadAsync(Token)).Catalog.Plans.Select(p => p.Id), Does.Contain(id));
        });
    }
}
