using System.Security.Claims;
using System.Text.Encodings.Web;
using Google.Rpc;
using Grpc.Core;
using Metering.Core.Telemetry;
using Metering.Server.Grpc;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.Extensions.Options;

namespace Metering.Server.Security;

/// <summary>
/// Authenticates a call by its <c>authorization: Bearer &lt;api key&gt;</c> metadata or, over mTLS, by its client
/// certificate. An API key, when sent, decides alone: a wrong key is refused even on a connection with a known
/// certificate. Challenges and refusals are answered as gRPC statuses (UNAUTHENTICATED, PERMISSION_DENIED).
/// Neither the key nor its hash is ever logged or echoed. Each refusal is logged once, as one line naming the method and
/// the caller when known (the base handler's own per-step lines are filtered out, see <see cref="SecurityExtensions"/>).
/// </summary>
internal sealed partial class MeteringAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory logger,
    UrlEncoder encoder,
    CallerRegistry callers,
    MeteringMetrics metrics)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "Metering";

    private const string BearerPrefix = "Bearer ";

    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        var header = Request.Headers.Authorization;
        if (header.Count > 0)
        {
            if (header.Count > 1 || header[0] is not { } value || !value.StartsWith(BearerPrefix, StringComparison.OrdinalIgnoreCase))
            {
                return Task.FromResult(AuthenticateResult.Fail("the authorization metadata is not 'Bearer <api key>'"));
            }

            var key = value[BearerPrefix.Length..].Trim();
            return Task.FromResult(callers.FindByKey(key) is { } caller
                ? Success(caller, "api-key")
                : AuthenticateResult.Fail("unknown API key"));
        }

        if (Context.Connection.ClientCertificate is { } certificate)
        {
            return Task.FromResult(callers.FindByCertificate(certificate) is { } caller
                ? Success(caller, "client-certificate")
                : AuthenticateResult.Fail("unknown client certificate"));
        }

        return Task.FromResult(AuthenticateResult.NoResult());
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        var result = await Context.AuthenticateAsync(Scheme.Name);
        var why = result.Failure?.Message ?? "no credentials";
        metrics.CallUnauthenticated(why switch
        {
            "no credentials" => "no_credentials",
            "unknown API key" => "unknown_api_key",
            "unknown client certificate" => "unknown_client_certificate",
            _ => "malformed_authorization",
        });
        LogUnauthenticated(Refusals, Request.Path, why);
        await GrpcStatusResponse.WriteAsync(
            Context,
            StatusCode.Unauthenticated,
            $"Authentication required ({why}): send the metadata 'authorization: Bearer <api key>'.",
            new ErrorInfo { Reason = "UNAUTHENTICATED", Domain = ErrorInterceptor.ErrorDomain });
    }

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties)
    {
        var scope = Context.GetEndpoint()?.Metadata.GetMetadata<IAuthorizeData>()?.Policy ?? "unknown";
        LogForbidden(Refusals, Request.Path, Context.User.Identity?.Name ?? "", scope);
        return GrpcStatusResponse.WriteAsync(
            Context,
            StatusCode.PermissionDenied,
            $"The caller '{Context.User.Identity?.Name}' lacks the scope {scope}.",
            new ErrorInfo
            {
                Reason = "MISSING_SCOPE",
                Domain = ErrorInterceptor.ErrorDomain,
                Metadata = { ["scope"] = scope },
            });
    }

    /// <summary>The category of the one line per refused call.</summary>
    private ILogger Refusals => Context.RequestServices.GetRequiredService<ILogger<CallerRegistry>>();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refused {Method}: UNAUTHENTICATED ({Why})")]
    private static partial void LogUnauthenticated(ILogger logger, string method, string why);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refused {Method}: PERMISSION_DENIED, caller '{Caller}' lacks {Scope}")]
    private static partial void LogForbidden(ILogger logger, string method, string caller, string scope);

    private AuthenticateResult Success(Caller caller, string method)
    {
        var claims = new List<Claim> { new(ClaimTypes.Name, caller.Name), new(ClaimTypes.AuthenticationMethod, method) };
        claims.AddRange(caller.Scopes.Select(s => new Claim(Scopes.ClaimType, s)));
        var principal = new ClaimsPrincipal(new ClaimsIdentity(claims, SchemeName));
        return AuthenticateResult.Success(new AuthenticationTicket(principal, SchemeName));
    }
}
