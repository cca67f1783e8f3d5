using Metering.Storage.Embedded;
using Microsoft.Extensions.Logging.Abstractions;

namespace Metering.Storage.Contract;

/// <summary>
/// The embedded backend: every port on a new SQLite file in a temp folder, counters and caches in process. Its ledger
/// keeps time on a clock the suite can move forward (real time plus every jump), so expiry is tested without waiting.
/// </summary>
public sealed class EmbeddedBackend : StorageBackend
{
    public override string Name => "embedded";

    public override async Task<StoragePorts> CreateAsync(CancellationToken cancellationToken)
    {
        var directory = Path.Combine(Path.GetTempPath(), $"metering-contract-{Guid.NewGuid():N}");
        var clock = new JumpingClock();
        var database = new EmbeddedDatabase(
            new EmbeddedStorageOptions { Path = Path.Combine(directory, "metering.db") },
            CatalogSeedSource.Empty,
            NullLogger<EmbeddedDatabase>.Instance);
        await database.OpenAsync(cancellationToken);
        return new StoragePorts(
            new EmbeddedUsageLedger(database, clock),
            new InProcessCounterStore(),
            new EmbeddedSubscriptionStore(database, clock),
            new InProcessSubscriptionCache(),
            new EmbeddedCatalogStore(database),
            new InProcessCatalogVersionCache(),
            new EmbeddedHistoryStore(database))
        {
            LetTimePassAsync = duration =>
            {
                clock.Jump(duration.ToTimeSpan());
                return Task.CompletedTask;
            },
            OnDisposeAsync = () =>
            {
                database.Dispose();
                Directory.Delete(directory, recursive: true);
                return ValueTask.CompletedTask;
            },
        };
    }

    /// <summary>The system clock moved forward by every <see cref="Jump"/> so far.</summary>
    private sealed class JumpingClock : TimeProvider
    {
        private long _offsetTicks;

        public void Jump(TimeSpan by) => Interlocked.Add(ref _offsetTicks, by.Ticks);

        public override DateTimeOffset GetUtcNow() => System.GetUtcNow() + TimeSpan.FromTicks(Interlocked.Read(ref _offsetTicks));
    }
}
