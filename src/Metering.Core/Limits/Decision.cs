namespace Metering.Core.Limits;

/// <summary>The verdict on one requested amount.</summary>
public enum Decision
{
    /// <summary>The amount fits, or the limit is unlimited.</summary>
    Allowed = 1,

    /// <summary>The plan includes the usage type but the amount does not fit what is left.</summary>
    LimitExceeded = 2,

    /// <summary>The plan does not include the usage type.</summary>
    NotInPlan = 3,
}
