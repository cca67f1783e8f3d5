using NodaTime;

namespace Metering.Core;

/// <summary>The knobs of the domain; bound from the <c>Metering</c> configuration section.</summary>
public sealed record MeteringSettings
{
    /// <summary>Plan a subject is enrolled on the first time any call names it.</summary>
    public string DefaultPlanId { get; init; } = "free";

    /// <summary>How long a CheckLimit hold lasts when the request names no TTL.</summary>
    public Duration DefaultReservationTtl { get; init; } = Duration.FromHours(2);

    /// <summary>The most live holds one subject may have; a reserve over it is refused (TOO_MANY_HOLDS).</summary>
    public int MaxLiveHoldsPerSubject { get; init; } = 100;
}
