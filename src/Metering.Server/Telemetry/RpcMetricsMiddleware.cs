using System.Diagnostics;
using System.Globalization;
using Metering.Core.Telemetry;
using Microsoft.AspNetCore.Http.Features;

namespace Metering.Server.Telemetry;

/// <summary>
/// Records every gRPC call's duration by service, method and status code. It runs first in the pipeline, so calls
/// refused before the service (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED for the rate limit, a malformed
/// frame) are counted too, which an interceptor would not see. A path that names no known method is counted as
/// <c>_OTHER</c>, so random paths cannot grow the number of series.
/// </summary>
internal sealed class RpcMetricsMiddleware(RequestDelegate next, MeteringMetrics metrics)
{
    public async Task InvokeAsync(HttpContext context)
    {
        if (!context.Request.ContentType?.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase) ?? true)
        {
            await next(context);
            return;
        }

        var started = Stopwatch.GetTimestamp();
        var status = 2; // UNKNOWN, unless the response says otherwise
        try
        {
            await next(context);
            status = StatusOf(context);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            status = 1; // CANCELLED by the caller
            throw;
        }
        finally
        {
            var (service, method) = context.GetEndpoint() is null ? ("_OTHER", "_OTHER") : Split(context.Request.Path.Value);
            metrics.RecordRpc(service, method, status, Stopwatch.GetElapsedTime(started));
        }
    }

    private static int StatusOf(HttpContext context)
    {
        var trailers = context.Features.Get<IHttpResponseTrailersFeature>()?.Trailers;
        var value = trailers is not null && trailers.TryGetValue("grpc-status", out var fromTrailers)
            ? fromTrailers.ToString()
            : context.Response.Headers["grpc-status"].ToString();
        return int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var code) ? code : 2;
    }

    private static (string Service, string Method) Split(string? path)
    {
        var parts = (path ?? "").Trim('/').Split('/');
        return parts.Length == 2 ? (parts[0], parts[1]) : ("_OTHER", "_OTHER");
    }
}
