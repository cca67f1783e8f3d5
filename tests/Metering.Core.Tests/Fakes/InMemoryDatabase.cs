using System.Globalization;
using Metering.Core.Catalog;
using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using Metering.Core.Validation;
using NodaTime;

namespace Metering.Core.Tests.Fakes;

/// <summary>
/// The store of record, in memory: catalog, subscriptions, events, running totals and holds behind one lock (the
/// "subject lock" of every port contract), one version sequence for totals and fences, and an outbox. While
/// <see cref="Down"/>, every call throws <see cref="StoreUnavailableException"/>.
/// </summary>
internal sealed class InMemoryDatabase(TimeProvider clock, PlanCatalog catalog) :
    IUsageLedger, ISubscriptionStore, ICatalogStore
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Subject, string Key), StoredEvent> _events = [];
    private readonly Dictionary<CounterKey, (long Total, long Version)> _rows = [];
    private readonly Dictionary<(string Subject, string Reservation), StoredHold> _holds = [];
    private readonly List<OutboxEntry> _outbox = [];
    private PlanCatalog _catalog = catalog;
    private long _version;

    public const string CatalogId = "test-catalog";

    public bool Down { get; set; }

    public int RecordCalls { get; private set; }

    /// <summary>Every call made, as round trips to a server would be counted.</summary>
    public int Calls { get; private set; }

    /// <summary>Sets a running total row by hand, as a bug or an operator could: events and row then disagree.</summary>
    public void CorruptRow(CounterKey key, long total)
    {
        lock (_lock)
        {
            _rows[key] = (total, _rows.TryGetValue(key, out var row) ? row.Version : NextVersion());
        }
    }

    // ----- ICatalogStore -----

    public Task<StoredCatalog> LoadAsync(CancellationToken cancellationToken) =>
        Run(() => new StoredCatalog(CatalogId, _catalog));

    public Task<long> GetVersionAsync(CancellationToken cancellationToken) => Run(() => _catalog.Version);

    public Task<long> SavePlanAsync(Plan plan, Instant now, CancellationToken cancellationToken) =>
        Run(() => ChangeCatalog(_catalog.UsageTypes, [.. _catalog.Plans.Where(p => p.Id != plan.Id), plan]));

    public Task<long> DeletePlanAsync(string planId, Instant now, CancellationToken cancellationToken) => Run(() =>
    {
        if (!_catalog.TryGetPlan(planId, out _))
        {
            throw new NotFoundException("plan", planId);
        }

        if (_subscriptions.Values.Any(s => s.PlanId == planId))
        {
            throw new PreconditionFailedException("PLAN_IN_USE", $"Plan '{planId}' is in use.", new Dictionary<string, string>());
        }

        return ChangeCatalog(_catalog.UsageTypes, [.. _catalog.Plans.Where(p => p.Id != planId)]);
    });

    public Task<long> SaveUsageTypeAsync(UsageType usageType, Instant now, CancellationToken cancellationToken) =>
        Run(() => ChangeCatalog([.. _catalog.UsageTypes.Where(t => t.Name != usageType.Name), usageType], _catalog.Plans));

    // ----- ISubscriptionStore -----

    public Task<SubscriptionOfRecord> GetOrEnrollAsync(string subjectId, string defaultPlanId, Instant now, CancellationToken cancellationToken) => Run(() =>
    {
        var known = _subscriptions.ContainsKey(subjectId);
        return new SubscriptionOfRecord(Enrolled(subjectId, defaultPlanId, now), Enrolled: !known);
    });

    public Task<SubscriptionChange> SaveAsync(string subjectId, string planId, BillingCalendar calendar, Instant now, CancellationToken cancellationToken) => Run(() =>
    {
        var before = _subscriptions.GetValueOrDefault(subjectId);
        var saved = new Subscription(subjectId, planId, calendar.BillingAnchorDay, calendar.TimeZone, now, NextVersion());
        _subscriptions[subjectId] = saved;
        if (before is not null && before.Calendar != calendar)
        {
            // The totals of the old calendar's periods are dropped; they are rebuilt from the events on the next read.
            foreach (var key in _rows.Keys.Where(k => k.SubjectId == subjectId).ToList())
            {
                _rows.Remove(key);
            }
        }

        _outbox.Add(new OutboxEntry(null, subjectId, false));
        return new SubscriptionChange(saved, NextVersion());
    });

    // ----- IUsageLedger -----

    public Task<RecordOutcome> RecordAsync(UsageEvent usageEvent, CancellationToken cancellationToken) => Run<RecordOutcome>(() =>
    {
        RecordCalls++;
        if (_events.TryGetValue((usageEvent.SubjectId, usageEvent.IdempotencyKey), out var known))
        {
            return new RecordOutcome.AlreadyRecorded(known.Event.Fingerprint);
        }

        if (Enrolled(usageEvent.SubjectId, "free", usageEvent.RecordedAt).Calendar != usageEvent.Calendar)
        {
            return new RecordOutcome.CalendarChanged();
        }

        if (usageEvent.Kind == UsageEventKind.Reset)
        {
            var line = usageEvent.Lines[0];
            usageEvent = usageEvent with { Lines = [line with { Amount = -Total(line.Key).Total }] };
        }

        var reservation = string.IsNullOrEmpty(usageEvent.ReservationId) ? null : usageEvent.ReservationId;
        if (usageEvent.EnforcedLimits is { } limits)
        {
            var readings = usageEvent.Lines.Select(l => new CounterReading(Total(l.Key).Total, Held(l.Key, except: reservation))).ToList();
            if (!usageEvent.Lines.Select((l, i) => LimitRules.CanGrant(limits[i], readings[i].Used, readings[i].Reserved, l.Amount)).All(ok => ok))
            {
                return new RecordOutcome.Refused(readings);
            }
        }

        foreach (var line in usageEvent.Lines)
        {
            var total = Total(line.Key).Total + line.Amount;
            if (total > RequestValidator.MaxPeriodTotal)
            {
                return new RecordOutcome.TotalCeilingReached(line.Key.UsageType);
            }

            if (total < 0)
            {
                throw new PreconditionFailedException("USAGE_BELOW_ZERO", "Totals never go below zero.", new Dictionary<string, string>());
            }
        }

        _events[(usageEvent.SubjectId, usageEvent.IdempotencyKey)] = new StoredEvent(usageEvent);
        foreach (var line in usageEvent.Lines)
        {
            _rows[line.Key] = (Total(line.Key).Total + line.Amount, NextVersion());
        }

        var changed = usageEvent.Lines.Select(l => l.Key).ToList();
        if (reservation is not null && _holds.TryGetValue((usageEvent.SubjectId, reservation), out var hold) && Live(hold))
        {
            changed.AddRange(hold.Lines.Select(l => l.Key));
            _holds[(usageEvent.SubjectId, reservation)] = usageEvent.FinalSettle
                ? hold with { Ended = true }
                : hold with { Lines = [.. hold.Lines.Select(l => l with { Amount = Math.Max(0, l.Amount - usageEvent.Lines.Where(u => u.Key.UsageType == l.Key.UsageType).Sum(u => u.Amount)) })] };
        }

        return new RecordOutcome.Recorded(Changed(changed), usageEvent.Lines);
    });

    public Task<HoldOutcome> HoldAsync(HoldRequest request, CancellationToken cancellationToken) => Run<HoldOutcome>(() =>
    {
        if (Enrolled(request.SubjectId, "free", request.PlacedAt).Calendar != request.Calendar)
        {
            return new HoldOutcome.CalendarChanged();
        }

        var readings = request.Lines.Select(l => new CounterReading(Total(l.Key).Total, Held(l.Key, except: null))).ToList();
        var earlier = request.RequestId is null ? null : _holds.Values.FirstOrDefault(h => h.SubjectId == request.SubjectId && h.RequestId == request.RequestId);
        if (earlier is not null)
        {
            var same = earlier.Requested.Count == request.Lines.Count
                && request.Lines.All(l => earlier.Requested.Any(e => e.Key.UsageType == l.Key.UsageType && e.Amount == l.Amount));
            if (!same)
            {
                return new HoldOutcome.RequestIdConflict();
            }

            var live = Live(earlier);
            var withoutIt = readings.Select((r, i) => r with { Reserved = Math.Max(0, r.Reserved - (live ? request.Lines[i].Amount : 0)) }).ToList();
            return new HoldOutcome.Decided(withoutIt, live ? earlier.Placed with { Retried = true } : null, CounterChanges.None);
        }

        if (!request.Lines.Select((l, i) => LimitRules.CanGrant(l.Limit, readings[i].Used, readings[i].Reserved, l.Amount)).All(ok => ok))
        {
            return new HoldOutcome.Decided(readings, null, CounterChanges.None);
        }

        var liveHolds = _holds.Values.Count(h => h.SubjectId == request.SubjectId && Live(h));
        if (liveHolds >= request.MaxLiveHolds)
        {
            return new HoldOutcome.TooManyHolds(liveHolds);
        }

        var placed = new PlacedHold(request.ReservationId, Now() + request.Ttl, request.PlacedAt, false);
        var lines = request.Lines.Select(l => new UsageLine(l.Key, l.Amount)).ToList();
        _holds[(request.SubjectId, request.ReservationId)] = new StoredHold(request.SubjectId, request.RequestId, placed, lines, lines, false);
        return new HoldOutcome.Decided(readings, placed, Changed([.. lines.Select(l => l.Key)]));
    });

    public Task<CounterChanges?> ReleaseHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken) => Run(() =>
    {
        if (!_holds.TryGetValue((subjectId, reservationId), out var hold) || !Live(hold))
        {
            return null;
        }

        _holds[(subjectId, reservationId)] = hold with { Ended = true };
        return (CounterChanges?)Changed([.. hold.Lines.Select(l => l.Key)]);
    });

    public Task<PlacedHold?> FindHoldAsync(string subjectId, string reservationId, CancellationToken cancellationToken) =>
        Run(() => _holds.TryGetValue((subjectId, reservationId), out var hold) ? hold.Placed : null);

    public Task<IReadOnlyList<HoldInfo>> ListLiveHoldsAsync(CounterKey key, CancellationToken cancellationToken) => Run<IReadOnlyList<HoldInfo>>(() =>
        [.. _holds.Values.Where(h => h.SubjectId == key.SubjectId && Live(h))
            .SelectMany(h => h.Lines.Where(l => Overlaps(l.Key, key)).Select(l => new HoldInfo(h.Placed.ReservationId, l.Amount, h.Placed.ExpiresAt)))]);

    public Task<string?> FindFingerprintAsync(string subjectId, string idempotencyKey, CancellationToken cancellationToken) =>
        Run(() => _events.TryGetValue((subjectId, idempotencyKey), out var known) ? known.Event.Fingerprint : null);

    public Task<IReadOnlyList<CounterValue>> GetTotalsAsync(IReadOnlyList<CounterKey> keys, CancellationToken cancellationToken) =>
        Run(() => Changed(keys).Values);

    public Task<LedgerSnapshot> InspectAsync(CounterKey key, CancellationToken cancellationToken) => Run(() =>
    {
        var lines = EventLines(key).ToList();
        return new LedgerSnapshot(lines.Sum(), lines.Count, _rows.TryGetValue(key, out var row) ? row.Total : null, _rows.TryGetValue(key, out row) ? row.Version : null);
    });

    public Task<(CounterValue Value, bool RowFixed)> ReconcileAsync(CounterKey key, CancellationToken cancellationToken) => Run(() =>
    {
        var fromEvents = EventLines(key).Sum();
        var rowFixed = _rows.TryGetValue(key, out var row) && row.Total != fromEvents;
        _rows[key] = (fromEvents, NextVersion());
        return (new CounterValue(key, fromEvents, Held(key, except: null), _rows[key].Version), rowFixed);
    });

    public Task<IReadOnlyList<string>> ListActiveSubjectsAsync(Instant now, CancellationToken cancellationToken) => Run<IReadOnlyList<string>>(() =>
        [.. _rows.Keys.Where(k => k.Period.Contains(now)).Select(k => k.SubjectId).Distinct().Order(StringComparer.Ordinal)]);

    public async Task<int> DrainOutboxAsync(Func<OutboxBatch, Task> apply, Duration minAge, int max, CancellationToken cancellationToken)
    {
        var (taken, batch) = await Run(() =>
        {
            var entries = _outbox.Take(max).ToList();
            var counters = Changed([.. entries.Where(e => e.Counter is not null).Select(e => e.Counter!.Value).Distinct()]).Values;
            return (entries, new OutboxBatch(counters, [.. entries.Where(e => e.Subscription is not null).Select(e => e.Subscription!).Distinct()], entries.Any(e => e.Catalog)));
        });
        await apply(batch);
        lock (_lock)
        {
            foreach (var entry in taken)
            {
                _outbox.Remove(entry);
            }
        }

        return taken.Count;
    }

    public Task<int> ExpireHoldsAsync(int max, CancellationToken cancellationToken) => Run(() =>
    {
        var expired = _holds.Where(h => !h.Value.Ended && h.Value.Placed.ExpiresAt <= Now()).Take(max).ToList();
        foreach (var (id, hold) in expired)
        {
            _holds[id] = hold with { Ended = true };
            Changed([.. hold.Lines.Select(l => l.Key)]);
        }

        return expired.Count;
    });

    private Task<T> Run<T>(Func<T> body)
    {
        lock (_lock)
        {
            Calls++;
            if (Down)
            {
                throw new StoreUnavailableException(StoreUnavailableException.Ledger, new TimeoutException("The database is down."));
            }

            return Task.FromResult(body());
        }
    }

    private long ChangeCatalog(IEnumerable<UsageType> usageTypes, IEnumerable<Plan> plans)
    {
        _catalog = new PlanCatalog(usageTypes, plans, NextVersion());
        _outbox.Add(new OutboxEntry(null, null, true));
        return _catalog.Version;
    }

    private Subscription Enrolled(string subjectId, string defaultPlanId, Instant now)
    {
        if (!_subscriptions.TryGetValue(subjectId, out var subscription))
        {
            subscription = new Subscription(subjectId, defaultPlanId, Subscription.DefaultBillingAnchorDay, Subscription.DefaultTimeZone, now, NextVersion());
            _subscriptions[subjectId] = subscription;
        }

        return subscription;
    }

    /// <summary>The running total of a counter, created from its events (at a new version) where there is none.</summary>
    private (long Total, long Version) Total(CounterKey key)
    {
        if (!_rows.TryGetValue(key, out var row))
        {
            row = (EventLines(key).Sum(), NextVersion());
            _rows[key] = row;
        }

        return row;
    }

    /// <summary>The current values of these counters, at a fresh version, queued in the outbox.</summary>
    private CounterChanges Changed(IReadOnlyList<CounterKey> keys)
    {
        var values = keys.Distinct().Select(k => new CounterValue(k, Total(k).Total, Held(k, except: null), NextVersion())).ToList();
        _outbox.AddRange(values.Select(v => new OutboxEntry(v.Key, null, false)));
        return new CounterChanges(values);
    }

    private IEnumerable<long> EventLines(CounterKey key) =>
        _events.Values.Where(e => e.Event.SubjectId == key.SubjectId && key.Period.Contains(e.Event.OccurredAt))
            .SelectMany(e => e.Event.Lines.Where(l => l.Key.UsageType == key.UsageType).Select(l => l.Amount));

    private long Held(CounterKey key, string? except) =>
        _holds.Values.Where(h => h.SubjectId == key.SubjectId && Live(h) && h.Placed.ReservationId != except)
            .SelectMany(h => h.Lines).Where(l => Overlaps(l.Key, key)).Sum(l => l.Amount);

    private static bool Overlaps(CounterKey a, CounterKey b) =>
        a.UsageType == b.UsageType && a.Period.Start < b.Period.End && b.Period.Start < a.Period.End;

    private bool Live(StoredHold hold) => !hold.Ended && hold.Placed.ExpiresAt > Now();

    private Instant Now() => Instant.FromDateTimeOffset(clock.GetUtcNow());

    private long NextVersion() => ++_version;

    private sealed record StoredEvent(UsageEvent Event);

    private sealed record StoredHold(string SubjectId, string? RequestId, PlacedHold Placed, IReadOnlyList<UsageLine> Requested, IReadOnlyList<UsageLine> Lines, bool Ended);

    private sealed record OutboxEntry(CounterKey? Counter, string? Subscription, bool Catalog);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{_events.Count} events, {_holds.Count} holds");
}
