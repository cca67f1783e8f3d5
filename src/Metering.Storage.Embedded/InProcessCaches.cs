using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;

namespace Metering.Storage.Embedded;

/// <summary>
/// The counters in this process, with the semantics of the Redis scripts (check.lua, apply.lua, fence.lua,
/// create_empty.lua): a counter only moves to a higher version, a fence empties it but keeps the fence as its version,
/// a fenced or missing counter reads as missing, so it is rebuilt from the ledger, and an empty one is created only
/// where none exists. One lock makes every method atomic. Nothing is lost with
/// the process that the ledger does not have: after a restart every counter is rebuilt on its first read.
/// </summary>
public sealed class InProcessCounterStore : ICounterStore
{
    private readonly Lock _lock = new();
    private readonly Dictionary<CounterKey, Entry> _counters = [];

    public Task<CounterCheckResult> CheckAsync(CounterCheck check, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var missing = new List<CounterKey>();
            var readings = new CounterReading[check.Lines.Count];
            for (var i = 0; i < check.Lines.Count; i++)
            {
                if (_counters.TryGetValue(check.Lines[i].Key, out var entry) && entry.Total is { } total)
                {
                    readings[i] = new CounterReading(total, entry.Held ?? 0);
                }
                else
                {
                    missing.Add(check.Lines[i].Key);
                }
            }

            return Task.FromResult(missing.Count > 0 ? CounterCheckResult.MissingCounters(missing) : new CounterCheckResult([], readings));
        }
    }

    public Task<int> CreateEmptyAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var created = 0;
            foreach (var key in keys)
            {
                if (_counters.TryAdd(key, new Entry(0, 0, 0)))
                {
                    created++;
                }
            }

            return Task.FromResult(created);
        }
    }

    public Task ApplyAsync(IReadOnlyList<CounterValue> values, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            foreach (var value in values)
            {
                if (!_counters.TryGetValue(value.Key, out var cached) || cached.Version < value.Version)
                {
                    _counters[value.Key] = new Entry(value.Total, value.Held, value.Version);
                }
            }
        }

        return Task.CompletedTask;
    }

    public Task FenceAsync(IReadOnlyList<CounterKey> keys, long fence, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            foreach (var key in keys)
            {
                if (!_counters.TryGetValue(key, out var cached) || cached.Version < fence)
                {
                    _counters[key] = new Entry(null, null, fence);
                }
            }
        }

        return Task.CompletedTask;
    }

    public Task<CounterSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult(_counters.TryGetValue(key, out var entry)
                ? new CounterSnapshot(entry.Total, entry.Held, entry.Version)
                : new CounterSnapshot(null, null, null));
        }
    }

    public Task EvictAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            foreach (var key in keys)
            {
                _counters.Remove(key);
            }
        }

        return Task.CompletedTask;
    }

    private readonly record struct Entry(long? Total, long? Held, long Version);
}

/// <summary>Subscriptions cached in this process; a write never replaces a newer version (put_if_newer.lua).</summary>
public sealed class InProcessSubscriptionCache : ISubscriptionCache
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);

    public Task<Subscription?> GetAsync(string subjectId, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult(_subscriptions.GetValueOrDefault(subjectId));
        }
    }

    public Task PutAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!_subscriptions.TryGetValue(subscription.SubjectId, out var cached) || cached.Version < subscription.Version)
            {
                _subscriptions[subscription.SubjectId] = subscription;
            }
        }

        return Task.CompletedTask;
    }
}

/// <summary>The catalog version in this process; it only moves up.</summary>
public sealed class InProcessCatalogVersionCache : ICatalogVersionCache
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, long> _versions = new(StringComparer.Ordinal);

    public Task<long?> GetAsync(string catalogId, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult<long?>(_versions.TryGetValue(catalogId, out var version) ? version : null);
        }
    }

    public Task PutAsync(string catalogId, long version, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!_versions.TryGetValue(catalogId, out var cached) || cached < version)
            {
                _versions[catalogId] = version;
            }
        }

        return Task.CompletedTask;
    }
}
