using Grpc.AspNetCore.HealthChecks;
using Metering.Core.Catalog;
using Metering.Storage.Postgres;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using StackExchange.Redis;

namespace Metering.Server.Hosting;

/// <summary>
/// grpc.health.v1 service names and what each reports. <c>liveness</c>: the process answers (restart it when not).
/// <c>readiness</c>, <c>""</c> (overall) and each API's service name: it can serve calls now (send it traffic when
/// SERVING): PostgreSQL reachable, a catalog with usage types and plans, not shutting down. A Redis outage is reported as
/// degraded, which stays SERVING: the service answers without Redis.
/// </summary>
internal static class HealthChecks
{
    public const string Liveness = "liveness";
    public const string Readiness = "readiness";
    private const string LiveTag = "live";
    private const string ReadyTag = "ready";

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
            .AddCheck<PostgresHealthCheck>("postgres", tags: [ReadyTag])
            .AddCheck<CatalogHealthCheck>("catalog", tags: [ReadyTag])
            .AddCheck<RedisHealthCheck>("redis", tags: [ReadyTag]);
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

internal sealed class PostgresHealthCheck(IDbContextFactory<MeteringDbContext> contexts) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            await using var db = await contexts.CreateDbContextAsync(cancellationToken);
            return await db.Database.CanConnectAsync(cancellationToken)
                ? HealthCheckResult.Healthy()
                : HealthCheckResult.Unhealthy("PostgreSQL does not accept connections.");
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or InvalidOperationException or TimeoutException)
        {
            return HealthCheckResult.Unhealthy("PostgreSQL does not accept connections.", ex);
        }
    }
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

/// <summary>
/// Redis down, or refusing Metering's calls, is degraded, not unhealthy: calls are answered from the ledger meanwhile,
/// and every instance shares the one Redis, so failing readiness would take the whole service down with it. A refusal
/// that waiting will not fix (a script error, a wrong type, an ACL) says so, as it is logged once, until a call succeeds.
/// </summary>
internal sealed class RedisHealthCheck(IConnectionMultiplexer redis, Metering.Storage.Redis.RedisGuard guard) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (guard.ConfigurationError is { } error)
        {
            return HealthCheckResult.Degraded($"Redis refuses Metering's calls, which are answered from the ledger meanwhile: {error}");
        }

        try
        {
            await redis.GetDatabase().PingAsync().WaitAsync(TimeSpan.FromSeconds(2), cancellationToken);
            return HealthCheckResult.Healthy();
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            return HealthCheckResult.Degraded("Redis does not answer: serving from the ledger (degraded).", ex);
        }
    }
}
