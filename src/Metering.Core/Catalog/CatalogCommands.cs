using Metering.Core.Periods;

namespace Metering.Core.Catalog;

/// <summary>A limit as a caller sent it (not yet validated).</summary>
public sealed record LimitRequest(string UsageType, long Limit);

/// <summary>UpsertPlan: create a plan or replace its display name, rank and whole set of limits.</summary>
public sealed record UpsertPlanCommand(string PlanId, string DisplayName, int Rank, IReadOnlyList<LimitRequest> Limits);

/// <summary>
/// UpsertUsageType: create a usage type or change its unit and degraded policy; <see cref="ResetPeriod"/> and
/// <see cref="DegradedPolicy"/> are null when not given (a new usage type then decides from the ledger when degraded;
/// an existing one keeps its policy).
/// </summary>
public sealed record UpsertUsageTypeCommand(string Name, string Unit, ResetPeriod? ResetPeriod, DegradedPolicy? DegradedPolicy = null);
