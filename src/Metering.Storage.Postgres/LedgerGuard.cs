using System.Diagnostics;
using System.Net.Sockets;
using Metering.Core.Errors;
using Metering.Core.Telemetry;
using Npgsql;
using Polly;
using Polly.Retry;

namespace Metering.Storage.Postgres;

/// <summary>
/// Runs ledger work under one resilience pipeline: transient PostgreSQL failures are retried once, shortly after, never past the
/// caller's deadline (the cancellation token carries it: every attempt and every delay stops with it); what still fails
/// surfaces as <see cref="StoreUnavailableException"/>. Every unit of work passed here is one transaction that is safe to
/// run again: events are unique per idempotency key.
/// <para>
/// Transient means: the connection could not be made, was lost or timed out (Npgsql's own errors, a <see cref="TimeoutException"/>
/// such as an exhausted pool, socket and I/O errors), or the server answered with an SQLSTATE that says "not now": class
/// 08 (connection), class 53 (insufficient resources, 53300 too many clients included), 57P01/57P02/57P03 (shutting down,
/// crash, cannot connect now), 40001 and 40P01 (serialization failure, deadlock), 55P03 (lock_timeout) and 57014 (a
/// statement_timeout; a cancellation by the caller is not retried). EF Core hides these behind its own exceptions
/// (InvalidOperationException, DbUpdateException, RetryLimitExceededException), so the inner chain is searched.
/// </para>
/// <para>
/// Every call is measured here, once with its retries (<see cref="MeteringMetrics.RecordPostgresCall"/>): its
/// operation name is one of the constant names the stores pass, and a failure carries the type of its cause.
/// </para>
/// </summary>
internal sealed class LedgerGuard(MeteringMetrics? metrics)
{
    private static readonly ResiliencePipeline Pipeline = new ResiliencePipelineBuilder()
        .AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = args => ValueTask.FromResult(
                args.Outcome.Exception is { } ex && !args.Context.CancellationToken.IsCancellationRequested && IsTransient(ex)),
            MaxRetryAttempts = 1,
            Delay = TimeSpan.FromMilliseconds(50),
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
        })
        .Build();

    /// <summary>Runs <paramref name="work"/>; <paramref name="operation"/> names it in the metrics (a constant, e.g. "record").</summary>
    public async Task<T> RunAsync<T>(string operation, Func<CancellationToken, Task<T>> work, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var result = await Pipeline.ExecuteAsync(static async (work, token) => await work(token), work, cancellationToken);
            metrics?.RecordPostgresCall(operation, Stopwatch.GetElapsedTime(started));
            return result;
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested && IsTransient(ex))
        {
            var cause = Cause(ex) ?? ex;
            metrics?.RecordPostgresCall(operation, Stopwatch.GetElapsedTime(started), cause.GetType().Name);
            throw new StoreUnavailableException("ledger", cause);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            metrics?.RecordPostgresCall(operation, Stopwatch.GetElapsedTime(started), ex.GetType().Name);
            throw;
        }
    }

    /// <summary>Whether <paramref name="exception"/>, or what it wraps, is a PostgreSQL failure that may go away on its own.</summary>
    public static bool IsTransient(Exception exception) => Cause(exception) switch
    {
        PostgresException postgres => IsTransientState(postgres.SqlState),
        NpgsqlException or TimeoutException or SocketException or IOException => true,
        _ => false,
    };

    /// <summary>The SQLSTATEs after which the same transaction may well succeed a moment later.</summary>
    public static bool IsTransientState(string sqlState) =>
        sqlState.StartsWith("08", StringComparison.Ordinal) // connection exception
        || sqlState.StartsWith("53", StringComparison.Ordinal) // insufficient resources: 53300 too many clients, 53200 out of memory, ...
        || sqlState is PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown or PostgresErrorCodes.CannotConnectNow
            or PostgresErrorCodes.SerializationFailure or PostgresErrorCodes.DeadlockDetected
            or PostgresErrorCodes.LockNotAvailable or PostgresErrorCodes.QueryCanceled;

    /// <summary>The first PostgreSQL, time-out or network failure in the chain of inner exceptions, or null.</summary>
    private static Exception? Cause(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is NpgsqlException or TimeoutException or SocketException or IOException)
            {
                return e;
            }
        }

        return null;
    }
}
