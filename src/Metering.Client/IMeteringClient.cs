namespace Metering.Client;

/// <summary>
/// Metering for .NET services. Checks follow a fail policy when Metering is unreachable, tracking goes through a
/// durable local spool and is delivered exactly once in the background, and sessions reserve, settle and release in
/// two calls.
/// </summary>
public interface IMeteringClient
{
    /// <summary>
    /// Whether the amounts fit (and, with <see cref="CheckRequest.Reserve"/>, holds them). When Metering cannot answer
    /// within the check deadline, answers by the configured fail policy with <see cref="CheckResult.Degraded"/> set,
    /// and logs once per outage. Throws <see cref="MeteringException"/> only for an invalid request.
    /// </summary>
    Task<CheckResult> CheckAsync(CheckRequest request, CancellationToken cancellationToken = default);

    /// <summary>
    /// Records usage without waiting for Metering: returns once the record is safely in the local spool; a background
    /// worker delivers it with the same idempotency key until Metering acknowledges it. Never throws for Metering's
    /// state; a full spool is logged, counted and reported as <see cref="TrackReceipt.Spooled"/> = false.
    /// </summary>
    Task<TrackReceipt> TrackAsync(TrackRequest request, CancellationToken cancellationToken = default);

    /// <summary>
    /// Waits until every record spooled so far has been delivered (e.g. before a short-lived process exits), or until
    /// <paramref name="cancellationToken"/> ends; true when the spool is empty.
    /// </summary>
    Task<bool> FlushAsync(CancellationToken cancellationToken = default);

    /// <summary>Records usage and waits for Metering's answer; throws <see cref="MeteringException"/> when it fails.</summary>
    Task<TrackResult> TrackNowAsync(TrackRequest request, CancellationToken cancellationToken = default);

    /// <summary>What is left for the subject (every usage type when none is named); throws <see cref="MeteringException"/>.</summary>
    Task<RemainingResult> GetRemainingAsync(string subjectId, IReadOnlyList<string>? usageTypes = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Gives a hold back. True when a live hold was released; false when it was unknown, expired or settled, or when
    /// Metering was unreachable, in which case the release is spooled and delivered later. Never throws for Metering's state.
    /// </summary>
    Task<bool> ReleaseAsync(string subjectId, string reservationId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Starts a session: checks and holds every amount at once. The session is allowed or denied (with levels and
    /// upgrade options); end it with <see cref="MeteringSession.EndAsync(long, CancellationToken)"/>, or dispose it
    /// without ending to release the hold.
    /// </summary>
    Task<MeteringSession> BeginSessionAsync(string subjectId, IReadOnlyList<Usage> usage, CancellationToken cancellationToken = default);

    /// <summary>
    /// Starts an interview session of up to <paramref name="minutes"/> minutes and <paramref name="interviews"/>
    /// interviews (the usage types named by <see cref="MeteringClientOptions.MinutesUsageType"/> and
    /// <see cref="MeteringClientOptions.InterviewsUsageType"/>).
    /// </summary>
    Task<MeteringSession> BeginSessionAsync(string subjectId, long minutes, long interviews = 1, CancellationToken cancellationToken = default);
}
