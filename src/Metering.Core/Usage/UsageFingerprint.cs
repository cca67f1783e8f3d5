using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Metering.Core.Usage;

/// <summary>
/// The identity of a TrackUsage payload: the same request sent again has the same fingerprint,
/// whatever the order of its usage entries or attributes.
/// </summary>
public static class UsageFingerprint
{
    public static string Compute(TrackUsageCommand command)
    {
        var text = new StringBuilder("v1");
        foreach (var usage in command.Usage.OrderBy(u => u.UsageType, StringComparer.Ordinal))
        {
            text.Append("\nusage\t").Append(usage.UsageType).Append('\t').Append(usage.Amount.ToString(CultureInfo.InvariantCulture));
        }

        text.Append("\noccurred_at\t").Append(command.OccurredAt?.ToUnixTimeTicks().ToString(CultureInfo.InvariantCulture));
        text.Append("\nreservation_id\t").Append(command.ReservationId);
        text.Append("\nenforce\t").Append(command.Enforce ? '1' : '0');
        if (!command.Final)
        {
            // Only a partial settle says so: the fingerprints of every earlier payload stay as they were.
            text.Append("\nfinal\t0");
        }

        foreach (var (key, value) in command.Attributes.OrderBy(a => a.Key, StringComparer.Ordinal))
        {
            text.Append("\nattribute\t").Append(Framed(key)).Append('\t').Append(Framed(value));
        }

        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    /// <summary>The identity of an AdjustUsage or ResetUsage payload (never equal to a TrackUsage fingerprint).</summary>
    public static string Compute(UsageEventKind kind, string usageType, long amount, string reason, NodaTime.Instant? occurredAt)
    {
        var text = new StringBuilder("v1\nkind\t").Append(kind.ToString().ToLowerInvariant());
        text.Append("\nusage\t").Append(usageType).Append('\t').Append(amount.ToString(CultureInfo.InvariantCulture));
        text.Append("\noccurred_at\t").Append(occurredAt?.ToUnixTimeTicks().ToString(CultureInfo.InvariantCulture));
        text.Append("\nreason\t").Append(Framed(reason));
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    /// <summary>Length-prefixed, so that no key or value can imitate the text around it.</summary>
    private static string Framed(string value) => $"{value.Length.ToString(CultureInfo.InvariantCulture)}:{value}";
}
