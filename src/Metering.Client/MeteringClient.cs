using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.ClientFactory;
using Metering.Client.Spool;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Proto = Metering.Api.V1;

namespace Metering.Client;

/// <summary>The <see cref="IMeteringClient"/> over gRPC (<c>Grpc.Net.ClientFactory</c>).</summary>
internal sealed partial class MeteringClient(
    GrpcClientFactory clients,
    IOptions<MeteringClientOptions> options,
    UsageSpool spool,
    OutageMonitor outage,
    MeteringClientMetrics metrics,
    TimeProvider clock,
    ILogger<MeteringClient> logger) : IMeteringClient
{
    /// <summary>The name of the client's gRPC client registration.</summary>
    public const string GrpcClientName = "Metering.Client";

    private int _spoolFullLogged;

    internal MeteringClientOptions Options => options.Value;

    internal Proto.MeteringService.MeteringServiceClient Grpc =>
        clients.CreateClient<Proto.MeteringService.MeteringServiceClient>(GrpcClientName);

    public async Task<CheckResult> CheckAsync(CheckRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var proto = ProtoMapping.ToProto(request);
        try
        {
            var response = await Grpc.CheckLimitAsync(proto, deadline: Deadline(Options.CheckTimeout), cancellationToken: cancellationToken).ConfigureAwait(false);
            outage.Succeeded();
            return ProtoMapping.FromProto(response);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.InvalidArgument)
        {
            outage.Succeeded();
            throw MeteringException.From(ex);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.ResourceExhausted && ReasonOf(ex) == "TOTAL_CEILING_REACHED")
        {
            outage.Succeeded();
            return new CheckResult { Allowed = false };
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        catch (RpcException ex)
        {
            // Metering did not decide (unreachable, too slow, refusing the caller): the fail policy decides, visibly.
            outage.Failed(ex, answeredByFailPolicy: true);
            metrics.DegradedChecks.Add(1);
            var allowed = request.Usage.All(u => Options.PolicyOf(u.UsageType) == FailPolicy.Allow);
            LogDegradedCheck(request.SubjectId, allowed, ex.StatusCode);
            return new CheckResult
            {
                Allowed = allowed,
                Degraded = true,
                DegradedReason = $"{ex.StatusCode}: {ex.Status.Detail}",
            };
        }
    }

    public Task<TrackReceipt> TrackAsync(TrackRequest request, CancellationToken cancellationToken = default)
    {
        Validate(request);
        if (request.Enforce)
        {
            throw new ArgumentException("Enforced tracking needs the service's answer: use TrackNowAsync.", nameof(request));
        }

        cancellationToken.ThrowIfCancellationRequested();
        var now = clock.GetUtcNow();
        var proto = ProtoMapping.ToProto(request, request.OccurredAt ?? now);
        return Task.FromResult(Spool(SpoolKind.Track, request.SubjectId, request.IdempotencyKey, proto, now));
    }

    public async Task<bool> FlushAsync(CancellationToken cancellationToken = default)
    {
        while (spool.Count() > 0)
        {
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(50), clock, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }

        return true;
    }

    public async Task<TrackResult> TrackNowAsync(TrackRequest request, CancellationToken cancellationToken = default)
    {
        Validate(request);
        var proto = ProtoMapping.ToProto(request, request.OccurredAt ?? clock.GetUtcNow());
        try
        {
            var response = await Grpc.TrackUsageAsync(proto, deadline: Deadline(Options.TrackTimeout), cancellationToken: cancellationToken).ConfigureAwait(false);
            outage.Succeeded();
            return ProtoMapping.FromProto(response);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        catch (RpcException ex)
        {
            Observe(ex);
            throw MeteringException.From(ex);
        }
    }

    public async Task<RemainingResult> GetRemainingAsync(string subjectId, IReadOnlyList<string>? usageTypes = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(subjectId);
        var proto = new Proto.GetRemainingRequest { SubjectId = subjectId };
        proto.UsageTypes.AddRange(usageTypes ?? []);
        try
        {
            var response = await Grpc.GetRemainingAsync(proto, deadline: Deadline(Options.TrackTimeout), cancellationToken: cancellationToken).ConfigureAwait(false);
            outage.Succeeded();
            return ProtoMapping.FromProto(response);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        catch (RpcException ex)
        {
            Observe(ex);
            throw MeteringException.From(ex);
        }
    }

    public async Task<bool> ReleaseAsync(string subjectId, string reservationId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(subjectId);
        ArgumentException.ThrowIfNullOrWhiteSpace(reservationId);
        var proto = new Proto.ReleaseReservationRequest { SubjectId = subjectId, ReservationId = reservationId };
        try
        {
            var response = await Grpc.ReleaseReservationAsync(proto, deadline: Deadline(Options.TrackTimeout), cancellationToken: cancellationToken).ConfigureAwait(false);
            outage.Succeeded();
            return response.Released;
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.InvalidArgument)
        {
            outage.Succeeded();
            throw MeteringException.From(ex);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        catch (RpcException ex)
        {
            // The hold would otherwise stay until it expires: deliver the release later.
            Observe(ex);
            Spool(SpoolKind.Release, subjectId, reservationId, proto, clock.GetUtcNow());
            return false;
        }
    }

    public async Task<MeteringSession> BeginSessionAsync(string subjectId, IReadOnlyList<Usage> usage, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(usage);
        var check = await CheckAsync(new CheckRequest(subjectId, usage) { Reserve = true }, cancellationToken).ConfigureAwait(false);
        return new MeteringSession(this, subjectId, usage, check, $"session-{Guid.NewGuid():N}");
    }

    public Task<MeteringSession> BeginSessionAsync(string subjectId, long minutes, long interviews = 1, CancellationToken cancellationToken = default)
    {
        List<Usage> usage = [new(Options.MinutesUsageType, minutes)];
        if (interviews > 0)
        {
            usage.Add(new Usage(Options.InterviewsUsageType, interviews));
        }

        return BeginSessionAsync(subjectId, usage, cancellationToken);
    }

    /// <summary>A release that never throws: an invalid one is logged (it cannot become valid by retrying).</summary>
    internal async Task ReleaseQuietlyAsync(string subjectId, string reservationId)
    {
        try
        {
            await ReleaseAsync(subjectId, reservationId, CancellationToken.None).ConfigureAwait(false);
        }
        catch (MeteringException ex)
        {
            LogReleaseFailed(subjectId, reservationId, ex.Message);
        }
    }

    private static string? ReasonOf(RpcException exception) => exception.GetRpcStatus()?.GetDetail<Google.Rpc.ErrorInfo>()?.Reason;

    private static void Validate(TrackRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentException.ThrowIfNullOrWhiteSpace(request.SubjectId);
        ArgumentException.ThrowIfNullOrWhiteSpace(request.IdempotencyKey);
        if (request.Usage is not { Count: > 0 })
        {
            throw new ArgumentException("Track at least one usage amount.", nameof(request));
        }
    }

    private DateTime Deadline(TimeSpan timeout) => clock.GetUtcNow().UtcDateTime + timeout;

    private void Observe(RpcException exception)
    {
        if (IsOutage(exception.StatusCode))
        {
            outage.Failed(exception, answeredByFailPolicy: false);
        }
        else
        {
            outage.Succeeded();
        }
    }

    internal static bool IsOutage(StatusCode code) =>
        code is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Cancelled or StatusCode.Unknown or StatusCode.Internal or StatusCode.Aborted;

    private TrackReceipt Spool(SpoolKind kind, string subjectId, string key, IMessage proto, DateTimeOffset now)
    {
        if (spool.TryAdd(kind, subjectId, key, proto.ToByteArray(), now.ToUnixTimeMilliseconds()))
        {
            Interlocked.Exchange(ref _spoolFullLogged, 0);
            return new TrackReceipt(key, Spooled: true);
        }

        metrics.Refused.Add(1);
        if (Interlocked.Exchange(ref _spoolFullLogged, 1) == 0)
        {
            LogSpoolFull(spool.Path, Options.SpoolMaxRecords);
        }

        LogRefused(kind, subjectId, key);
        return new TrackReceipt(key, Spooled: false);
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Check for {SubjectId} answered by the fail policy (allowed: {Allowed}) after {Status}")]
    private partial void LogDegradedCheck(string subjectId, bool allowed, StatusCode status);

    [LoggerMessage(Level = LogLevel.Error, Message = "The Metering spool {Path} is full ({Max} records): new usage is refused until it drains")]
    private partial void LogSpoolFull(string path, int max);

    [LoggerMessage(Level = LogLevel.Error, Message = "Not spooled (spool full): {Kind} of {SubjectId} with key {Key}")]
    private partial void LogRefused(SpoolKind kind, string subjectId, string key);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Releasing {ReservationId} of {SubjectId} failed: {Reason}")]
    private partial void LogReleaseFailed(string subjectId, string reservationId, string reason);
}
