using System.Collections.Frozen;
using System.Diagnostics.CodeAnalysis;
using NodaTime;

namespace Metering.Core.Periods;

/// <summary>
/// Resolves IANA time zone ids with NodaTime's embedded tzdb rather than the operating system's, so that every machine
/// computes the same periods.
/// </summary>
/// <remarks>
/// Ids are matched exactly (case-sensitive), and only ids in the tzdb are accepted: canonical ids such as
/// <c>Europe/Berlin</c>, links such as <c>US/Eastern</c> and <c>UTC</c>. NodaTime's fixed-offset ids such as
/// <c>UTC+01:00</c> are not IANA ids and are rejected.
/// </remarks>
public static class TimeZones
{
    private static readonly IDateTimeZoneProvider Provider = DateTimeZoneProviders.Tzdb;
    private static readonly FrozenSet<string> Ids = Provider.Ids.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>Looks up the time zone with the given IANA id.</summary>
    /// <param name="id">An IANA time zone id, e.g. <c>Europe/Berlin</c> or <c>UTC</c>.</param>
    /// <param name="zone">The zone if the id is known; otherwise <see langword="null"/>.</param>
    /// <returns><see langword="true"/> if the id is a known tzdb id.</returns>
    public static bool TryGet(string id, [NotNullWhen(true)] out DateTimeZone? zone)
    {
        zone = id is not null && Ids.Contains(id) ? Provider[id] : null;
        return zone is not null;
    }

    /// <summary>Returns the time zone with the given IANA id.</summary>
    /// <param name="id">An IANA time zone id, e.g. <c>Europe/Berlin</c> or <c>UTC</c>.</param>
    /// <returns>The time zone.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="id"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="id"/> is not a known tzdb id.</exception>
    public static DateTimeZone Get(string id)
    {
        ArgumentNullException.ThrowIfNull(id);
        return TryGet(id, out DateTimeZone? zone)
            ? zone
            : throw new ArgumentException($"Unknown IANA time zone id '{id}'.", nameof(id));
    }
}
