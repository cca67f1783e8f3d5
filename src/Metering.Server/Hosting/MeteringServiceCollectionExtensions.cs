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
using Microsoft.EntityFrameworkCore.Diagnostics;
using Microsoft.Extensions.Diagnostics.HealthChecks;
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
        services.AddSingleton<FailureLog>();

        // ErrorInterceptor logs each failed call once (an outage as a summary); gRPC's own line per failed call
        // (Information) would repeat it. Its errors (a handler that threw past the interceptor) still show.
        services.AddLogging(logging => logging.AddFilter("Grpc.AspNetCore.Server.ServerCallHandler", LogLevel.Warning));
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
            MaxLiveHoldsPerSubject = section.GetValue("MaxLiveHoldsPerSubject", 100),
        });
        services.AddSingleton(sp => OffsetTimeProvider.For(configuration, sp.GetRequiredService<IHostEnvironment>()));
        services.AddSingleton<CatalogDirectory>();
        services.AddSingleton<ICatalogProvider>(sp => sp.GetRequiredService<CatalogDirectory>());
        services.AddSingleton<SubscriptionDirectory>();
        services.AddSingleton<CounterCache>();
        services.AddSingleton<UsageMeter>();
        services.AddSingleton<CounterSync>();
        services.AddHostedService<CounterSyncService>();
        services.AddSingleton<Core.History.HistoryReader>();
        services.AddSingleton<CounterAuditor>();
        return services;
    }

    /// <summary>The ledger of record on PostgreSQL.</summary>
    public static IServiceCollection AddMeteringPostgres(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddPooledDbContextFactory<MeteringDbContext>((sp, options) =>
            options.UseNpgsql(WithLedgerDefaults(RequiredConnectionString(sp, "Postgres")))
                // A failed statement surfaces as the call's failure, which ErrorInterceptor logs once (an outage as a
                // summary); EF Core's own error line for the same failure would repeat it on every call.
                .ConfigureWarnings(warnings => warnings.Log(
                    (RelationalEventId.CommandError, LogLevel.Debug),
                    (RelationalEventId.ConnectionError, LogLevel.Debug),
                    (RelationalEventId.TransactionError, LogLevel.Debug),
                    (CoreEventId.QueryIterationFailed, LogLevel.Debug),
                    (CoreEventId.SaveChangesFailed, LogLevel.Debug))));
        services.AddOptions<LedgerWriteOptions>().Bind(configuration.GetSection("Ledger")).ValidateDataAnnotations().ValidateOnStart();
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
    /// The defaults that bound what the ledger can cost, each added only when the connection string does not set its own:
    /// <list type="bullet">
    /// <item><description><c>Max Pool Size=16</c>: connections per instance (size: instances × Max Pool Size ≤
    /// max_connections − the connections kept for admins, migrations and other clients).</description></item>
    /// <item><description><c>Timeout=5</c>: seconds to wait for a connection, from the pool or the server.</description></item>
    /// <item><description><c>Command Timeout=5</c>: seconds before Npgsql gives up on a statement the server does not answer.</description></item>
    /// <item><description><c>Options=-c statement_timeout=3s -c lock_timeout=1s</c>: the server ends a statement that
    /// runs too long or waits too long for a lock, e.g. behind an ACCESS EXCLUSIVE lock.</description></item>
    /// <item><description><c>Max Auto Prepare=32</c>: the ledger runs the same few statements on every call, so they are
    /// prepared once per connection instead of planned every time.</description></item>
    /// </list>
    /// All of these are shorter than a caller's typical deadline; the caller's deadline ends a call earlier still.
    /// </summary>
    internal static string WithLedgerDefaults(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        var named = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = connectionString }.Keys
            .Cast<string>()
            .Select(k => k.Replace(" ", "", StringComparison.Ordinal).ToUpperInvariant())
            .ToHashSet(StringComparer.Ordinal);
        var defaults = new NpgsqlConnectionStringBuilder();
        bool Unset(object value, object defaultValue, params string[] keywords) =>
            Equals(value, defaultValue) && !keywords.Any(named.Contains);

        if (Unset(builder.MaxPoolSize, defaults.MaxPoolSize, "MAXPOOLSIZE", "MAXIMUMPOOLSIZE"))
        {
            builder.MaxPoolSize = 16;
        }

        if (Unset(builder.Timeout, defaults.Timeout, "TIMEOUT", "CONNECTTIMEOUT", "CONNECTIONTIMEOUT"))
        {
            builder.Timeout = 5;
        }

        if (Unset(builder.CommandTimeout, defaults.CommandTimeout, "COMMANDTIMEOUT"))
        {
            builder.CommandTimeout = 5;
        }

        if (Unset(builder.MaxAutoPrepare, defaults.MaxAutoPrepare, "MAXAUTOPREPARE"))
        {
            builder.MaxAutoPrepare = 32;
        }

        var options = builder.Options ?? "";
        foreach (var (setting, value) in new[] { ("statement_timeout", "3s"), ("lock_timeout", "1s") })
        {
            if (!options.Contains(setting, StringComparison.OrdinalIgnoreCase))
            {
                options = $"{options} -c {setting}={value}".Trim();
            }
        }

        builder.Options = options;
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
