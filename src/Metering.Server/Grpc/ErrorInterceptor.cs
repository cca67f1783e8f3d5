using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Metering.Core.Errors;

namespace Metering.Server.Grpc;

/// <summary>
/// The one place where domain failures become gRPC statuses, with machine-readable details:
/// <c>google.rpc.BadRequest</c> for invalid fields, <c>google.rpc.ErrorInfo</c> for everything else.
/// </summary>
internal sealed partial class ErrorInterceptor(ILogger<ErrorInterceptor> logger) : Interceptor
{
    public const string ErrorDomain = "metering.v1";

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request,
        ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context);
        }
        catch (MeteringException ex)
        {
            if (ex is StoreUnavailableException)
            {
                LogStoreUnavailable(context.Method, ex.Message);
            }

            throw ToRpcException(ex);
        }
    }

    internal static RpcException ToRpcException(MeteringException exception)
    {
        var status = new Google.Rpc.Status { Code = (int)CodeOf(exception), Message = exception.Message };
        if (exception is InvalidRequestException invalid)
        {
            status.Details.Add(Any.Pack(new BadRequest
            {
                FieldViolations =
                {
                    invalid.Violations.Select(v => new BadRequest.Types.FieldViolation { Field = v.Field, Description = v.Description }),
                },
            }));
        }
        else
        {
            status.Details.Add(Any.Pack(new ErrorInfo
            {
                Reason = exception.Reason,
                Domain = ErrorDomain,
                Metadata = { exception.Metadata.ToDictionary() },
            }));
        }

        return status.ToRpcException();
    }

    private static Code CodeOf(MeteringException exception) => exception switch
    {
        InvalidRequestException => Code.InvalidArgument,
        LimitExceededException => Code.ResourceExhausted,
        TotalCeilingException => Code.ResourceExhausted,
        TooManyHoldsException => Code.ResourceExhausted,
        RequestIdConflictException => Code.AlreadyExists,
        ConcurrentChangeException => Code.Aborted,
        NotInPlanException => Code.PermissionDenied,
        IdempotencyConflictException => Code.AlreadyExists,
        StoreUnavailableException => Code.Unavailable,
        NotFoundException => Code.NotFound,
        PreconditionFailedException => Code.FailedPrecondition,
        _ => Code.Internal,
    };

    [LoggerMessage(Level = LogLevel.Error, Message = "{Method} failed: {Reason}")]
    private partial void LogStoreUnavailable(string method, string reason);
}
