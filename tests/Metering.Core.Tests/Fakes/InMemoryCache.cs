using Metering.Core.Errors;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;

namespace Metering.Core.Tests.Fakes;

/// <summary>
/// The shared cache, in memory: counters, subscriptions and the catalog version, each kept only at a higher version,
/// as the Redis scripts do. <see cref="Flush"/> loses everything (a FLUSHALL, a restart); while <see cref="Down"/>,
/// every call throws <see cref="StoreUnavailableException"/>.
/// </summary>
internal sealed class InMemoryCache : ICounterStore, ISubscriptionCache, ICatalogVersionCache
{
    private readonly Lock _lock = new();
    private readonly Dictionary<CounterKey, Counter> _counters = [];
    private readonly Dictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _catalogVersions = new(StringComparer.Ordinal);

    public bool Down { get; set; }

    public int CounterChecks { get; private set; }

    /// <summary>Every call made, as round trips to a server would be counted.</summary>
    public int Calls { get; private set; }

    public void Flush()
    {
        lock (_lock)
        {
            _counters.Clear();
            _subscriptions.Clear();
            _catalogVersions.Clear();
        }
    }

    /// <summary>Writes a counter by hand (as an operator with redis-cli could), whatever its version.</summary>
    public void Overwrite(CounterKey key, long total, long version)
    {
        lock (_lock)
        {
            _counters[key] = new Counter(total, 0, version);
        }
    }

    // ----- ICounterStore -----

    public Task<CounterCheckResult> CheckAsync(CounterCheck check, CancellationToken cancellationToken) => Run(() =>
    {
        CounterChecks++;
        if (check.Expected is { } expected
            && (!_subscriptions.TryGetValue(check.SubjectId, out var subscription) || subscription.Version > expected.Subscription
                || !_catalogVersions.TryGetValue(expected.CatalogId, out var catalog) || catalog > expected.Catalog))
        {
            return CounterCheckResult.StaleVersions;
        }

        var missing = check.Lines.Select(l => l.Key).Where(k => !_counters.TryGetValue(k, out var c) || c.Total is null).ToList();
        return missing.Count > 0
            ? CounterCheckResult.MissingCounters(missing)
            : new CounterCheckResult([], [.. check.Lines.Select(l => new CounterReading(_counters[l.Key].Total!.Value, _counters[l.Key].Held))]);
    });

    public Task<int> CreateEmptyAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken) => Run(() =>
        keys.Count(key => _counters.TryAdd(key, new Counter(0, 0, 0))));

    public Task ApplyAsync(IReadOnlyList<CounterValue> values, CancellationToken cancellationToken) => Run(() =>
    {
        foreach (var value in values)
        {
            if (!_counters.TryGetValue(value.Key, out var cached) || cached.Version < value.Version)
            {
                _counters[value.Key] = new Counter(value.Total, value.Held, value.Version);
            }
        }

        return values.Count;
    });

    public Task FenceAsync(IReadOnlyList<CounterKey> keys, long fence, CancellationToken cancellationToken) => Run(() =>
    {
        foreach (var key in keys)
        {
            if (!_counters.TryGetValue(key, out var cached) || cached.Version < fence)
            {
                _counters[key] = new Counter(null, 0, fence);
            }
        }

        return keys.Count;
    });

    public Task<CounterSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken) => Run(() =>
        _counters.TryGetValue(key, out var c) ? new CounterSnapshot(c.Total, c.Total is null ? null : c.Held, c.Version) : new CounterSnapshot(null, null, null));

    public Task EvictAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken) => Run(() => keys.Count(_counters.Remove));

    // ----- ISubscriptionCache -----

    public Task<Subscription?> GetAsync(string subjectId, CancellationToken cancellationToken) =>
        Run(() => _subscriptions.GetValueOrDefault(subjectId));

    public Task PutAsync(Subscription subscription, CancellationToken cancellationToken) => Run(() =>
    {
        if (!_subscriptions.TryGetValue(subscription.SubjectId, out var cached) || cached.Version < subscription.Version)
        {
            _subscriptions[subscription.SubjectId] = subscription;
        }

        return true;
    });

    // ----- ICatalogVersionCache -----

    Task<long?> ICatalogVersionCache.GetAsync(string catalogId, CancellationToken cancellationToken) =>
        Run(() => _catalogVersions.TryGetValue(catalogId, out var v) ? v : (long?)null);

    public Task PutAsync(string catalogId, long version, CancellationToken cancellationToken) => Run(() =>
    {
        _catalogVersions[catalogId] = Math.Max(version, _catalogVersions.GetValueOrDefault(catalogId));
        return true;
    });

    private Task<T> Run<T>(Func<T> body)
    {
        lock (_lock)
        {
            Calls++;
            if (Down)
            {
                throw new StoreUnavailableException(StoreUnavailableException.Counter, new TimeoutException("The cache is down."));
            }

            return Task.FromResult(body());
        }
    }

    /// <summary>A cached counter; a fenced one keeps only its version (<see cref="Total"/> null reads as missing).</summary>
    private sealed record Counter(long? Total, long Held, long Version);
}
