using Metering.Core.Ports;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>Registration of the hot-path counters and the shared caches on Redis, and their health check.</summary>
public static class RedisStorageServiceCollectionExtensions
{
    /// <summary>The counters, subscription cache and catalog version on Redis (<c>ConnectionStrings:Redis</c>, settings in <c>Redis</c>).</summary>
    public static IServiceCollection AddRedisCounters(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<RedisOptions>().Bind(configuration.GetSection("Redis")).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<RedisOptions>>().Value);
        services.AddSingleton<IConnectionMultiplexer>(sp =>
        {
            var name = "Redis";
            var options = ConfigurationOptions.Parse(sp.GetRequiredService<IConfiguration>().GetConnectionString(name)
                ?? throw new InvalidOperationException($"ConnectionStrings:{name} is not set (environment: ConnectionStrings__{name})."));
            options.AbortOnConnectFail = false;
            return ConnectionMultiplexer.Connect(options);
        });
        services.AddSingleton<RedisGuard>();
        services.AddSingleton<ICounterStore, RedisCounterStore>();
        services.AddSingleton<ISubscriptionCache, RedisSubscriptionCache>();
        services.AddSingleton<ICatalogVersionCache, RedisCatalogVersionCache>();
        return services;
    }
}

/// <summary>
/// Redis down, or refusing Metering's calls, is degraded, not unhealthy: calls are answered from the ledger meanwhile,
/// and every instance shares the one Redis, so failing readiness would take the whole service down with it. A refusal
/// that waiting will not fix (a script error, a wrong type, an ACL) says so, as it is logged once, until a call succeeds.
/// </summary>
public sealed class RedisHealthCheck(IConnectionMultiplexer redis, RedisGuard guard) : IHealthCheck
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
