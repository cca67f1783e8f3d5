using Metering.Core.Errors;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;
using Polly.Timeout;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>
/// Runs Redis calls under one resilience pipeline: a total time budget, a short jittered retry on
/// connection errors and time-outs, and a circuit breaker so a hanging Redis fails fast. Whatever still
/// fails surfaces as <see cref="StoreUnavailableException"/>, the one failure the domain handles.
/// Every script is safe to run twice, which is what makes the retry safe.
/// </summary>
public sealed class RedisGuard
{
    private readonly ResiliencePipeline _pipeline;

    public RedisGuard(RedisOptions options)
    {
        var transient = new PredicateBuilder()
            .Handle<RedisConnectionException>()
            .Handle<RedisTimeoutException>()
            .Handle<TimeoutRejectedException>();
        var builder = new ResiliencePipelineBuilder().AddTimeout(options.OperationTimeout);
        if (options.MaxRetries > 0)
        {
            builder.AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = transient,
                MaxRetryAttempts = options.MaxRetries,
                Delay = TimeSpan.FromMilliseconds(25),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
            });
        }

        _pipeline = builder
            .AddCircuitBreaker(new CircuitBreakerStrategyOptions
            {
                ShouldHandle = transient,
                FailureRatio = 0.5,
                MinimumThroughput = 20,
                SamplingDuration = TimeSpan.FromSeconds(10),
                BreakDuration = TimeSpan.FromSeconds(5),
            })
            .AddTimeout(options.OperationTimeout / (options.MaxRetries + 1))
            .Build();
    }

    public async Task<T> RunAsync<T>(Func<Task<T>> call, CancellationToken cancellationToken)
    {
        try
        {
            return await _pipeline.ExecuteAsync(
                static async (state, token) => await state().WaitAsync(token),
                call,
                cancellationToken);
        }
        catch (Exception ex) when (ex is RedisConnectionException or RedisTimeoutException or TimeoutRejectedException or BrokenCircuitException)
        {
            throw new StoreUnavailableException("counter", ex);
        }
    }
}
