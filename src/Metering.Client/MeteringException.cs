using Grpc.Core;

namespace Metering.Client;

/// <summary>Why a call to Metering failed, in terms a caller can act on.</summary>
public enum MeteringErrorCode
{
    /// <summary>Metering could not be reached or did not answer in time; retrying later may succeed.</summary>
    Unavailable,

    /// <summary>The request is invalid (see <see cref="MeteringException.FieldViolations"/>); do not retry it as is.</summary>
    InvalidArgument,

    /// <summary>The caller's API key is missing or unknown.</summary>
    Unauthenticated,

    /// <summary>The caller lacks the scope, or (enforced tracking) the usage type is not in the plan.</summary>
    PermissionDenied,

    /// <summary>A limit, the caller's request rate or a total ceiling was reached (see <see cref="MeteringException.Reason"/>).</summary>
    ResourceExhausted,

    /// <summary>The idempotency key was used before with another payload.</summary>
    AlreadyExists,

    /// <summary>The named thing does not exist.</summary>
    NotFound,

    /// <summary>The system is not in a state that allows the call.</summary>
    FailedPrecondition,

    /// <summary>Any other status.</summary>
    Other,
}

/// <summary>A call to Metering that failed; thrown only by calls that promise the service's answer.</summary>
public sealed class MeteringException : Exception
{
    /// <summary>Creates an exception.</summary>
    public MeteringException(
        MeteringErrorCode code,
        string message,
        string? reason = null,
        IReadOnlyDictionary<string, string>? metadata = null,
        IReadOnlyList<FieldViolation>? fieldViolations = null,
        Exception? innerException = null)
        : base(message, innerException)
    {
        Code = code;
        Reason = reason;
        Metadata = metadata ?? new Dictionary<string, string>();
        FieldViolations = fieldViolations ?? [];
    }

    /// <summary>Creates an exception without details.</summary>
    public MeteringException()
        : this(MeteringErrorCode.Other, "Metering call failed.")
    {
    }

    /// <summary>Creates an exception with a message.</summary>
    public MeteringException(string message)
        : this(MeteringErrorCode.Other, message)
    {
    }

    /// <summary>Creates an exception with a message and its cause.</summary>
    public MeteringException(string message, Exception innerException)
        : this(MeteringErrorCode.Other, message, innerException: innerException)
    {
    }

    /// <summary>What went wrong.</summary>
    public MeteringErrorCode Code { get; }

    /// <summary>The machine-readable reason (<c>google.rpc.ErrorInfo.reason</c>), e.g. LIMIT_EXCEEDED or RATE_LIMITED.</summary>
    public string? Reason { get; }

    /// <summary>The reason's details (<c>google.rpc.ErrorInfo.metadata</c>), e.g. usage_type, limit, remaining.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The invalid fields, when <see cref="Code"/> is <see cref="MeteringErrorCode.InvalidArgument"/>.</summary>
    public IReadOnlyList<FieldViolation> FieldViolations { get; }

    /// <summary>True when the same call may succeed later (Metering unreachable, slow, or the caller over its rate).</summary>
    public bool IsTransient => Code == MeteringErrorCode.Unavailable || Reason == "RATE_LIMITED";

    internal static MeteringException From(RpcException exception)
    {
        var status = exception.GetRpcStatus();
        var info = status?.GetDetail<Google.Rpc.ErrorInfo>();
        var badRequest = status?.GetDetail<Google.Rpc.BadRequest>();
        var code = exception.StatusCode switch
        {
            StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Cancelled => MeteringErrorCode.Unavailable,
            StatusCode.InvalidArgument => MeteringErrorCode.InvalidArgument,
            StatusCode.Unauthenticated => MeteringErrorCode.Unauthenticated,
            StatusCode.PermissionDenied => MeteringErrorCode.PermissionDenied,
            StatusCode.ResourceExhausted => MeteringErrorCode.ResourceExhausted,
            StatusCode.AlreadyExists => MeteringErrorCode.AlreadyExists,
            StatusCode.NotFound => MeteringErrorCode.NotFound,
            StatusCode.FailedPrecondition => MeteringErrorCode.FailedPrecondition,
            _ => MeteringErrorCode.Other,
        };
        return new MeteringException(
            code,
            $"Metering answered {exception.StatusCode}: {exception.Status.Detail}",
            info?.Reason,
            info?.Metadata.ToDictionary(),
            badRequest?.FieldViolations.Select(v => new FieldViolation(v.Field, v.Description)).ToList(),
            exception);
    }
}

/// <summary>One invalid field of a request.</summary>
/// <param name="Field">The field's path, e.g. <c>usage[0].amount</c>.</param>
/// <param name="Description">Why it is invalid.</param>
public sealed record FieldViolation(string Field, string Description);
