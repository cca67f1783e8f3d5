using System.Globalization;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace Metering.Server.Security;

/// <summary>
/// Answers a call from middleware, before the service runs. A gRPC call gets a trailers-only response (HTTP 200,
/// grpc-status in the headers, no message), with the details a client reads through <c>google.rpc.Status</c>. An
/// HTTP/JSON call gets what JSON transcoding answers for the same status: the HTTP status that maps to the code, and
/// the <c>google.rpc.Status</c> as JSON.
/// </summary>
internal static class GrpcStatusResponse
{
    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default.WithTypeRegistry(TypeRegistry.FromMessages(
        Google.Rpc.ErrorInfo.Descriptor, Google.Rpc.RetryInfo.Descriptor, Google.Rpc.BadRequest.Descriptor)));

    public static Task WriteAsync(HttpContext context, StatusCode code, string message, params IMessage[] details)
    {
        var status = new Google.Rpc.Status { Code = (int)code, Message = message };
        foreach (var detail in details)
        {
            status.Details.Add(Any.Pack(detail));
        }

        var response = context.Response;
        response.Headers.Remove("WWW-Authenticate");
        if (!IsGrpc(context.Request))
        {
            response.StatusCode = HttpStatusOf(code);
            response.ContentType = "application/json; charset=utf-8";
            return response.WriteAsync(Json.Format(status), context.RequestAborted);
        }

        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/grpc";
        response.Headers["grpc-status"] = ((int)code).ToString(CultureInfo.InvariantCulture);
        response.Headers["grpc-message"] = Uri.EscapeDataString(message);
        response.Headers["grpc-status-details-bin"] = Convert.ToBase64String(status.ToByteArray());
        return response.CompleteAsync();
    }

    private static bool IsGrpc(HttpRequest request) =>
        request.ContentType?.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase) == true;

    /// <summary>The HTTP status of a gRPC code, as google.rpc.Code documents it and JSON transcoding answers.</summary>
    internal static int HttpStatusOf(StatusCode code) => code switch
    {
        StatusCode.OK => StatusCodes.Status200OK,
        StatusCode.Cancelled => 499,
        StatusCode.InvalidArgument or StatusCode.FailedPrecondition or StatusCode.OutOfRange => StatusCodes.Status400BadRequest,
        StatusCode.DeadlineExceeded => StatusCodes.Status504GatewayTimeout,
        StatusCode.NotFound => StatusCodes.Status404NotFound,
        StatusCode.AlreadyExists or StatusCode.Aborted => StatusCodes.Status409Conflict,
        StatusCode.PermissionDenied => StatusCodes.Status403Forbidden,
        StatusCode.Unauthenticated => StatusCodes.Status401Unauthorized,
        StatusCode.ResourceExhausted => StatusCodes.Status429TooManyRequests,
        StatusCode.Unimplemented => StatusCodes.Status501NotImplemented,
        StatusCode.Unavailable => StatusCodes.Status503ServiceUnavailable,
        _ => StatusCodes.Status500InternalServerError,
    };
}
