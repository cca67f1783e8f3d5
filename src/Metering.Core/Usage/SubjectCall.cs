using Metering.Core.Catalog;
using Metering.Core.Limits;
using Metering.Core.Subscriptions;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// What a use case on one subject decides with: the catalog as of the call's start and the subject's subscription and
/// plan. Works out the counters a request touches and weighs their readings. <see cref="Unconfirmed"/>: both are this
/// instance's copies, whose versions the counter read must confirm before the answer may rely on them.
/// </summary>
public sealed record SubjectCall(PlanCatalog Catalog, SubjectPlan Subject, CacheVersions? Unconfirmed = null)
{
    public string SubjectId => Subject.Subscription.SubjectId;

    /// <summary>The counter of each requested amount in the period containing <paramref name="at"/>, with the plan's limit.</summary>
    public IReadOnlyList<CounterLine> Lines(IReadOnlyList<UsageRequest> usage, Instant at)
    {
        var calendar = Subject.Subscription.Calendar;
        var lines = new CounterLine[usage.Count];
        for (var i = 0; i < usage.Count; i++)
        {
            var type = Catalog.GetUsageType(usage[i].UsageType);
            var key = new CounterKey(SubjectId, type.Name, calendar.PeriodContaining(type.ResetPeriod, at));
            lines[i] = new CounterLine(key, usage[i].Amount, Subject.Plan.LimitFor(type.Name));
        }

        return lines;
    }

    /// <summary>One unit of each usage type named: the lines whose statuses report where a subject stands.</summary>
    public IReadOnlyList<CounterLine> Lines(IEnumerable<string> usageTypes, Instant at) =>
        Lines([.. usageTypes.Select(t => new UsageRequest(t, 1))], at);

    /// <summary>What each line's usage type does while the counters are unavailable.</summary>
    public IReadOnlyList<DegradedPolicy> Policies(IReadOnlyList<CounterLine> lines) =>
        [.. lines.Select(l => Catalog.GetUsageType(l.Key.UsageType).DegradedPolicy)];

    /// <summary>Each line's status; a line that fails open while the counters are unavailable is allowed whatever its figures.</summary>
    public static IReadOnlyList<LimitStatus> Evaluate(IReadOnlyList<CounterLine> lines, CounterCache.Reading reading) =>
        [.. lines.Select((line, i) =>
        {
            var status = LimitRules.Evaluate(line.Key.UsageType, line.Limit, reading.Readings[i].Used, reading.Readings[i].Reserved, line.Amount, line.Key.Period);
            return reading.FailOpen.Contains(i) ? status with { Decision = Decision.Allowed } : status;
        })];

    /// <summary>The plans that would have allowed every line, given what its counter showed.</summary>
    public IReadOnlyList<UpgradeOption> UpgradeOptions(IReadOnlyList<CounterLine> lines, IReadOnlyList<CounterReading> readings) =>
        UpgradeAdvisor.Options(
            Catalog,
            Subject.Plan.Id,
            [.. lines.Select((line, i) => new RequestedLine(line.Key.UsageType, line.Amount, readings[i].Used, readings[i].Reserved))]);
}
