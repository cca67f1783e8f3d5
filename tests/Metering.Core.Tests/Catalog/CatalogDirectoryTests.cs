using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Periods;
using Metering.Core.Ports;
using Microsoft.Extensions.Logging.Abstractions;
using NodaTime;

namespace Metering.Core.Tests.Catalog;

public sealed class CatalogDirectoryTests
{
    private FakeCatalogStore _store = null!;
    private FakeVersionCache _cache = null!;
    private CatalogDirectory _directory = null!;

    [SetUp]
    public async Task SetUpAsync()
    {
        _store = new FakeCatalogStore();
        _cache = new FakeVersionCache();
        _directory = new CatalogDirectory(_store, _cache, new MeteringSettings(), TimeProvider.System, NullLogger<CatalogDirectory>.Instance);
        await _directory.InitializeAsync(CancellationToken.None);
    }

    [TearDown]
    public void TearDown() => _directory.Dispose();

    [Test]
    public async Task InitializeAsync_PublishesTheLoadedVersion() =>
        Assert.That(await _cache.GetAsync("cat", CancellationToken.None), Is.EqualTo(1));

    [Test]
    public async Task RefreshAsync_SharedVersionNotNewer_DoesNotReload()
    {
        var catalog = await _directory.RefreshAsync(CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(catalog.Version, Is.EqualTo(1));
            Assert.That(_store.Loads, Is.EqualTo(1), "only the start-up load");
        });
    }

    [Test]
    public async Task RefreshAsync_SharedVersionNewer_ReloadsBeforeAnswering()
    {
        _store.Change(minutes: 42);
        await _cache.PutAsync("cat", 2, CancellationToken.None);

        var catalog = await _directory.RefreshAsync(CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(catalog.Version, Is.EqualTo(2));
            Assert.That(catalog.GetPlan("basic").LimitFor("minutes"), Is.EqualTo(42));
            Assert.That(_directory.Current, Is.SameAs(catalog));
        });
    }

    [Test]
    public async Task RefreshAsync_ManyCallersAtOnce_ReloadOnce()
    {
        _store.Change(minutes: 42);
        _store.LoadDelay = TimeSpan.FromMilliseconds(100);
        await _cache.PutAsync("cat", 2, CancellationToken.None);

        var catalogs = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => Task.Run(() => _directory.RefreshAsync(CancellationToken.None))));

        Assert.Multiple(() =>
        {
            Assert.That(catalogs.Select(c => c.Version), Is.All.EqualTo(2));
            Assert.That(_store.Loads, Is.EqualTo(2), "start-up plus one reload");
        });
    }

    [Test]
    public async Task RefreshAsync_SharedVersionMissing_ReadsTheStoreAndPutsItBack()
    {
        _store.Change(minutes: 42);
        _cache.Clear();

        var catalog = await _directory.RefreshAsync(CancellationToken.None);

        Assert.Multiple(async () =>
        {
            Assert.That(catalog.Version, Is.EqualTo(2));
            Assert.That(await _cache.GetAsync("cat", CancellationToken.None), Is.EqualTo(2));
        });
    }

    [Test]
    public async Task RefreshAsync_CacheDown_ReadsTheVersionFromTheStore()
    {
        _store.Change(minutes: 42);
        _cache.Down = true;

        var catalog = await _directory.RefreshAsync(CancellationToken.None);

        Assert.That(catalog.Version, Is.EqualTo(2));
    }

    [Test]
    public async Task RefreshAsync_CacheAndStoreDown_DecidesWithTheLoadedCatalog()
    {
        _cache.Down = true;
        _store.Down = true;

        var catalog = await _directory.RefreshAsync(CancellationToken.None);

        Assert.That(catalog.Version, Is.EqualTo(1));
    }

    [Test]
    public async Task UpsertPlanAsync_PublishesTheNewVersionAndUsesItAtOnce()
    {
        var (plan, version) = await _directory.UpsertPlanAsync(
            new UpsertPlanCommand("basic", "Basic", 0, [new LimitRequest("minutes", 7)]),
            CancellationToken.None);

        Assert.Multiple(async () =>
        {
            Assert.That(version, Is.EqualTo(2));
            Assert.That(plan.LimitFor("minutes"), Is.EqualTo(7));
            Assert.That(await _cache.GetAsync("cat", CancellationToken.None), Is.EqualTo(2));
            Assert.That(_directory.Current.Version, Is.EqualTo(2));
        });
    }

    [Test]
    public void UpsertPlanAsync_CacheDownAfterTheCommit_FailsSoTheCallerRetries()
    {
        _cache.FailPuts = true;

        Assert.ThrowsAsync<StoreUnavailableException>(() => _directory.UpsertPlanAsync(
            new UpsertPlanCommand("basic", "Basic", 0, [new LimitRequest("minutes", 7)]),
            CancellationToken.None));
    }

    [Test]
    public void UpsertPlanAsync_Invalid_ChangesNothing()
    {
        var error = Assert.ThrowsAsync<InvalidRequestException>(() => _directory.UpsertPlanAsync(
            new UpsertPlanCommand("basic", "Basic", 0, [new LimitRequest("hours", 7), new LimitRequest("minutes", -5)]),
            CancellationToken.None))!;

        Assert.Multiple(() =>
        {
            Assert.That(error.Violations.Select(v => v.Field), Is.EqualTo(new[] { "limits[0].usage_type", "limits[1].limit" }));
            Assert.That(_store.Version, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task RefreshAsync_SharedVersionOlderThanTheLoadedOne_KeepsTheNewerCatalog()
    {
        await _directory.UpsertPlanAsync(new UpsertPlanCommand("basic", "Basic", 0, [new LimitRequest("minutes", 7)]), CancellationToken.None);
        _cache.Clear();
        await _cache.PutAsync("cat", 1, CancellationToken.None); // a late write of an older version
        var loads = _store.Loads;

        var catalog = await _directory.RefreshAsync(CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(catalog.Version, Is.EqualTo(2));
            Assert.That(catalog.GetPlan("basic").LimitFor("minutes"), Is.EqualTo(7));
            Assert.That(_store.Loads, Is.EqualTo(loads), "no reload to an older catalog");
        });
    }

    [Test]
    public void DeletePlanAsync_DefaultPlan_IsRefused() =>
        Assert.ThrowsAsync<PreconditionFailedException>(() => _directory.DeletePlanAsync("free", CancellationToken.None));

    [Test]
    public void UpsertUsageTypeAsync_ChangingTheResetPeriod_IsRefused()
    {
        var error = Assert.ThrowsAsync<InvalidRequestException>(() => _directory.UpsertUsageTypeAsync(
            new UpsertUsageTypeCommand("minutes", "minute", ResetPeriod.Day),
            CancellationToken.None))!;

        Assert.That(error.Violations.Single().Field, Is.EqualTo("reset_period"));
    }

    private sealed class FakeCatalogStore : ICatalogStore
    {
        private long _minutes = 30;

        public long Version { get; private set; } = 1;

        public int Loads { get; private set; }

        public bool Down { get; set; }

        public TimeSpan LoadDelay { get; set; }

        public void Change(long minutes)
        {
            _minutes = minutes;
            Version++;
        }

        public async Task<StoredCatalog> LoadAsync(CancellationToken cancellationToken)
        {
            Loads++;
            await Task.Delay(LoadDelay, cancellationToken);
            return new StoredCatalog("cat", new PlanCatalog(
                [new UsageType("minutes", "minute", ResetPeriod.Month)],
                [
                    new Plan("free", "Free", 0, new Dictionary<string, long> { ["minutes"] = 10 }),
                    new Plan("basic", "Basic", 1, new Dictionary<string, long> { ["minutes"] = _minutes }),
                ],
                Version));
        }

        public Task<long> GetVersionAsync(CancellationToken cancellationToken) =>
            Down ? throw new StoreUnavailableException("ledger", new TimeoutException()) : Task.FromResult(Version);

        public Task<long> SavePlanAsync(Plan plan, Instant now, CancellationToken cancellationToken)
        {
            Change(plan.LimitFor("minutes"));
            return Task.FromResult(Version);
        }

        public Task<long> DeletePlanAsync(string planId, Instant now, CancellationToken cancellationToken) => Task.FromResult(++Version);

        public Task<long> SaveUsageTypeAsync(UsageType usageType, Instant now, CancellationToken cancellationToken) => Task.FromResult(++Version);
    }

    private sealed class FakeVersionCache : ICatalogVersionCache
    {
        private long? _version;

        public bool Down { get; set; }

        public bool FailPuts { get; set; }

        public void Clear() => _version = null;

        public Task<long?> GetAsync(string catalogId, CancellationToken cancellationToken) =>
            Down ? throw new StoreUnavailableException("counter", new TimeoutException()) : Task.FromResult(_version);

        public Task PutAsync(string catalogId, long version, CancellationToken cancellationToken)
        {
            if (Down || FailPuts)
            {
                throw new StoreUnavailableException("counter", new TimeoutException());
            }

            _version = Math.Max(_version ?? 0, version);
            return Task.CompletedTask;
        }
    }
}
