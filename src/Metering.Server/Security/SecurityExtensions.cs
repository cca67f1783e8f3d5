using System.Threading.RateLimiting;
using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Metering.Core.Telemetry;
using Metering.Server.Grpc;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Metering.Server.Security;

/// <summary>
/// Who may call: API-key and client-certificate authentication, one authorization policy per scope, a per-caller
/// request rate limit, and client certificates on TLS endpoints when any is mapped to a caller.
/// </summary>
internal static class SecurityExtensions
{
    public static IServiceCollection AddMeteringSecurity(this IServiceCollection services)
    {
        services.AddSingleton<CallerRegistry>();

        // The authentication handler base logs each step of a refused call (authenticate, then challenge): the handler
        // logs one line per refusal itself instead.
        services.AddLogging(logging => logging.AddFilter(typeof(MeteringAuthenticationHandler).FullName, LogLevel.Warning));
        services.AddAuthentication(MeteringAuthenticationHandler.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, MeteringAuthenticationHandler>(MeteringAuthenticationHandler.SchemeName, null);
        services.AddAuthorization(options =>
        {
            // The policies name no scheme: the one scheme is the default, so authorization uses the caller the
            // authentication middleware found instead of authenticating every call a second time.
            foreach (var scope in Scopes.All)
            {
                options.AddPolicy(scope, policy => policy
                    .RequireAuthenticatedUser()
                    .RequireClaim(Scopes.ClaimType, scope));
            }
        });

        services.AddRateLimiter(options =>
        {
            // One token bucket per authenticated caller; anonymous calls are refused by authorization anyway,
            // and grpc.health.v1 and reflection stay unlimited for them.
            options.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(context =>
            {
                var caller = context.User.Identity is { IsAuthenticated: true, Name: { } name }
                    ? context.RequestServices.GetRequiredService<CallerRegistry>().FindByName(name)
                    : null;
                return caller is null
                    ? RateLimitPartition.GetNoLimiter(string.Empty)
                    : RateLimitPartition.GetTokenBucketLimiter(caller.Name, _ => new TokenBucketRateLimiterOptions
                    {
                        TokenLimit = caller.Burst,
                        TokensPerPeriod = caller.RequestsPerSecond,
                        ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                        QueueLimit = 0,
                        AutoReplenishment = true,
                    });
            });
            options.OnRejected = (context, _) =>
            {
                var retryAfter = context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromSeconds(1);
                var caller = context.HttpContext.User.Identity?.Name ?? "";
                var services = context.HttpContext.RequestServices;
                services.GetRequiredService<MeteringMetrics>().CallRateLimited(caller);
                RateLimitLog.Refused(services.GetRequiredService<ILogger<CallerRegistry>>(), context.HttpContext.Request.Path, caller);
                return new ValueTask(GrpcStatusResponse.WriteAsync(
                    context.HttpContext,
                    StatusCode.ResourceExhausted,
                    $"The caller '{context.HttpContext.User.Identity?.Name}' is over its request rate; retry later.",
                    new ErrorInfo { Reason = "RATE_LIMITED", Domain = ErrorInterceptor.ErrorDomain },
                    new RetryInfo { RetryDelay = Duration.FromTimeSpan(retryAfter) }));
            };
        });

        // Over TLS, ask for a client certificate when some are mapped to callers (mTLS). Which certificate is accepted is
        // decided by its SHA-256 thumbprint in Auth:ClientCertificates, not by a CA, so any certificate may complete the
        // handshake; an unknown one only makes the call UNAUTHENTICATED.
        services.AddOptions<KestrelServerOptions>().Configure<CallerRegistry>((kestrel, callers) =>
        {
            if (callers.HasClientCertificates)
            {
                kestrel.ConfigureHttpsDefaults(https =>
                {
                    https.ClientCertificateMode = ClientCertificateMode.AllowCertificate;
                    https.ClientCertificateValidation = static (_, _, _) => true;
                });
            }
        });
        return services;
    }

    /// <summary>
    /// Fails closed: an RPC of the service that names no scope (a method added without <c>[Authorize(Policy = ...)]</c>)
    /// requires <see cref="Scopes.Admin"/>, never nothing.
    /// </summary>
    public static GrpcServiceEndpointConventionBuilder RequireAdminScopeUnlessNamed(this GrpcServiceEndpointConventionBuilder builder)
    {
        builder.Add(endpoint =>
        {
            if (!endpoint.Metadata.OfType<IAuthorizeData>().Any())
            {
                endpoint.Metadata.Add(new AuthorizeAttribute(Scopes.Admin));
            }
        });
        return builder;
    }

    /// <summary>
    /// Authentication, then the per-caller rate limit, then the scope policies, then the check of the request frame:
    /// a refused call does no work.
    /// </summary>
    public static IApplicationBuilder UseMeteringSecurity(this IApplicationBuilder app) =>
        app.UseAuthentication().UseRateLimiter().UseAuthorization().UseMiddleware<RequestFrameValidation>();
}

/// <summary>The one line per call refused by the rate limit.</summary>
internal static partial class RateLimitLog
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "Refused {Method}: RESOURCE_EXHAUSTED, caller '{Caller}' is over its request rate")]
    public static partial void Refused(ILogger logger, string method, string caller);
}
