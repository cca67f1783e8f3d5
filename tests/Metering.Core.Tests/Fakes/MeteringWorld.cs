using System.Diagnostics.Metrics;
using Metering.Core.Catalog;
using Metering.Core.Subscriptions;
using Metering.Core.Telemetry;
using Metering.Core.Usage;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using NodaTime;

namespace Metering.Core.Tests.Fakes;

/// <summary>
/// The domain's use cases wired as the server wires them, on one in-memory store of record and one in-memory shared
/// cache, with a fake clock. <see cref="NewInstance"/> adds another service instance on the same stores.
/// </summary>
internal sealed class MeteringWorld : IDisposable
{
    /// <summary>Mid-month, mid-day, so that no test crosses a period by accident.</summary>
    public static readonly DateTimeOffset Start = new(2026, 3, 14, 12, 0, 0, TimeSpan.Zero);

    private readonly List<MeteringInstance> _instances = [];

    public MeteringWorld(PlanCatalog? catalog = null)
    {
        Clock = new FakeTimeProvider(Start);
        Database = new InMemoryDatabase(Clock, catalog ?? TestCatalog.Create());
        Cache = new InMemoryCache();
    }

    public FakeTimeProvider Clock { get; }

    public InMemoryDatabase Database { get; }

    public InMemoryCache Cache { get; }

    public Instant Now => Instant.FromDateTimeOffset(Clock.GetUtcNow());

    /// <summary>A started service instance (its catalog loaded), sharing the stores with every other.</summary>
    public async Task<MeteringInstance> NewInstance()
    {
        var instance = new MeteringInstance(this);
        await instance.Catalog.InitializeAsync(CancellationToken.None);
        _instances.Add(instance);
        return instance;
    }

    public void Dispose()
    {
        foreach (var instance in _instances)
        {
            instance.Dispose();
        }
    }
}

/// <summary>One service instance: the real Core types, on the world's stores.</summary>
internal sealed class MeteringInstance : IDisposable
{
    private readonly TestMeterFactory _meters = new();

    public MeteringInstance(MeteringWorld world)
    {
        var settings = new MeteringSettings();
        Catalog = new CatalogDirectory(world.Database, world.Cache, settings, world.Clock, NullLogger<CatalogDirectory>.Instance);
        Subscriptions = new SubscriptionDirectory(world.Database, world.Cache, world.Cache, Catalog, settings, world.Clock, NullLogger<SubscriptionDirectory>.Instance);
        Counters = new CounterCache(world.Cache, world.Database, new MeteringMetrics(_meters), world.Clock, NullLogger<CounterCache>.Instance);
        var context = new CallContext(Catalog, Subscriptions);
        var recorder = new EventRecorder(world.Database, Counters, context, world.Clock);
        Meter = new UsageMeter(context, recorder, world.Database, Counters, Catalog, settings, world.Clock);
        Corrections = new UsageCorrections(context, recorder, world.Clock);
        Auditor = new CounterAuditor(Subscriptions, world.Database, world.Cache, Catalog, world.Clock);
        Sync = new CounterSync(world.Database, world.Cache, Subscriptions, Catalog);
    }

    public CatalogDirectory Catalog { get; }

    public SubscriptionDirectory Subscriptions { get; }

    public CounterCache Counters { get; }

    public UsageMeter Meter { get; }

    public UsageCorrections Corrections { get; }

    public CounterAuditor Auditor { get; }

    public CounterSync Sync { get; }

    public void Dispose()
    {
        Catalog.Dispose();
        _meters.Dispose();
    }

    private sealed class TestMeterFactory : IMeterFactory
    {
        private readonly List<Meter> _meters = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options);
            _meters.Add(meter);
            return meter;
        }

        public void Dispose()
        {
            foreach (var meter in _meters)
            {
                meter.Dispose();
            }
        }
    }
}
