using Metering.Core.Errors;
using Npgsql;
using Polly;
using Polly.Retry;

namespace Metering.Storage.Postgres;

/// <summary>
/// Runs ledger work under one resilience pipeline: transient PostgreSQL failures (a dropped connection, a failover,
/// a serialization conflict) are retried briefly; what still fails surfaces as <see cref="StoreUnavailableException"/>.
/// Every unit of work passed here is one transaction that is safe to run again: events are unique per idempotency key.
/// </summary>
internal static class LedgerGuard
{
    private static readonly ResiliencePipeline Pipeline = new ResiliencePipelineBuilder()
        .AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = new PredicateBuilder().Handle<NpgsqlException>(ex => ex.IsTransient),
            MaxRetryAttempts = 2,
            Delay = TimeSpan.FromMilliseconds(50),
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
        })
        .Build();

    public static async Task<T> RunAsync<T>(Func<CancellationToken, Task<T>> work, CancellationToken cancellationToken)
    {
        try
        {
            return await Pipeline.ExecuteAsync(static async (work, token) => await work(token), work, cancellationToken);
        }
        catch (NpgsqlException ex) when (ex.IsTransient)
        {
            throw new StoreUnavailableException("ledger", ex);
        }
    }
}
