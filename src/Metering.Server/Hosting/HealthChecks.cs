using Metering.Core.Catalog;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Metering.Server.Hosting;

/// <summary>
/// grpc.health.v1 service names and what each reports. <c>liveness</c>: the process answers (restart it when not).
/// <c>readiness</c>, <c>""</c> (overall) and each API's service name: it can serve calls now (send it traffic when
/// SERVING): the storage backend's checks (PostgreSQL reachable, or the embedded database file), a catalog with usage
/// types and plans, not shutting down. A Redis outage is reported as degraded, which stays SERVING: the service answers
/// without Redis.
/// </summary>
internal static class HealthChecks
{
    public const string Liveness = "liveness";
    public const string Readiness = "readiness";
    private const string LiveTag = "live";

    /// <summary>The tag of every check that readiness reports; the storage backend tags its own checks with it.</summary>
    public const string ReadyTag = "ready";

    /// <summary>Every service name that reports readiness.</summary>
    public static readonly IReadOnlyList<string> ReadinessNames =
        [Readiness, "", "metering.v1.MeteringService", "metering.v1.AdminService"];

    public static IServiceCollection AddMeteringHealthChecks(this IServiceCollection services)
    {
        services.AddGrpcHealthChecks(options =>
            {
                options.Services.Clear();
                options.Services.Map(Liveness, check => check.Tags.Contains(LiveTag));
                foreach (var name in ReadinessNames)
                {
                    options.Services.Map(name, check => check.Tags.Contains(ReadyTag));
                }
            })
            .AddCheck("process", () => HealthCheckResult.Healthy(), tags: [LiveTag])
            .AddCheck<ShutdownHealthCheck>("shutdown", tags: [ReadyTag])
            .AddCheck<CatalogHealthCheck>("catalog", tags: [ReadyTag]);
        return services;
    }
}

/// <summary>Unhealthy from the moment the process is told to stop, so load balancers stop sending calls while it drains.</summary>
internal sealed class ShutdownHealthCheck(IHostApplicationLifetime lifetime) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(lifetime.ApplicationStopping.IsCancellationRequested
            ? HealthCheckResult.Unhealthy("Shutting down: finishing the calls in flight.")
            : HealthCheckResult.Healthy());
}

/// <summary>An empty catalog answers every CheckLimit with "unknown usage type": not ready.</summary>
internal sealed class CatalogHealthCheck(CatalogDirectory catalog) : IHealthCheck
{
    public const string EmptyMessage =
        "The catalog has no usage types or no plans: every call would fail. Seed it (Catalog:UsageTypes and Catalog:Plans in appsettings.json next to the binary) or create them with AdminService/UpsertUsageType and UpsertPlan.";

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var current = catalog.Current;
        return Task.FromResult(current.UsageTypes.Count == 0 || current.Plans.Count == 0
            ? HealthCheckResult.Unhealthy(EmptyMessage)
            : HealthCheckResult.Healthy());
    }
}
