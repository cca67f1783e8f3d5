using System.ComponentModel.DataAnnotations;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;

namespace Metering.Server.Hosting;

/// <summary>Settings of the process: when to migrate, how long to drain at shutdown, where to serve metrics.</summary>
internal sealed class ServerOptions
{
    /// <summary>Apply migrations and seed the catalog at start (default: true in Development only).</summary>
    public bool? MigrateOnStart { get; set; }

    /// <summary>How long calls in flight may take to finish after SIGTERM before the process exits anyway.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "01:00:00", ErrorMessage = "Metering:DrainTimeout must be between 00:00:00 and 01:00:00.")]
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long to keep accepting calls after SIGTERM while health already says NOT_SERVING, so that load balancers
    /// (Kubernetes endpoints) stop routing here before the listener closes.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:10:00", ErrorMessage = "Metering:ShutdownDelay must be between 00:00:00 and 00:10:00.")]
    public TimeSpan ShutdownDelay { get; set; } = TimeSpan.Zero;
}

/// <summary>The connection strings the postgres-redis backend cannot run without (checked at start by <see cref="StorageBackends"/>).</summary>
internal sealed class ConnectionStringsOptions
{
    public string? Postgres { get; set; }

    public string? Redis { get; set; }
}

/// <summary>
/// Defaults that the service needs whatever the working directory: the gRPC address, HTTP/2 on it, the metrics
/// listener on its own port, the drain time, and the checks of the settings at start.
/// </summary>
internal static class ServerHosting
{
    public const int DefaultGrpcPort = 50051;
    public const int DefaultMetricsPort = 9464;

    /// <summary>
    /// Content root = the binary's folder unless one is given, so appsettings.json (HTTP/2, the seed catalog) is found
    /// whatever the working directory.
    /// </summary>
    public static WebApplicationOptions Options(string[] args)
    {
        var given = new ConfigurationBuilder()
            .AddEnvironmentVariables("DOTNET_")
            .AddEnvironmentVariables("ASPNETCORE_")
            .AddCommandLine(args)
            .Build()[WebHostDefaults.ContentRootKey];
        return new WebApplicationOptions { Args = args, ContentRootPath = string.IsNullOrEmpty(given) ? AppContext.BaseDirectory : null };
    }

    /// <summary>The port of the Prometheus scrape endpoint, 0 when off (<c>Metrics:Port</c>).</summary>
    public static int MetricsPort(IConfiguration configuration) => configuration.GetValue("Metrics:Port", DefaultMetricsPort);

    /// <summary>
    /// The addresses to listen on: ASPNETCORE_URLS / --urls when given, else port 50051 (127.0.0.1 in Development,
    /// 0.0.0.0 elsewhere, e.g. in a container); plus the metrics port on the same host. Null when Kestrel:Endpoints is
    /// configured: it replaces both (configure the metrics endpoint there too).
    /// </summary>
    public static string? Addresses(IConfiguration configuration, bool development)
    {
        if (configuration.GetSection("Kestrel:Endpoints").GetChildren().Any())
        {
            return null;
        }

        var host = development ? "127.0.0.1" : "0.0.0.0";
        var metricsPort = MetricsPort(configuration);
        var grpc = configuration[WebHostDefaults.ServerUrlsKey] is { Length: > 0 } urls ? urls : $"http://{host}:{DefaultGrpcPort}";
        return metricsPort > 0 ? $"{grpc};http://{host}:{metricsPort}" : grpc;
    }

    public static WebApplicationBuilder ConfigureMeteringServer(this WebApplicationBuilder builder)
    {
        var configuration = builder.Configuration;
        var metricsPort = MetricsPort(configuration);
        if (Addresses(configuration, builder.Environment.IsDevelopment()) is { } addresses)
        {
            builder.WebHost.UseUrls(addresses);
        }

        // gRPC needs HTTP/2 (plaintext h2c only works on an HTTP/2-only endpoint); Prometheus scrapes over HTTP/1.1;
        // HTTP/JSON takes HTTP/1.1, and HTTP/2 where TLS negotiates it. One delegate for all three: Kestrel keeps only the
        // last one it is given.
        var configuredProtocols = configuration["Kestrel:EndpointDefaults:Protocols"] is { Length: > 0 };
        var httpApiPort = HttpApi.HttpApiExtensions.Port(configuration);
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen =>
        {
            if (metricsPort > 0 && listen.IPEndPoint?.Port == metricsPort)
            {
                listen.Protocols = HttpProtocols.Http1;
            }
            else if (httpApiPort > 0 && listen.IPEndPoint?.Port == httpApiPort)
            {
                listen.Protocols = HttpProtocols.Http1AndHttp2;
            }
            else if (!configuredProtocols)
            {
                listen.Protocols = HttpProtocols.Http2;
            }
        }));

        builder.Services.AddOptions<ServerOptions>().Bind(configuration.GetSection("Metering")).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<HostOptions>().Configure<IOptions<ServerOptions>>((host, server) =>
            host.ShutdownTimeout = server.Value.ShutdownDelay + server.Value.DrainTimeout);
        builder.Services.AddHostedService<ShutdownDelay>();
        return builder;
    }

    /// <summary>Whether this start applies migrations and seeds the catalog.</summary>
    public static bool MigrateOnStart(this WebApplication app) =>
        app.Services.GetRequiredService<IOptions<ServerOptions>>().Value.MigrateOnStart ?? app.Environment.IsDevelopment();
}

/// <summary>
/// On SIGTERM, before the listener closes: health is NOT_SERVING already (<see cref="ShutdownHealthCheck"/>), and the
/// service keeps answering for <see cref="ServerOptions.ShutdownDelay"/>; then Kestrel stops accepting and lets the calls
/// in flight finish within <see cref="ServerOptions.DrainTimeout"/>.
/// </summary>
internal sealed partial class ShutdownDelay(IOptions<ServerOptions> options, ILogger<ShutdownDelay> logger) : IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        var delay = options.Value.ShutdownDelay;
        LogStopping(delay.TotalSeconds, options.Value.DrainTimeout.TotalSeconds);
        if (delay > TimeSpan.Zero)
        {
            await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Information, Message = "Stopping: health is NOT_SERVING; accepting calls for {DelaySeconds} s more, then draining calls in flight for up to {DrainSeconds} s")]
    private partial void LogStopping(double delaySeconds, double drainSeconds);
}
