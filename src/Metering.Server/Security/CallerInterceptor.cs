using System.Diagnostics;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Metering.Server.Security;

/// <summary>
/// Runs around every unary call, before the service: refuses a call whose deadline has already passed (so it does no
/// work at all), and names the authenticated caller in a logging scope and on the request's trace.
/// </summary>
internal sealed class CallerInterceptor(ILogger<CallerInterceptor> logger) : Interceptor
{
    /// <summary>The trace tag that carries the caller's key or certificate name.</summary>
    public const string CallerTag = "metering.caller";

    private static readonly Func<ILogger, string, IDisposable?> CallerScope = LoggerMessage.DefineScope<string>("Caller:{Caller}");

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request,
        ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        // gRPC deadlines are on the system clock (not the service's TimeProvider, which tests may fake).
        if (context.Deadline <= DateTime.UtcNow || IsZeroTimeout(context.GetHttpContext().Request.Headers["grpc-timeout"].ToString()))
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, "The call's deadline had passed before it started; nothing was done."));
        }

        var caller = context.GetHttpContext().User.Identity is { IsAuthenticated: true, Name: { } name } ? name : null;
        if (caller is null)
        {
            return await continuation(request, context);
        }

        Activity.Current?.SetTag(CallerTag, caller);
        using (CallerScope(logger, caller))
        {
            return await continuation(request, context);
        }
    }

    /// <summary>
    /// A grpc-timeout shorter than one tick (e.g. "0S", "1n"): ASP.NET Core gRPC reads it as no deadline at all, but the
    /// caller's deadline has passed before the call began.
    /// </summary>
    private static bool IsZeroTimeout(string header)
    {
        if (header.Length < 2 || !long.TryParse(header.AsSpan(0, header.Length - 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var value))
        {
            return false;
        }

        return header[^1] switch
        {
            'n' => value < 100,
            'u' or 'm' or 'S' or 'M' or 'H' => value == 0,
            _ => false,
        };
    }
}

/// <summary>The authenticated caller of a gRPC call.</summary>
internal static class CallerContext
{
    /// <summary>The caller's key or certificate name; the authorization policies guarantee there is one.</summary>
    public static string CallerName(this ServerCallContext context) =>
        context.GetHttpContext().User.Identity is { IsAuthenticated: true, Name: { } name }
            ? name
            : throw new InvalidOperationException($"{context.Method} ran without an authenticated caller; it needs an [Authorize] policy.");
}
