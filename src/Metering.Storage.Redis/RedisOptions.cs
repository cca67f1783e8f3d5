using System.ComponentModel.DataAnnotations;

namespace Metering.Storage.Redis;

/// <summary>Settings of the Redis stores (section <c>Redis</c>).</summary>
public sealed class RedisOptions
{
    /// <summary>How long a cached counter lives after its last write: an upper bound on how stale a counter
    /// can stay if a write to Redis fails after the ledger committed.</summary>
    [Range(typeof(TimeSpan), "00:00:05", "1.00:00:00")]
    public TimeSpan CounterTtl { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>How long a cached subscription lives.</summary>
    [Range(typeof(TimeSpan), "00:00:05", "1.00:00:00")]
    public TimeSpan SubscriptionTtl { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>How long the shared catalog version lives after its last write; when missing it is read from PostgreSQL.</summary>
    [Range(typeof(TimeSpan), "00:00:05", "1.00:00:00")]
    public TimeSpan CatalogVersionTtl { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Time budget of one Redis call, retries included (and never more than what is left of the caller's
    /// deadline). Each attempt gets an equal share of it.</summary>
    [Range(typeof(TimeSpan), "00:00:00.050", "00:00:30")]
    public TimeSpan OperationTimeout { get; set; } = TimeSpan.FromMilliseconds(150);

    /// <summary>Retries of a call that failed transiently (a connection error, a time-out, READONLY, LOADING, OOM, ...).</summary>
    [Range(0, 5)]
    public int MaxRetries { get; set; } = 1;

    /// <summary>How long the circuit breaker, once open, fails calls at once before it lets one call try Redis again.</summary>
    [Range(typeof(TimeSpan), "00:00:00.500", "00:01:00")]
    public TimeSpan BreakDuration { get; set; } = TimeSpan.FromMilliseconds(500);
}
