namespace Metering.Core.Limits;

/// <summary>How close a usage type is to its limit, so that every client colours the same usage the same way.</summary>
public enum UsageLevel
{
    /// <summary>Below 80 % of the limit, or unlimited.</summary>
    Ok = 1,

    /// <summary>From 80 % of the limit.</summary>
    Warning = 2,

    /// <summary>From 95 % of the limit.</summary>
    Critical = 3,

    /// <summary>Nothing left: 100 % or more of the limit is used or held, or the usage type is not in the plan.</summary>
    Exhausted = 4,
}
