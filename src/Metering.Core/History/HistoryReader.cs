using Metering.Core.Ports;
using Metering.Core.Validation;
using NodaTime;

namespace Metering.Core.History;

/// <summary>The history use cases: a subject's ledger events, paged, and its subscription changes.</summary>
public sealed class HistoryReader(IHistoryStore store, ICatalogProvider catalog)
{
    public const int DefaultPageSize = 50;
    public const int MaxPageSize = 500;
    public const int MaxSubscriptionChanges = 1000;

    /// <summary>Events newest first, optionally of one usage type and within [from, to); paged with an opaque token.</summary>
    public async Task<EventPage> ListEventsAsync(
        string subjectId,
        string? usageType,
        Instant? from,
        Instant? to,
        int pageSize,
        string? pageToken,
        CancellationToken cancellationToken)
    {
        var validator = new RequestValidator(await catalog.RefreshAsync(cancellationToken)).SubjectId("subject_id", subjectId);
        if (!string.IsNullOrEmpty(usageType))
        {
            validator.UsageType("usage_type", usageType);
        }

        if (pageSize is < 0 or > MaxPageSize)
        {
            validator.Add("page_size", $"must be between 0 (default {DefaultPageSize}) and {MaxPageSize}");
        }

        if (from is { } f && to is { } t && f >= t)
        {
            validator.Add("to", "must be after from");
        }

        EventCursor? after = null;
        try
        {
            after = PageToken.Parse("page_token", pageToken);
        }
        catch (Errors.InvalidRequestException ex)
        {
            validator.Add(ex.Violations[0].Field, ex.Violations[0].Description);
        }

        validator.ThrowIfInvalid();
        var size = pageSize == 0 ? DefaultPageSize : pageSize;
        var events = await store.ListEventsAsync(
            new EventQuery(subjectId, string.IsNullOrEmpty(usageType) ? null : usageType, from, to, after, size + 1),
            cancellationToken);
        if (events.Count <= size)
        {
            return new EventPage(events, null);
        }

        var page = events.Take(size).ToList();
        var last = page[^1];
        return new EventPage(page, PageToken.Encode(new EventCursor(last.OccurredAt, last.Id)));
    }

    /// <summary>A subject's subscription changes, newest first.</summary>
    public async Task<IReadOnlyList<SubscriptionChangeRecord>> ListSubscriptionChangesAsync(string subjectId, CancellationToken cancellationToken)
    {
        new RequestValidator(await catalog.RefreshAsync(cancellationToken)).SubjectId("subject_id", subjectId).ThrowIfInvalid();
        return await store.ListSubscriptionChangesAsync(subjectId, MaxSubscriptionChanges, cancellationToken);
    }
}
