using Grpc.Core;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Proto = Metering.Api.V1;

namespace Metering.Client.Spool;

/// <summary>
/// Delivers the spool in the background, oldest first, each record with the bytes (and so the idempotency key and
/// payload) it was spooled with, until the service acknowledges it: exactly once, since the service counts a repeated
/// key once. While the service cannot answer, waits with exponential backoff (with jitter) and tries again; a record the
/// service refuses for good, or older than <see cref="MeteringClientOptions.SpoolMaxAge"/>, goes to the dead letters.
/// </summary>
internal sealed partial class SpoolDelivery(
    UsageSpool spool,
    MeteringClient client,
    OutageMonitor outage,
    MeteringClientMetrics metrics,
    IOptions<MeteringClientOptions> options,
    TimeProvider clock,
    ILogger<SpoolDelivery> logger) : BackgroundService
{
    private const int BatchSize = 64;
    private const int Parallelism = 8;

    /// <summary>Attempts after which a record that keeps failing with an unexpected server error is given up.</summary>
    private const int MaxServerErrorAttempts = 20;

    private bool _backingUp;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var failures = 0;
        while (!stoppingToken.IsCancellationRequested)
        {
            var batch = spool.Oldest(BatchSize);
            if (batch.Count == 0)
            {
                ReportBacklog();
                await WaitAsync(spool.WaitForRecordAsync(TimeSpan.FromSeconds(1), stoppingToken)).ConfigureAwait(false);
                continue;
            }

            var unreachable = 0;
            try
            {
                await Parallel.ForEachAsync(
                    batch,
                    new ParallelOptions { MaxDegreeOfParallelism = Parallelism, CancellationToken = stoppingToken },
                    async (record, cancellationToken) =>
                    {
                        if (!await DeliverAsync(record, cancellationToken).ConfigureAwait(false))
                        {
                            Interlocked.Increment(ref unreachable);
                        }
                    }).ConfigureAwait(false);
                ReportBacklog();
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // The worker must outlive any failure (a full disk, a broken file): it logs and tries again.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                LogDeliveryFailed(ex);
                unreachable++;
            }

            if (unreachable == 0)
            {
                failures = 0;
                continue;
            }

            failures++;
            await WaitAsync(Task.Delay(Backoff(failures), clock, stoppingToken)).ConfigureAwait(false);
        }
    }

    /// <summary>False when the service could not be reached (the record stays for the next attempt).</summary>
    private async Task<bool> DeliverAsync(SpoolRecord record, CancellationToken cancellationToken)
    {
        var now = clock.GetUtcNow();
        if (now.ToUnixTimeMilliseconds() - record.CreatedAtMs > options.Value.SpoolMaxAge.TotalMilliseconds)
        {
            GiveUp(record, $"not delivered within {options.Value.SpoolMaxAge}");
            return true;
        }

        var deadline = now.UtcDateTime + options.Value.TrackTimeout;
        try
        {
            if (record.Kind == SpoolKind.Track)
            {
                await client.Grpc.TrackUsageAsync(Proto.TrackUsageRequest.Parser.ParseFrom(record.Payload), deadline: deadline, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await client.Grpc.ReleaseReservationAsync(Proto.ReleaseReservationRequest.Parser.ParseFrom(record.Payload), deadline: deadline, cancellationToken: cancellationToken).ConfigureAwait(false);
            }

            spool.Remove(record.Id);
            metrics.Delivered.Add(1);
            outage.Succeeded();
            return true;
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            var error = $"{ex.StatusCode}: {ex.Status.Detail}";
            if (IsPermanent(ex) || (ex.StatusCode is StatusCode.Internal or StatusCode.Unknown && record.Attempts + 1 >= MaxServerErrorAttempts))
            {
                GiveUp(record, error);
                outage.Succeeded();
                return true;
            }

            spool.RecordFailure(record.Id, error);
            if (MeteringClient.IsOutage(ex.StatusCode))
            {
                outage.Failed(ex, answeredByFailPolicy: false);
            }

            return false;
        }
    }

    /// <summary>
    /// Refusals that no retry can change: invalid input, a key reused with another payload, and the like. A missing or
    /// unknown key, a missing scope and the rate limit are not: the records wait until the configuration is fixed.
    /// </summary>
    private static bool IsPermanent(RpcException exception)
    {
        var reason = exception.GetRpcStatus()?.GetDetail<Google.Rpc.ErrorInfo>()?.Reason;
        return exception.StatusCode switch
        {
            StatusCode.InvalidArgument or StatusCode.AlreadyExists or StatusCode.FailedPrecondition or StatusCode.NotFound or StatusCode.OutOfRange => true,
            StatusCode.ResourceExhausted => reason != "RATE_LIMITED",
            StatusCode.PermissionDenied => reason != "MISSING_SCOPE",
            _ => false,
        };
    }

    private void GiveUp(SpoolRecord record, string reason)
    {
        spool.DeadLetter(record.Id, reason, clock.GetUtcNow().ToUnixTimeMilliseconds());
        metrics.DeadLettered.Add(1);
        LogDeadLettered(record.Kind, record.SubjectId, record.Key, reason, spool.Path);
    }

    private TimeSpan Backoff(int failures)
    {
        var settings = options.Value;
        var exponential = settings.RetryInitialBackoff.TotalMilliseconds * Math.Pow(2, Math.Min(failures - 1, 20));
        var capped = Math.Min(exponential, settings.RetryMaxBackoff.TotalMilliseconds);
        return TimeSpan.FromMilliseconds(capped * (0.8 + (0.4 * Random.Shared.NextDouble())));
    }

    private void ReportBacklog()
    {
        var settings = options.Value;
        var count = spool.Count();
        var oldest = spool.OldestCreatedAtMs() is { } createdAt
            ? TimeSpan.FromMilliseconds(clock.GetUtcNow().ToUnixTimeMilliseconds() - createdAt)
            : TimeSpan.Zero;
        var now = count > settings.SpoolWarningRecords || oldest > settings.SpoolWarningAge;
        if (now && !_backingUp)
        {
            LogBackingUp(count, oldest, spool.Path);
        }
        else if (!now && _backingUp)
        {
            LogCaughtUp(count);
        }

        _backingUp = now;
    }

    private static async Task WaitAsync(Task wait)
    {
        try
        {
            await wait.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Delivering the Metering spool failed; trying again")]
    private partial void LogDeliveryFailed(Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The Metering spool is backing up: {Count} records waiting, the oldest for {OldestAge} ({Path})")]
    private partial void LogBackingUp(long count, TimeSpan oldestAge, string path);

    [LoggerMessage(Level = LogLevel.Information, Message = "The Metering spool caught up: {Count} records waiting")]
    private partial void LogCaughtUp(long count);

    [LoggerMessage(Level = LogLevel.Error, Message = "Gave up delivering {Kind} of {SubjectId} with key {Key}: {Reason}; kept in the dead letters of {Path}")]
    private partial void LogDeadLettered(SpoolKind kind, string subjectId, string key, string reason, string path);
}
