namespace Metering.Core.Periods;

/// <summary>How often a usage limit resets.</summary>
public enum ResetPeriod
{
    /// <summary>The limit resets at every local start of day in the subscription's time zone.</summary>
    Day = 1,

    /// <summary>The limit resets at the local start of the billing anchor day of every month.</summary>
    Month = 2,
}
