using Metering.Core.Subscriptions;
using NodaTime;

namespace Metering.Storage.Contract;

/// <summary>
/// The contracts of <see cref="Core.Ports.ISubscriptionCache"/> and <see cref="Core.Ports.ICatalogVersionCache"/>:
/// shared by every instance, each keeps the highest version it is given.
/// </summary>
[TestFixtureSource(typeof(StorageBackends), nameof(StorageBackends.All))]
public sealed class CacheContract(StorageBackend backend) : ContractFixture(backend)
{
    [Test]
    public async Task Subscription_cache_of_an_unknown_subject_is_empty()
    {
        Assert.That(await Ports.SubscriptionCache.GetAsync(NewId("subject"), Token), Is.Null);
    }

    [Test]
    public async Task Subscription_cache_returns_what_was_put()
    {
        var subscription = Subscription(NewId("subject"), "pro", version: 3);

        await Ports.SubscriptionCache.PutAsync(subscription, Token);

        Assert.That(await Ports.SubscriptionCache.GetAsync(subscription.SubjectId, Token), Is.EqualTo(subscription));
    }

    [Test]
    public async Task Subscription_cache_put_is_kept_only_when_newer()
    {
        var subject = NewId("subject");
        await Ports.SubscriptionCache.PutAsync(Subscription(subject, "pro", version: 5), Token);

        await Ports.SubscriptionCache.PutAsync(Subscription(subject, "free", version: 4), Token);
        var afterOlder = await Ports.SubscriptionCache.GetAsync(subject, Token);
        await Ports.SubscriptionCache.PutAsync(Subscription(subject, "team", version: 5), Token);
        var afterSame = await Ports.SubscriptionCache.GetAsync(subject, Token);
        await Ports.SubscriptionCache.PutAsync(Subscription(subject, "enterprise", version: 6, timeZone: "Asia/Tokyo"), Token);
        var afterNewer = await Ports.SubscriptionCache.GetAsync(subject, Token);

        Assert.Multiple(() =>
        {
            Assert.That(afterOlder!.PlanId, Is.EqualTo("pro"), "an older write landing late changes nothing");
            Assert.That(afterSame!.PlanId, Is.EqualTo("pro"));
            Assert.That(afterNewer, Is.EqualTo(Subscription(subject, "enterprise", version: 6, timeZone: "Asia/Tokyo")));
        });
    }

    [Test]
    public async Task Subscription_cache_concurrent_puts_converge_on_the_newest()
    {
        var subject = NewId("subject");

        await Task.WhenAll(Enumerable.Range(1, 20).OrderBy(_ => Random.Shared.Next())
            .Select(v => Ports.SubscriptionCache.PutAsync(Subscription(subject, $"plan-{v}", version: v), Token)));

        Assert.That((await Ports.SubscriptionCache.GetAsync(subject, Token))!.Version, Is.EqualTo(20));
    }

    [Test]
    public async Task Catalog_version_cache_of_an_unknown_catalog_is_empty()
    {
        Assert.That(await Ports.CatalogVersions.GetAsync(NewId("catalog"), Token), Is.Null);
    }

    [Test]
    public async Task Catalog_version_cache_only_moves_up()
    {
        var catalog = NewId("catalog");
        await Ports.CatalogVersions.PutAsync(catalog, 7, Token);

        await Ports.CatalogVersions.PutAsync(catalog, 6, Token);
        var afterOlder = await Ports.CatalogVersions.GetAsync(catalog, Token);
        await Ports.CatalogVersions.PutAsync(catalog, 8, Token);

        Assert.Multiple(async () =>
        {
            Assert.That(afterOlder, Is.EqualTo(7));
            Assert.That(await Ports.CatalogVersions.GetAsync(catalog, Token), Is.EqualTo(8));
        });
    }

    [Test]
    public async Task Catalog_version_cache_keeps_catalogs_apart()
    {
        var first = NewId("catalog");
        var second = NewId("catalog");

        await Ports.CatalogVersions.PutAsync(first, 3, Token);

        Assert.That(await Ports.CatalogVersions.GetAsync(second, Token), Is.Null);
    }

    private static Subscription Subscription(string subject, string plan, long version, string timeZone = "UTC") =>
        new(subject, plan, 1, timeZone, Instant.FromUtc(2026, 11, 18, 12, 0), version);
}
