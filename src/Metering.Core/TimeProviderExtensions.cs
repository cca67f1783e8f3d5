using NodaTime;

namespace Metering.Core;

internal static class TimeProviderExtensions
{
    public static Instant ToInstant(this DateTimeOffset value) => Instant.FromDateTimeOffset(value);
}
