using Metering.Core.Periods;

namespace Metering.Core.Catalog;

/// <summary>A kind of metered usage, e.g. <c>minutes_per_month</c>, and the period its limit resets on.</summary>
public sealed record UsageType(string Name, string Unit, ResetPeriod ResetPeriod);
