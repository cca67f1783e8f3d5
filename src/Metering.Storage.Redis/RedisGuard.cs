using System.Diagnostics;
using Metering.Core.Errors;
using Metering.Core.Telemetry;
using Microsoft.Extensions.Logging;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;
using Polly.Timeout;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>
/// Runs Redis calls under one resilience pipeline: a total time budget (<see cref="RedisOptions.OperationTimeout"/>,
/// never more than what is left of the caller's deadline), at most <see cref="RedisOptions.MaxRetries"/> short retries of
/// a transient failure, and a circuit breaker that opens on this instance's own failures (two are enough), so that a
/// hanging or failed-over Redis costs one call its budget and the following calls nothing.
/// <para>
/// Failures are classified once, here. Transient: connection errors, time-outs, and the server errors a healthy Redis
/// answers while it cannot serve (<c>READONLY</c>, <c>LOADING</c>, <c>OOM</c>, <c>BUSY</c>, <c>MASTERDOWN</c>,
/// <c>CLUSTERDOWN</c>, <c>TRYAGAIN</c>, <c>NOREPLICAS</c>): retried, counted by the breaker. Any other server error
/// (a script error, <c>WRONGTYPE</c>, <c>NOSCRIPT</c> after the source was sent) is a configuration error or a bug: it
/// is not retried, is logged once, and <see cref="ConfigurationError"/> stays set (failing the health check) until a
/// call succeeds again. Every failure surfaces as <see cref="StoreUnavailableException"/>, the one failure the domain
/// handles. Every script is safe to run twice, which is what makes the retry safe.
/// </para>
/// <para>
/// <see cref="IsAvailable"/>, <see cref="Degraded"/> and <see cref="Recovered"/> tell the rest of the service when
/// Redis is known to be down (the breaker is open) and when it is back (a call went through again).
/// </para>
/// <para>
/// Every call is measured here, once with its retries (<see cref="MeteringMetrics.RecordRedisCall"/>): its operation
/// name is one of the constant names the adapters pass (the script or command), and a failure carries the exception's
/// type (<c>BrokenCircuitException</c> for a call refused while Redis is known to be down).
/// </para>
/// </summary>
public sealed partial class RedisGuard
{
    /// <summary>First word of the server errors that mean "not now", not "never".</summary>
    private static readonly HashSet<string> TransientServerErrors = new(StringComparer.Ordinal)
    {
        "READONLY", "LOADING", "OOM", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS",
    };

    private readonly ResiliencePipeline _pipeline;
    private readonly CircuitBreakerStateProvider _breaker = new();
    private readonly ILogger<RedisGuard> _logger;
    private readonly MeteringMetrics? _metrics;
    private readonly Lock _gate = new();
    private long _degradedSince;
    private long _callsWithoutRedis;
    private bool _degraded;
    private string? _configurationError;

    public RedisGuard(RedisOptions options, ILogger<RedisGuard> logger, MeteringMetrics? metrics = null)
    {
        _logger = logger;
        _metrics = metrics;
        var transient = new PredicateBuilder().Handle<Exception>(IsTransient);
        var builder = new ResiliencePipelineBuilder().AddTimeout(options.OperationTimeout);
        if (options.MaxRetries > 0)
        {
            builder.AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = transient,
                MaxRetryAttempts = options.MaxRetries,
                Delay = TimeSpan.FromMilliseconds(20),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
            });
        }

        _pipeline = builder
            .AddCircuitBreaker(new CircuitBreakerStrategyOptions
            {
                ShouldHandle = transient,
                FailureRatio = 0.5,
                MinimumThroughput = 2,
                SamplingDuration = TimeSpan.FromSeconds(1),
                BreakDuration = options.BreakDuration,
                StateProvider = _breaker,
                OnOpened = _ =>
                {
                    OnOpened();
                    return ValueTask.CompletedTask;
                },
                OnClosed = _ =>
                {
                    OnClosed();
                    return ValueTask.CompletedTask;
                },
            })
            .AddTimeout(options.OperationTimeout / (options.MaxRetries + 1))
            .Build();
    }

    /// <summary>Redis went unavailable: the breaker opened. Raised once per outage; handlers must return quickly.</summary>
    public event EventHandler? Degraded;

    /// <summary>Redis answers again: a call went through after an outage. Handlers must return quickly.</summary>
    public event EventHandler? Recovered;

    /// <summary>False while Redis is known to be unavailable (the breaker is open): calls fail at once without trying it.</summary>
    public bool IsAvailable => _breaker.CircuitState is not (CircuitState.Open or CircuitState.Isolated);

    /// <summary>
    /// The last configuration error or bug Redis reported (a script error, a wrong type, a script it cannot load), or
    /// null when there is none or a call has succeeded since. The Redis health check fails while it is set.
    /// </summary>
    public string? ConfigurationError => Volatile.Read(ref _configurationError);

    /// <summary>Whether <paramref name="exception"/> is a failure that may go away on its own (retry, count, degrade).</summary>
    public static bool IsTransient(Exception exception) => exception switch
    {
        RedisConnectionException or RedisTimeoutException or TimeoutRejectedException or TimeoutException => true,
        RedisServerException server => TransientServerErrors.Contains(ErrorCode(server.Message)),
        _ => false,
    };

    /// <summary>Runs <paramref name="call"/>; <paramref name="operation"/> names it in the metrics (a constant, e.g. "check").</summary>
    public async Task<T> RunAsync<T>(string operation, Func<Task<T>> call, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var result = await _pipeline.ExecuteAsync(
                static async (state, token) => await state().WaitAsync(token),
                call,
                cancellationToken);
            _metrics?.RecordRedisCall(operation, Stopwatch.GetElapsedTime(started));
            if (_configurationError is not null && Interlocked.Exchange(ref _configurationError, null) is not null)
            {
                LogConfigurationErrorCleared();
            }

            return result;
        }
        catch (Exception ex) when (RecordFailure(operation, started, ex, cancellationToken))
        {
            throw; // not reached: the filter records the failure and lets the handlers below take it
        }
        catch (BrokenCircuitException ex)
        {
            Interlocked.Increment(ref _callsWithoutRedis);
            throw new StoreUnavailableException("counter", ex);
        }
        catch (Exception ex) when (IsTransient(ex))
        {
            throw new StoreUnavailableException("counter", ex);
        }
        catch (RedisException ex)
        {
            // Not transient: a script error, a wrong type, NOSCRIPT after the source was sent, a refused command.
            // Logged when it starts; the calls that fail the same way until one succeeds are not logged again.
            if (Interlocked.Exchange(ref _configurationError, ex.Message) is null)
            {
                LogConfigurationError(ex.GetType().Name, ex.Message);
            }

            throw new StoreUnavailableException("counter", ex);
        }
    }

    /// <summary>Records a failed call (the caller giving up is no failure of Redis); always false, as an exception filter.</summary>
    private bool RecordFailure(string operation, long started, Exception exception, CancellationToken cancellationToken)
    {
        if (!(exception is OperationCanceledException && cancellationToken.IsCancellationRequested))
        {
            _metrics?.RecordRedisCall(operation, Stopwatch.GetElapsedTime(started), exception.GetType().Name);
        }

        return false;
    }

    private static string ErrorCode(string message)
    {
        var end = message.IndexOf(' ', StringComparison.Ordinal);
        return end < 0 ? message : message[..end];
    }

    private void OnOpened()
    {
        lock (_gate)
        {
            if (_degraded)
            {
                return; // a half-open probe failed: the same outage
            }

            _degraded = true;
            _degradedSince = Stopwatch.GetTimestamp();
            Interlocked.Exchange(ref _callsWithoutRedis, 0);
        }

        LogDegraded();
        Raise(Degraded, EventArgs.Empty);
    }

    private void OnClosed()
    {
        long since;
        lock (_gate)
        {
            if (!_degraded)
            {
                return;
            }

            _degraded = false;
            since = _degradedSince;
        }

        LogRecovered(Stopwatch.GetElapsedTime(since).TotalSeconds, Interlocked.Read(ref _callsWithoutRedis));
        Raise(Recovered, EventArgs.Empty);
    }

    private void Raise(EventHandler? handlers, EventArgs args)
    {
        if (handlers is null)
        {
            return;
        }

        foreach (var handler in handlers.GetInvocationList().Cast<EventHandler>())
        {
            try
            {
                handler(this, args);
            }
#pragma warning disable CA1031 // A failing handler must not fail the Redis call that changed the state.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                LogHandlerFailed(ex);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Redis unavailable, serving degraded")]
    private partial void LogDegraded();

    [LoggerMessage(Level = LogLevel.Information, Message = "Redis available again after {Seconds:0.0} s, {Calls} calls served without it")]
    private partial void LogRecovered(double seconds, long calls);

    [LoggerMessage(Level = LogLevel.Error, Message = "Redis refused a call ({Kind}: {Reason}); this is a configuration error or a bug, not an outage, and the Redis health check fails until a call succeeds")]
    private partial void LogConfigurationError(string kind, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Redis calls succeed again; the configuration error is cleared")]
    private partial void LogConfigurationErrorCleared();

    [LoggerMessage(Level = LogLevel.Error, Message = "A handler of a Redis availability change failed")]
    private partial void LogHandlerFailed(Exception exception);
}
