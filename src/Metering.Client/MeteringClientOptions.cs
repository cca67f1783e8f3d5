using System.ComponentModel.DataAnnotations;
using System.Security.Cryptography.X509Certificates;

namespace Metering.Client;

/// <summary>Settings of the Metering client (configuration section <c>Metering:Client</c> by convention).</summary>
public sealed class MeteringClientOptions
{
    /// <summary>The service's gRPC address; <c>https://</c> for TLS.</summary>
    [Required]
    public Uri Address { get; set; } = new("http://127.0.0.1:50051");

    /// <summary>The API key sent as <c>authorization: Bearer &lt;key&gt;</c>.</summary>
    public string? ApiKey { get; set; }

    /// <summary>A file holding the API key (e.g. a mounted secret), read when the client starts; used when <see cref="ApiKey"/> is empty.</summary>
    public string? ApiKeyFile { get; set; }

    /// <summary>A client certificate for mTLS (with its private key); null for none.</summary>
    public X509Certificate2? ClientCertificate { get; set; }

    /// <summary>Deadline of a check (CheckLimit), after which the fail policy answers.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "00:10:00")]
    public TimeSpan CheckTimeout { get; set; } = TimeSpan.FromMilliseconds(300);

    /// <summary>Deadline of a tracking call, a release and a read.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "00:10:00")]
    public TimeSpan TrackTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Attempts of an idempotent call (TrackUsage, GetRemaining, ReleaseReservation) on UNAVAILABLE, within its deadline (gRPC retry policy); 1 turns retries off.</summary>
    [Range(1, 5)]
    public int MaxAttempts { get; set; } = 3;

    /// <summary>The fail policy of each usage type when Metering cannot answer a check.</summary>
    public Dictionary<string, FailPolicy> FailPolicies { get; set; } = new(StringComparer.Ordinal);

    /// <summary>The fail policy of a usage type that <see cref="FailPolicies"/> does not name: allow, so that an outage never blocks a session.</summary>
    public FailPolicy DefaultFailPolicy { get; set; } = FailPolicy.Allow;

    /// <summary>The usage type of a session's minutes.</summary>
    public string MinutesUsageType { get; set; } = "minutes_per_month";

    /// <summary>The usage type of a session's interview slot.</summary>
    public string InterviewsUsageType { get; set; } = "interviews_per_day";

    /// <summary>The folder of the durable spool (an SQLite database, <c>metering-spool.db</c>).</summary>
    [Required]
    public string SpoolDirectory { get; set; } = Path.Combine(
        Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create),
        "metering-client");

    /// <summary>Most records the spool holds; past it, <see cref="IMeteringClient.TrackAsync"/> refuses new records (logged and counted).</summary>
    [Range(1, int.MaxValue)]
    public int SpoolMaxRecords { get; set; } = 100_000;

    /// <summary>Age after which an undelivered record is given up (moved to the spool's dead letters, logged); the service accepts usage up to 35 days old.</summary>
    [Range(typeof(TimeSpan), "00:00:01", "35.00:00:00")]
    public TimeSpan SpoolMaxAge { get; set; } = TimeSpan.FromDays(30);

    /// <summary>The spool is reported as backing up (a warning, once) when it holds more records than this…</summary>
    [Range(1, int.MaxValue)]
    public int SpoolWarningRecords { get; set; } = 1_000;

    /// <summary>…or when its oldest record has waited longer than this.</summary>
    public TimeSpan SpoolWarningAge { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>First wait before a record is delivered again after a failure; doubles each time (with jitter).</summary>
    public TimeSpan RetryInitialBackoff { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Longest wait between two deliveries of one record.</summary>
    public TimeSpan RetryMaxBackoff { get; set; } = TimeSpan.FromSeconds(30);

    internal FailPolicy PolicyOf(string usageType) =>
        FailPolicies.TryGetValue(usageType, out var policy) ? policy : DefaultFailPolicy;
}
