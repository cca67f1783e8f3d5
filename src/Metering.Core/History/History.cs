using System.Globalization;
using System.Text;
using Metering.Core.Errors;
using Metering.Core.Usage;
using NodaTime;

namespace Metering.Core.History;

/// <summary>One line of a ledger event: an amount of one usage type in the period it counted in.</summary>
public sealed record LedgerEventLine(string UsageType, long Amount, Instant PeriodStart);

/// <summary>A ledger event as history shows it.</summary>
public sealed record LedgerEvent(
    long Id,
    string IdempotencyKey,
    UsageEventKind Kind,
    Instant OccurredAt,
    Instant RecordedAt,
    string? ReservationId,
    string? Reason,
    IReadOnlyDictionary<string, string> Attributes,
    IReadOnlyList<LedgerEventLine> Lines);

/// <summary>Where a page of history ended: events come newest first by (occurred_at, id).</summary>
public readonly record struct EventCursor(Instant OccurredAt, long Id);

/// <summary>A query of a subject's ledger events, newest first, strictly after <see cref="After"/> when set.</summary>
public sealed record EventQuery(string SubjectId, string? UsageType, Instant? From, Instant? To, EventCursor? After, int Limit);

/// <summary>One page of history and the token of the next one (null on the last page).</summary>
public sealed record EventPage(IReadOnlyList<LedgerEvent> Events, string? NextPageToken);

/// <summary>What happened to a subscription.</summary>
public enum SubscriptionChangeKind
{
    /// <summary>The subject was enrolled on the default plan the first time a call named it.</summary>
    Enrolled = 1,

    /// <summary>SetSubscription stored a plan or calendar.</summary>
    Changed = 2,
}

/// <summary>An audit record of one subscription change.</summary>
public sealed record SubscriptionChangeRecord(
    string SubjectId,
    long Version,
    Instant ChangedAt,
    SubscriptionChangeKind Kind,
    string PlanId,
    string? PreviousPlanId,
    int BillingAnchorDay,
    string TimeZone,
    string? PreviousTimeZone,
    int? PreviousBillingAnchorDay);

/// <summary>
/// The opaque page token of ListUsageEvents: the cursor of the last event returned, as URL-safe base64 of
/// <c>v1:&lt;occurred_at ticks&gt;:&lt;id&gt;</c>. Callers must not build or read it.
/// </summary>
public static class PageToken
{
    public static string Encode(EventCursor cursor)
    {
        var text = string.Create(CultureInfo.InvariantCulture, $"v1:{cursor.OccurredAt.ToUnixTimeTicks()}:{cursor.Id}");
        return Convert.ToBase64String(Encoding.UTF8.GetBytes(text)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    public static bool TryDecode(string token, out EventCursor cursor)
    {
        cursor = default;
        try
        {
            var base64 = token.Replace('-', '+').Replace('_', '/');
            base64 = base64.PadRight(base64.Length + ((4 - (base64.Length % 4)) % 4), '=');
            var parts = Encoding.UTF8.GetString(Convert.FromBase64String(base64)).Split(':');
            if (parts is ["v1", var ticks, var id] &&
                long.TryParse(ticks, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var t) &&
                long.TryParse(id, NumberStyles.None, CultureInfo.InvariantCulture, out var i))
            {
                cursor = new EventCursor(Instant.FromUnixTimeTicks(t), i);
                return true;
            }
        }
        catch (FormatException)
        {
        }
        catch (ArgumentOutOfRangeException)
        {
        }

        return false;
    }

    /// <summary>Decodes a token the caller sent, or fails the request naming the field.</summary>
    public static EventCursor? Parse(string field, string? token)
    {
        if (string.IsNullOrEmpty(token))
        {
            return null;
        }

        return TryDecode(token, out var cursor)
            ? cursor
            : throw new InvalidRequestException([new FieldViolation(field, "is not a page token returned by this call")]);
    }
}
