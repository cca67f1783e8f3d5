using Metering.Core.Periods;

namespace Metering.Core.Catalog;

/// <summary>
/// A kind of metered usage, e.g. <c>minutes_per_month</c>, the period its limit resets on, and what a check without a
/// hold does when the counters cannot be read.
/// </summary>
public sealed record UsageType(string Name, string Unit, ResetPeriod ResetPeriod, DegradedPolicy DegradedPolicy = DegradedPolicy.Ledger);

/// <summary>What a check without a hold (CheckLimit without reserve, GetRemaining) does while the counters are unavailable.</summary>
public enum DegradedPolicy
{
    /// <summary>Decide from the ledger's totals and live holds (slower, exact).</summary>
    Ledger = 1,

    /// <summary>Fail open: allowed, with the ledger's figures when it answers.</summary>
    Allow = 2,

    /// <summary>Fail closed: the call is UNAVAILABLE.</summary>
    Deny = 3,
}
