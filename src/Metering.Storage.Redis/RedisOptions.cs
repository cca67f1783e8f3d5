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

    /// <summary>Time budget of one Redis call, retries included.</summary>
    [Range(typeof(TimeSpan), "00:00:00.050", "00:00:30")]
    public TimeSpan OperationTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Retries of a call that failed on a connection error or time-out.</summary>
    [Range(0, 5)]
    public int MaxRetries { get; set; } = 2;
}
