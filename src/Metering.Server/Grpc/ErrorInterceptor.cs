using System.Net.Sockets;
using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Metering.Core.Errors;
using Npgsql;
using StackExchange.Redis;

namespace Metering.Server.Grpc;

/// <summary>
/// The one place where failures become gRPC statuses, with machine-readable details: <c>google.rpc.BadRequest</c> for
/// invalid fields, <c>google.rpc.ErrorInfo</c> for everything else, and <c>google.rpc.RetryInfo</c> when a store is
/// unavailable. A failure caused by a dependency (PostgreSQL, Redis, a time-out, the network), whatever wraps it, is
/// <c>UNAVAILABLE</c>, never <c>UNKNOWN</c>; a call whose own deadline passed is <c>DEADLINE_EXCEEDED</c>. Failed calls
/// are logged through <see cref="FailureLog"/>: one line for a failure, a summary during an outage.
/// </summary>
internal sealed partial class ErrorInterceptor(FailureLog failures) : Interceptor
{
    public const string ErrorDomain = "metering.v1";

    /// <summary>What an UNAVAILABLE answer asks the caller to wait before retrying (the Redis breaker's break is shorter).</summary>
    public static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(1);

    private static readonly TimeSpan DeadlineTolerance = TimeSpan.FromMilliseconds(100);

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
            if (ex is StoreUnavailableException unavailable)
            {
                failures.Unavailable(context.Method, unavailable.Store, ex.Message);
            }

            throw ToRpcException(ex);
        }
        catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
        {
            // The caller's deadline passed (or it went away) while the call waited on a store: nothing more is done. A
            // caller gives up at its own deadline, which can come a moment before the server's copy of it.
            throw context.Deadline != DateTime.MaxValue && context.Deadline - DateTime.UtcNow < DeadlineTolerance
                ? new RpcException(new global::Grpc.Core.Status(StatusCode.DeadlineExceeded, "The call's deadline passed before it could finish."))
                : new RpcException(new global::Grpc.Core.Status(StatusCode.Cancelled, "The caller cancelled the call."));
        }
        catch (Exception ex) when (ex is not RpcException && DependencyCause(ex) is { } cause)
        {
            var unavailable = new StoreUnavailableException(StoreOf(cause), cause);
            failures.Unavailable(context.Method, unavailable.Store, unavailable.Message);
            throw ToRpcException(unavailable);
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

        if (exception is StoreUnavailableException)
        {
            status.Details.Add(Any.Pack(new RetryInfo { RetryDelay = Duration.FromTimeSpan(RetryDelay) }));
        }

        return status.ToRpcException();
    }

    /// <summary>The PostgreSQL, Redis, time-out or network failure somewhere in the chain of inner exceptions, or null.</summary>
    internal static Exception? DependencyCause(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is NpgsqlException or RedisException or TimeoutException or SocketException)
            {
                return e;
            }
        }

        return null;
    }

    private static string StoreOf(Exception cause) => cause switch
    {
        NpgsqlException => "ledger",
        RedisException => "counter",
        _ => "dependency",
    };

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
}
