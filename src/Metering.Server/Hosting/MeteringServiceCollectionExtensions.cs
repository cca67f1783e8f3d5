using Metering.Core;
using Metering.Core.Catalog;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Telemetry;
using Metering.Core.Usage;
using Metering.Server.Grpc;
using Metering.Server.Security;
using NodaTime;
using Npgsql;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Metering.Server.Hosting;

/// <summary>Registration of every part of the service, one method per concern.</summary>
internal static class MeteringServiceCollectionExtensions
{
    /// <summary>The gRPC surface: services, deadline check and caller scope, error mapping, reflection and grpc.health.v1.</summary>
    public static IServiceCollection AddMeteringGrpc(this IServiceCollection services)
    {
        services.AddGrpc(options =>
        {
            options.Interceptors.Add<ParsedRequestInterceptor>();
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
        services.AddSingleton<CallContext>();
        services.AddSingleton<CounterCache>();
        services.AddSingleton<EventRecorder>();
        services.AddSingleton<UsageMeter>();
        services.AddSingleton<UsageCorrections>();
        services.AddSingleton<CounterSync>();
        services.AddHostedService<CounterSyncService>();
        services.AddSingleton<Core.History.HistoryReader>();
        services.AddSingleton<CounterAuditor>();
        return services;
    }

    /// <summary>
    /// Traces and metrics through OpenTelemetry: metrics scraped by Prometheus on their own port (Metrics:Port) and
    /// exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set. Traces are recorded only then: with nowhere to send
    /// them, building a trace for every call would be pure cost on the hot path.
    /// </summary>
    public static IServiceCollection AddMeteringTelemetry(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddMetrics();
        services.AddSingleton<MeteringMetrics>();
        var exportOtlp = !string.IsNullOrEmpty(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        var telemetry = services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("metering"))
            .WithMetrics(metrics =>
            {
                metrics.AddAspNetCoreInstrumentation().AddMeter(MeteringMetrics.MeterName);
                if (ServerHosting.MetricsPort(configuration) > 0)
                {
                    metrics.AddPrometheusExporter(prometheus => prometheus.ScrapeResponseCacheDurationMilliseconds = 0);
                }
            });
        if (exportOtlp)
        {
            telemetry.WithTracing(tracing => tracing.AddAspNetCoreInstrumentation().AddNpgsql()).UseOtlpExporter();
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
