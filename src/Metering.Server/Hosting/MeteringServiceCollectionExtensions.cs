using Metering.Core;
using Metering.Core.Catalog;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Telemetry;
using Metering.Core.Usage;
using Metering.Server.Grpc;
using Metering.Server.Security;
using Metering.Storage.Postgres;
using Metering.Storage.Redis;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using NodaTime;
using Npgsql;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using StackExchange.Redis;

namespace Metering.Server.Hosting;

/// <summary>Registration of every part of the service, one method per concern.</summary>
internal static class MeteringServiceCollectionExtensions
{
    /// <summary>The gRPC surface: services, deadline check and caller scope, error mapping, reflection and grpc.health.v1.</summary>
    public static IServiceCollection AddMeteringGrpc(this IServiceCollection services)
    {
        services.AddGrpc(options =>
        {
            options.Interceptors.Add<CallerInterceptor>();
            options.Interceptors.Add<ErrorInterceptor>();
            options.MaxReceiveMessageSize = RequestFrameValidation.MaxMessageSize;
        });
        services.AddGrpcReflection();
        services.AddMeteringHealthChecks();
        return services;
    }

    /// <summary>The domain: settings, clock, catalog and the use cases.</summary>
    public static IServiceCollection AddMeteringCore(this IServiceCollection services, IConfiguration configuration)
    {
        var section = configuration.GetSection("Metering");
        services.AddSingleton(new MeteringSettings
        {
            DefaultPlanId = section["DefaultPlanId"] ?? "free",
            DefaultReservationTtl = Duration.FromTimeSpan(section.GetValue("DefaultReservationTtl", TimeSpan.FromHours(2))),
            EnforceHoldTtl = Duration.FromTimeSpan(section.GetValue("EnforceHoldTtl", TimeSpan.FromMinutes(1))),
        });
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<CatalogDirectory>();
        services.AddSingleton<ICatalogProvider>(sp => sp.GetRequiredService<CatalogDirectory>());
        services.AddSingleton<SubscriptionDirectory>();
        services.AddSingleton<UsageMeter>();
        services.AddSingleton<Core.History.HistoryReader>();
        services.AddSingleton<CounterAuditor>();
        return services;
    }

    /// <summary>The ledger of record on PostgreSQL.</summary>
    public static IServiceCollection AddMeteringPostgres(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddPooledDbContextFactory<MeteringDbContext>((sp, options) =>
            options.UseNpgsql(WithAutoPrepare(RequiredConnectionString(sp, "Postgres"))));
        services.Configure<CatalogSeed>(configuration.GetSection("Catalog"));
        services.AddSingleton<PostgresCatalogStore>();
        services.AddSingleton<ICatalogStore>(sp => sp.GetRequiredService<PostgresCatalogStore>());
        services.AddSingleton<IUsageLedger, PostgresUsageLedger>();
        services.AddSingleton<ISubscriptionStore, PostgresSubscriptionStore>();
        services.AddSingleton<IHistoryStore, PostgresHistoryStore>();
        return services;
    }

    /// <summary>The hot-path counters and the subscription cache on Redis.</summary>
    public static IServiceCollection AddMeteringRedis(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<RedisOptions>().Bind(configuration.GetSection("Redis")).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<RedisOptions>>().Value);
        services.AddSingleton<IConnectionMultiplexer>(sp =>
        {
            var options = ConfigurationOptions.Parse(RequiredConnectionString(sp, "Redis"));
            options.AbortOnConnectFail = false;
            return ConnectionMultiplexer.Connect(options);
        });
        services.AddSingleton<RedisGuard>();
        services.AddSingleton<ICounterStore, RedisCounterStore>();
        services.AddSingleton<ISubscriptionCache, RedisSubscriptionCache>();
        services.AddSingleton<ICatalogVersionCache, RedisCatalogVersionCache>();
        return services;
    }

    /// <summary>
    /// The ledger runs the same few statements on every call: let Npgsql prepare them on the server once per
    /// connection instead of planning them every time, unless the connection string says otherwise.
    /// </summary>
    private static string WithAutoPrepare(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        if (!connectionString.Contains("Max Auto Prepare", StringComparison.OrdinalIgnoreCase))
        {
            builder.MaxAutoPrepare = 32;
        }

        return builder.ConnectionString;
    }

    private static string RequiredConnectionString(IServiceProvider services, string name) =>
        services.GetRequiredService<IConfiguration>().GetConnectionString(name)
        ?? throw new InvalidOperationException($"ConnectionStrings:{name} is not set (environment: ConnectionStrings__{name}).");

    /// <summary>
    /// Traces and metrics through OpenTelemetry: metrics scraped by Prometheus on their own port (Metrics:Port) and,
    /// like traces, exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    /// </summary>
    public static IServiceCollection AddMeteringTelemetry(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddMetrics();
        services.AddSingleton<MeteringMetrics>();
        var telemetry = services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("metering"))
            .WithTracing(tracing => tracing.AddAspNetCoreInstrumentation().AddNpgsql())
            .WithMetrics(metrics =>
            {
                metrics.AddAspNetCoreInstrumentation().AddMeter(MeteringMetrics.MeterName);
                if (ServerHosting.MetricsPort(configuration) > 0)
                {
                    metrics.AddPrometheusExporter(prometheus => prometheus.ScrapeResponseCacheDurationMilliseconds = 0);
                }
            });
        if (!string.IsNullOrEmpty(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
        {
            telemetry.UseOtlpExporter();
        }

        return services;
    }

    /// <summary>GET /metrics (Prometheus text format) on the metrics port only, without an API key.</summary>
    public static WebApplication MapMeteringMetrics(this WebApplication app)
    {
        var port = ServerHosting.MetricsPort(app.Configuration);
        if (port > 0)
        {
            app.MapPrometheusScrapingEndpoint().RequireHost($"*:{port.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
        }

        return app;
    }
}
