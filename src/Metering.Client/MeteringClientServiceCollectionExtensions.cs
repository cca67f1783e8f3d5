using System.Net.Security;
using Grpc.Core;
using Grpc.Net.Client.Configuration;
using Metering.Client;
using Metering.Client.Spool;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Proto = Metering.Api.V1;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers <see cref="IMeteringClient"/>.</summary>
public static class MeteringClientServiceCollectionExtensions
{
    /// <summary>
    /// Adds <see cref="IMeteringClient"/> with settings from <paramref name="configuration"/> (e.g. the section
    /// <c>Metering:Client</c>) and the background delivery of its spool (a hosted service). Returns the gRPC client's
    /// <see cref="IHttpClientBuilder"/> for further handler settings.
    /// </summary>
    public static IHttpClientBuilder AddMeteringClient(this IServiceCollection services, IConfiguration configuration) =>
        services.AddMeteringClient(options => configuration.Bind(options));

    /// <summary>Adds <see cref="IMeteringClient"/> configured by <paramref name="configure"/>; see the other overload.</summary>
    public static IHttpClientBuilder AddMeteringClient(this IServiceCollection services, Action<MeteringClientOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<MeteringClientOptions>().Configure(configure).ValidateDataAnnotations().ValidateOnStart();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<UsageSpool>();
        services.TryAddSingleton<OutageMonitor>();
        services.TryAddSingleton<MeteringClientMetrics>();
        services.TryAddSingleton<MeteringClient>();
        services.TryAddSingleton<IMeteringClient>(sp => sp.GetRequiredService<MeteringClient>());
        services.TryAddSingleton<ApiKeySource>();
        services.AddHostedService<SpoolDelivery>();

        return services
            .AddGrpcClient<Proto.MeteringService.MeteringServiceClient>(MeteringClient.GrpcClientName, (sp, grpc) =>
                grpc.Address = sp.GetRequiredService<IOptions<MeteringClientOptions>>().Value.Address)
            .ConfigureChannel((sp, channel) =>
            {
                var options = sp.GetRequiredService<IOptions<MeteringClientOptions>>().Value;
                channel.ServiceConfig = new ServiceConfig { MethodConfigs = { IdempotentCallsRetry(options.MaxAttempts) } };
                channel.MaxRetryAttempts = options.MaxAttempts;

                // After an outage, reconnect within seconds (gRPC's default backoff grows to two minutes).
                channel.MaxReconnectBackoff = TimeSpan.FromSeconds(5);

                // The key is sent over plaintext h2c too (local and in-cluster traffic); use https:// elsewhere.
                channel.UnsafeUseInsecureChannelCallCredentials = true;
            })
            .AddCallCredentials((_, metadata, sp) =>
            {
                if (sp.GetRequiredService<ApiKeySource>().Key is { Length: > 0 } key)
                {
                    metadata.Add("authorization", $"Bearer {key}");
                }

                return Task.CompletedTask;
            })
            .RemoveAllLoggers() // one line per HTTP request is noise; gRPC and this client log what matters
            .ConfigurePrimaryHttpMessageHandler(sp =>
            {
                var options = sp.GetRequiredService<IOptions<MeteringClientOptions>>().Value;
                var handler = new SocketsHttpHandler
                {
                    EnableMultipleHttp2Connections = true,
                    PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
                    KeepAlivePingDelay = TimeSpan.FromSeconds(60),
                    KeepAlivePingTimeout = TimeSpan.FromSeconds(30),
                };
                if (options.ClientCertificate is { } certificate)
                {
                    handler.SslOptions = new SslClientAuthenticationOptions { ClientCertificates = [certificate] };
                }

                return handler;
            });
    }

    /// <summary>
    /// The gRPC retry policy, for the calls that may be repeated safely: TrackUsage (the idempotency key counts once),
    /// GetRemaining (a read) and ReleaseReservation. Not CheckLimit: a repeated reserve would hold twice.
    /// </summary>
    private static MethodConfig IdempotentCallsRetry(int maxAttempts)
    {
        const string service = "metering.v1.MeteringService";
        return new MethodConfig
        {
            Names =
            {
                new MethodName { Service = service, Method = "CheckLimit" }, // reserves carry a request id
                new MethodName { Service = service, Method = "TrackUsage" },
                new MethodName { Service = service, Method = "GetRemaining" },
                new MethodName { Service = service, Method = "ReleaseReservation" },
            },
            RetryPolicy = maxAttempts < 2 ? null : new RetryPolicy
            {
                MaxAttempts = maxAttempts,
                InitialBackoff = TimeSpan.FromMilliseconds(50),
                MaxBackoff = TimeSpan.FromMilliseconds(500),
                BackoffMultiplier = 2,
                RetryableStatusCodes = { StatusCode.Unavailable },
            },
        };
    }
}

/// <summary>The API key, from the settings or from the secret file they name (read once).</summary>
internal sealed class ApiKeySource(IOptions<MeteringClientOptions> options)
{
    private readonly Lazy<string?> _key = new(() =>
    {
        var settings = options.Value;
        if (!string.IsNullOrWhiteSpace(settings.ApiKey))
        {
            return settings.ApiKey.Trim();
        }

        return string.IsNullOrWhiteSpace(settings.ApiKeyFile) ? null : File.ReadAllText(settings.ApiKeyFile).Trim();
    });

    public string? Key => _key.Value;
}
