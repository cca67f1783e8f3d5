using System.Globalization;
using Google.Protobuf.Reflection;
using Microsoft.OpenApi.Models;

namespace Metering.Server.HttpApi;

/// <summary>
/// HTTP/JSON for web callers: gRPC JSON transcoding of the RPCs annotated with <c>google.api.http</c> in the protos, on
/// a port of its own (<c>HttpApi:Port</c>, default 8080; 0 turns it off) that speaks HTTP/1.1, and HTTP/2 where TLS
/// negotiates it (ALPN), with the same
/// authentication, scopes and rate limits as gRPC, and an OpenAPI document at <see cref="OpenApiPath"/>.
/// </summary>
internal static class HttpApiExtensions
{
    public const string OpenApiPath = "/openapi/v1.json";

    private const int DefaultPort = 8080;

    public static IServiceCollection AddMeteringHttpApi(this IServiceCollection services, IConfiguration configuration)
    {
        // The error details the service sends (google.rpc.Status details), so that JSON errors carry them too.
        services.AddGrpc().AddJsonTranscoding(transcoding => transcoding.TypeRegistry = TypeRegistry.FromMessages(
            Google.Rpc.ErrorInfo.Descriptor, Google.Rpc.BadRequest.Descriptor, Google.Rpc.RetryInfo.Descriptor));
        services.AddGrpcSwagger();
        services.AddSwaggerGen(swagger =>
        {
            swagger.SwaggerDoc("v1", new OpenApiInfo
            {
                Title = "Metering HTTP/JSON API",
                Version = "v1",
                Description = "Checks, remaining usage and the admin reads over HTTP/JSON. Every call needs 'Authorization: Bearer <api key>'.",
            });
            swagger.AddSecurityDefinition("apiKey", new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.Http,
                Scheme = "bearer",
                Description = "An API key with the scope the call needs (metering.check, metering.read).",
            });
            swagger.AddSecurityRequirement(new OpenApiSecurityRequirement
            {
                [new OpenApiSecurityScheme { Reference = new OpenApiReference { Type = ReferenceType.SecurityScheme, Id = "apiKey" } }] = [],
            });
        });

        return services;
    }

    /// <summary>
    /// Listens on the HTTP/JSON port at every host the gRPC addresses name (<c>--urls</c>, <c>urls</c>, else Kestrel's
    /// default), with the same scheme: <c>http://127.0.0.1:50051</c> adds <c>http://127.0.0.1:8080</c>.
    /// </summary>
    public static void ListenForHttpApi(this WebApplication app)
    {
        var port = Port(app.Configuration);
        if (port == 0)
        {
            return;
        }

        // The gRPC addresses: every address but the metrics one, which has a port (and, outside Development, a host) of its own.
        var metricsPort = Hosting.ServerHosting.MetricsPort(app.Configuration);
        string[] urls = app.Urls.Count > 0
            ? [.. app.Urls]
            : (app.Configuration["urls"] ?? "http://localhost:5000").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var grpc = urls.Where(url => metricsPort == 0 || BindingAddress.Parse(url).Port != metricsPort).ToList();
        var all = new List<string>(urls);
        foreach (var url in grpc)
        {
            var address = BindingAddress.Parse(url);
            if (address.Port == port)
            {
                throw new InvalidOperationException($"HttpApi:Port {port} is also a gRPC address ({url}); give HTTP/JSON a port of its own, or 0 to turn it off.");
            }

            all.Add($"{address.Scheme}://{address.Host}:{port.ToString(CultureInfo.InvariantCulture)}");
        }

        app.Urls.Clear();
        foreach (var url in all.Distinct(StringComparer.OrdinalIgnoreCase))
        {
            app.Urls.Add(url);
        }
    }

    /// <summary>
    /// Serves the OpenAPI document (no key needed: it describes the API, it does not call it). An endpoint, not a
    /// middleware, so that the calls of the service do not pass through it.
    /// </summary>
    public static void MapMeteringOpenApi(this WebApplication app) =>
        app.MapSwagger("openapi/{documentName}.json");

    /// <summary>The HTTP/JSON port (<c>HttpApi:Port</c>), 0 when turned off. Its endpoint accepts HTTP/1.1 (and HTTP/2 where TLS negotiates it): see <c>ServerHosting</c>.</summary>
    internal static int Port(IConfiguration configuration)
    {
        var port = configuration.GetValue("HttpApi:Port", DefaultPort);
        return port is >= 0 and <= 65535
            ? port
            : throw new InvalidOperationException($"HttpApi:Port must be from 0 (off) to 65535, not {port}.");
    }
}
