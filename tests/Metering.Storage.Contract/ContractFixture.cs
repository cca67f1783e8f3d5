using Metering.Core.Catalog;
using Metering.Core.Periods;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using NodaTime;

namespace Metering.Storage.Contract;

/// <summary>
/// Base of every contract fixture: one fresh set of ports per fixture and backend, a small catalog, fresh subjects per
/// test, and builders for the values the ports take. Written against the ports only.
/// </summary>
public abstract class ContractFixture(StorageBackend backend)
{
    /// <summary>A monthly usage type (the calendar's anchor day and time zone move its periods).</summary>
    protected const string Minutes = "minutes";

    /// <summary>A daily usage type.</summary>
    protected const string Calls = "calls";

    /// <summary>The plan every subject is enrolled on.</summary>
    protected const string Plan = "basic";

    /// <summary>Bounds every call of a test, so that a hanging backend fails the test instead of the run.</summary>
    private static readonly TimeSpan CallBudget = TimeSpan.FromSeconds(30);

    private CancellationTokenSource? _budget;

    protected StoragePorts Ports { get; private set; } = null!;

    protected CancellationToken Token => _budget!.Token;

    protected static BillingCalendar DefaultCalendar { get; } = new(Subscription.DefaultTimeZone, Subscription.DefaultBillingAnchorDay);

    [OneTimeSetUp]
    public async Task CreatePortsAsync()
    {
        using var setUp = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        Ports = await backend.CreateAsync(setUp.Token);
        await Ports.Catalog.SaveUsageTypeAsync(new UsageType(Minutes, "minute", ResetPeriod.Month), Now(), setUp.Token);
        await Ports.Catalog.SaveUsageTypeAsync(new UsageType(Calls, "call", ResetPeriod.Day), Now(), setUp.Token);
        await Ports.Catalog.SavePlanAsync(
            new Plan(Plan, "Basic", 1, new Dictionary<string, long> { [Minutes] = 100, [Calls] = 10 }), Now(), setUp.Token);
    }

    [OneTimeTearDown]
    public async Task DisposePortsAsync()
    {
        if (Ports is not null)
        {
            await Ports.DisposeAsync();
        }
    }

    [SetUp]
    public void StartBudget() => _budget = new CancellationTokenSource(CallBudget);

    [TearDown]
    public void EndBudget() => _budget?.Dispose();

    /// <summary>The current instant: the ledger keeps hold time on its own clock, so events and holds are placed now.</summary>
    protected static Instant Now() => SystemClock.Instance.GetCurrentInstant();

    /// <summary>An instant every store keeps exactly (whole seconds).</summary>
    protected static Instant Whole(Instant instant) => Instant.FromUnixTimeSeconds(instant.ToUnixTimeSeconds());

    protected static string NewId(string prefix) => $"{prefix}-{Guid.NewGuid():N}";

    /// <summary>A new subject, enrolled on <see cref="Plan"/> with the default calendar.</summary>
    protected async Task<string> NewSubjectAsync()
    {
        var subject = NewId("subject");
        await Ports.Subscriptions.GetOrEnrollAsync(subject, Plan, Now(), Token);
        return subject;
    }

    protected static CounterKey Key(string subject, string usageType = Minutes, Instant? at = null, BillingCalendar? calendar = null) =>
        new(subject, usageType, (calendar ?? DefaultCalendar).PeriodContaining(usageType == Calls ? ResetPeriod.Day : ResetPeriod.Month, at ?? Now()));

    /// <summary>A usage event of <paramref name="subject"/>, now, under the default calendar.</summary>
    protected static UsageEvent Event(
        string subject,
        string key,
        IReadOnlyList<(string UsageType, long Amount)> lines,
        string? fingerprint = null,
        string? reservationId = null,
        bool final = true,
        IReadOnlyList<long>? enforcedLimits = null,
        UsageEventKind kind = UsageEventKind.Usage,
        Instant? occurredAt = null,
        BillingCalendar? calendar = null,
        IReadOnlyDictionary<string, string>? attributes = null,
        string? reason = null)
    {
        var at = occurredAt ?? Now();
        return new UsageEvent(
            subject,
            key,
            fingerprint ?? $"fp-{key}",
            at,
            Now(),
            calendar ?? DefaultCalendar,
            [.. lines.Select(l => new UsageLine(Key(subject, l.UsageType, at, calendar), l.Amount))],
            reservationId,
            attributes ?? new Dictionary<string, string>(),
            "contract-tests",
            kind,
            reason,
            final,
            enforcedLimits);
    }

    protected static UsageEvent Event(string subject, string key, string usageType, long amount) =>
        Event(subject, key, [(usageType, amount)]);

    /// <summary>Records an event that must be recorded; returns what the ledger said.</summary>
    protected async Task<RecordOutcome.Recorded> RecordAsync(UsageEvent usageEvent)
    {
        var outcome = await Ports.Ledger.RecordAsync(usageEvent, Token);
        Assert.That(outcome, Is.TypeOf<RecordOutcome.Recorded>(), "the event is recorded");
        return (RecordOutcome.Recorded)outcome;
    }

    protected Task<RecordOutcome.Recorded> RecordAsync(string subject, string usageType, long amount) =>
        RecordAsync(Event(subject, NewId("event"), usageType, amount));

    protected static HoldRequest Hold(
        string subject,
        IReadOnlyList<(string UsageType, long Amount, long Limit)> lines,
        string? reservationId = null,
        string? requestId = null,
        Duration? ttl = null,
        int maxLiveHolds = 100,
        BillingCalendar? calendar = null)
    {
        var now = Now();
        return new HoldRequest(
            subject,
            reservationId ?? NewId("hold"),
            requestId,
            calendar ?? DefaultCalendar,
            [.. lines.Select(l => new CounterLine(Key(subject, l.UsageType, now, calendar), l.Amount, l.Limit))],
            now,
            ttl ?? Duration.FromMinutes(10),
            maxLiveHolds);
    }

    protected static HoldRequest Hold(string subject, string usageType, long amount, long limit, Duration? ttl = null, string? requestId = null, int maxLiveHolds = 100) =>
        Hold(subject, [(usageType, amount, limit)], ttl: ttl, requestId: requestId, maxLiveHolds: maxLiveHolds);

    /// <summary>Places a hold; returns the decision (its Hold is null when nothing was held).</summary>
    protected async Task<HoldOutcome.Decided> HoldAsync(HoldRequest request)
    {
        var outcome = await Ports.Ledger.HoldAsync(request, Token);
        Assert.That(outcome, Is.TypeOf<HoldOutcome.Decided>(), "the ledger decides the hold");
        return (HoldOutcome.Decided)outcome;
    }

    /// <summary>The ledger's total, held amount and version of one counter.</summary>
    protected async Task<CounterValue> TotalAsync(CounterKey key) => (await Ports.Ledger.GetTotalsAsync([key], Token)).Single();
}
