using Metering.Core.Ports;
using NodaTime;

namespace Metering.Storage.Contract;

/// <summary>
/// One way of storing what the ports describe. Every concrete subclass in this assembly runs every contract fixture
/// (see <see cref="StorageBackends"/>): adding a backend is adding one class.
/// </summary>
public abstract class StorageBackend
{
    /// <summary>The name the fixtures show, e.g. <c>postgres-redis</c>.</summary>
    public abstract string Name { get; }

    /// <summary>A fresh set of the ports that sees nothing another set wrote, except through shared ids the tests make unique.</summary>
    public abstract Task<StoragePorts> CreateAsync(CancellationToken cancellationToken);

    public override string ToString() => Name;
}

/// <summary>
/// The ports of one backend, and the two things a test needs besides them: letting time pass on the ledger's clock
/// (real time by default; a backend with a controllable clock advances it instead) and giving it all back.
/// </summary>
public sealed record StoragePorts(
    IUsageLedger Ledger,
    ICounterStore Counters,
    ISubscriptionStore Subscriptions,
    ISubscriptionCache SubscriptionCache,
    ICatalogStore Catalog,
    ICatalogVersionCache CatalogVersions,
    IHistoryStore History) : IAsyncDisposable
{
    /// <summary>Lets <c>duration</c> pass on the clock the ledger judges hold expiry by.</summary>
    public Func<Duration, Task> LetTimePassAsync { get; init; } = duration => Task.Delay(duration.ToTimeSpan());

    /// <summary>Releases what <see cref="StorageBackend.CreateAsync"/> made.</summary>
    public Func<ValueTask> OnDisposeAsync { get; init; } = () => ValueTask.CompletedTask;

    public ValueTask DisposeAsync() => OnDisposeAsync();
}

/// <summary>Every backend in this assembly: the source of every contract fixture, each in a test category named after it.</summary>
public static class StorageBackends
{
    public static IEnumerable<TestFixtureData> All() =>
        typeof(StorageBackend).Assembly.GetTypes()
            .Where(t => t.IsSubclassOf(typeof(StorageBackend)) && !t.IsAbstract)
            .Select(t => (StorageBackend)Activator.CreateInstance(t)!)
            .OrderBy(b => b.Name, StringComparer.Ordinal)
            .Select(Fixture);

    private static TestFixtureData Fixture(StorageBackend backend)
    {
        var fixture = new TestFixtureData(backend).SetArgDisplayNames(backend.Name);
        fixture.Properties.Add(NUnit.Framework.Internal.PropertyNames.Category, backend.Name);
        return fixture;
    }
}
