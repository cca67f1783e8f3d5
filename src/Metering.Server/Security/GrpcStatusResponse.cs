using System.Globalization;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace Metering.Server.Security;

/// <summary>
/// Answers a gRPC call from middleware, before the service runs: a trailers-only response (HTTP 200, grpc-status in the
/// headers, no message), with the details a client reads through <c>google.rpc.Status</c>.
/// </summary>
internal static class GrpcStatusResponse
{
    public static Task WriteAsync(HttpContext context, StatusCode code, string message, params IMessage[] details)
    {
        var status = new Google.Rpc.Status { Code = (int)code, Message = message };
        foreach (var detail in details)
        {
            status.Details.Add(Any.Pack(detail));
        }

        var response = context.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/grpc";
        response.Headers.Remove("WWW-Authenticate");
        response.Headers["grpc-status"] = ((int)code).ToString(CultureInfo.InvariantCulture);
        response.Headers["grpc-message"] = Uri.EscapeDataString(message);
        response.Headers["grpc-status-details-bin"] = Convert.ToBase64String(status.ToByteArray());
        return response.CompleteAsync();
    }
}
