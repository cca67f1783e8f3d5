using System.Globalization;
using NodaTime;

namespace Metering.Core.Usage;

/// <summary>
/// The one place that knows what a reservation id looks like: <c>rsv_</c> and a version 7 GUID (32 hex digits) whose
/// millisecond timestamp is the instant the hold was placed, so a settle learns the hold's periods from the id alone,
/// without asking the ledger.
/// </summary>
public static class ReservationIds
{
    private const string Prefix = "rsv_";

    /// <summary>A new id and the instant it carries: <paramref name="now"/> truncated to the millisecond, to be the hold's placed-at.</summary>
    public static (string Id, Instant PlacedAt) New(Instant now)
    {
        var placedAt = Instant.FromUnixTimeMilliseconds(now.ToUnixTimeMilliseconds());
        return ($"{Prefix}{Guid.CreateVersion7(placedAt.ToDateTimeOffset()):N}", placedAt);
    }

    /// <summary>The instant an id made by <see cref="New"/> carries; null for an id of any other form.</summary>
    public static Instant? PlacedAt(string reservationId)
    {
        if (reservationId.Length != Prefix.Length + 32
            || !reservationId.StartsWith(Prefix, StringComparison.Ordinal)
            || !Guid.TryParseExact(reservationId.AsSpan(Prefix.Length), "N", out var guid)
            || guid.Version != 7
            || !long.TryParse(reservationId.AsSpan(Prefix.Length, 12), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var milliseconds))
        {
            return null;
        }

        return Instant.FromUnixTimeMilliseconds(milliseconds);
    }
}
