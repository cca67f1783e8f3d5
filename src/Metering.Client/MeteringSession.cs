namespace Metering.Client;

/// <summary>
/// One session's reservation: allowed or denied, with its levels and upgrade options. End an allowed session with
/// <see cref="EndAsync(long, CancellationToken)"/> (the measured usage settles the hold, through the spool), or
/// dispose it without ending to release the hold.
/// </summary>
public sealed class MeteringSession : IAsyncDisposable
{
    private readonly MeteringClient _client;
    private readonly Lock _gate = new();
    private Task<TrackReceipt>? _ended;
    private bool _released;

    internal MeteringSession(MeteringClient client, string subjectId, IReadOnlyList<Usage> requested, CheckResult check, string sessionId)
    {
        _client = client;
        SubjectId = subjectId;
        Requested = requested;
        Check = check;
        SessionId = sessionId;
    }

    /// <summary>The subject (user).</summary>
    public string SubjectId { get; }

    /// <summary>The idempotency key the session's usage is recorded under.</summary>
    public string SessionId { get; }

    /// <summary>What the session asked for and holds.</summary>
    public IReadOnlyList<Usage> Requested { get; }

    /// <summary>The check that started the session.</summary>
    public CheckResult Check { get; }

    /// <summary>True when the session may start.</summary>
    public bool Allowed => Check.Allowed;

    /// <summary>True when the answer came from the fail policy or a degraded service.</summary>
    public bool Degraded => Check.Degraded;

    /// <summary>The status of each requested usage type (levels, remaining); empty when degraded by the client.</summary>
    public IReadOnlyList<LimitStatus> Limits => Check.Limits;

    /// <summary>When denied: the plans that would have allowed the session.</summary>
    public IReadOnlyList<UpgradeOption> UpgradeOptions => Check.UpgradeOptions;

    /// <summary>The hold, when one was placed.</summary>
    public string? ReservationId => Check.ReservationId;

    /// <summary>The status of one usage type, or null.</summary>
    public LimitStatus? Limit(string usageType) => Check.Limits.FirstOrDefault(l => l.UsageType == usageType);

    /// <summary>
    /// Ends the session with the measured minutes (the other held amounts, e.g. the interview, are recorded as held).
    /// Returns once the usage is spooled; it settles the hold when delivered.
    /// </summary>
    public Task<TrackReceipt> EndAsync(long actualMinutes, CancellationToken cancellationToken = default)
    {
        var minutesType = _client.Options.MinutesUsageType;
        if (Requested.All(u => u.UsageType != minutesType))
        {
            throw new InvalidOperationException($"The session holds no {minutesType}; end it with EndAsync(usage).");
        }

        return EndAsync(Requested.Select(u => u.UsageType == minutesType ? u with { Amount = actualMinutes } : u).ToList(), cancellationToken);
    }

    /// <summary>Ends the session with what it used. Amounts of 0 are left out; calling it again returns the first receipt.</summary>
    public Task<TrackReceipt> EndAsync(IReadOnlyList<Usage> actual, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(actual);
        if (!Allowed)
        {
            throw new InvalidOperationException("A denied session has nothing to end.");
        }

        if (actual.Any(u => u.Amount < 0))
        {
            throw new ArgumentOutOfRangeException(nameof(actual), "A session cannot use a negative amount.");
        }

        lock (_gate)
        {
            if (_released)
            {
                throw new InvalidOperationException("The session was released.");
            }

            return _ended ??= Settle(actual.Where(u => u.Amount > 0).ToList(), cancellationToken);
        }
    }

    /// <summary>Releases the hold of a session that was not ended (never throws for Metering's state).</summary>
    public async ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            if (_ended is not null || _released || !Allowed || ReservationId is null)
            {
                return;
            }

            _released = true;
        }

        await _client.ReleaseQuietlyAsync(SubjectId, ReservationId).ConfigureAwait(false);
    }

    private async Task<TrackReceipt> Settle(IReadOnlyList<Usage> used, CancellationToken cancellationToken)
    {
        if (used.Count == 0)
        {
            // Nothing was used: give the hold back instead of recording nothing.
            if (ReservationId is not null)
            {
                await _client.ReleaseQuietlyAsync(SubjectId, ReservationId).ConfigureAwait(false);
            }

            return new TrackReceipt(SessionId, Spooled: false);
        }

        return await _client.TrackAsync(
            new TrackRequest(SubjectId, SessionId, used) { ReservationId = ReservationId },
            cancellationToken).ConfigureAwait(false);
    }
}
