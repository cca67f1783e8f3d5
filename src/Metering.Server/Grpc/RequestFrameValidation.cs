using System.Buffers;
using System.Buffers.Binary;
using System.IO.Compression;
using System.IO.Pipelines;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Metering.Api.V1;
using Metering.Server.Security;

namespace Metering.Server.Grpc;

/// <summary>
/// Reads the request of every unary Metering RPC before gRPC does, and answers a malformed one itself:
/// a broken length-prefixed frame, a bad compression, or bytes that are not the method's protobuf message are
/// INVALID_ARGUMENT, a message over <see cref="MaxMessageSize"/> is RESOURCE_EXHAUSTED. Only requests with a gRPC
/// content type are checked: HTTP/JSON requests are not gRPC frames. Without it, ASP.NET Core gRPC
/// answers such requests INTERNAL or UNKNOWN, as if the service had failed. A request is parsed once: the message
/// parsed here travels as a <see cref="ParsedRequest"/> feature, gRPC reads an empty frame in its place, and
/// <see cref="ParsedRequestInterceptor"/> hands the parsed message to the service.
/// </summary>
internal sealed class RequestFrameValidation(RequestDelegate next)
{
    /// <summary>The largest request message accepted (the same as the gRPC MaxReceiveMessageSize).</summary>
    public const int MaxMessageSize = 64 * 1024;

    private const int HeaderSize = 5;

    /// <summary>An uncompressed frame of a zero-length message: what gRPC reads once the message is parsed here.</summary>
    private static readonly byte[] EmptyFrame = new byte[HeaderSize];

    private static readonly Dictionary<string, MessageParser> Parsers = MeteringService.Descriptor.Methods
        .Concat(AdminService.Descriptor.Methods)
        .ToDictionary(m => $"/{m.Service.FullName}/{m.Name}", m => m.InputType.Parser, StringComparer.Ordinal);

    public async Task InvokeAsync(HttpContext context)
    {
        if (!HttpMethods.IsPost(context.Request.Method)
            || !IsGrpc(context.Request.ContentType)
            || !Parsers.TryGetValue(context.Request.Path.Value ?? string.Empty, out var parser))
        {
            await next(context);
            return;
        }

        var body = await ReadBoundedAsync(context.Request.BodyReader, HeaderSize + MaxMessageSize + 1, context.RequestAborted);
        var problem = Check(body, context.Request.Headers["grpc-encoding"].ToString(), parser, out var tooLarge, out var parsed);
        if (problem is not null)
        {
            await GrpcStatusResponse.WriteAsync(
                context,
                tooLarge ? StatusCode.ResourceExhausted : StatusCode.InvalidArgument,
                problem,
                new ErrorInfo { Reason = tooLarge ? "MESSAGE_TOO_LARGE" : "MALFORMED_REQUEST", Domain = ErrorInterceptor.ErrorDomain });
            return;
        }

        if (parsed is not null)
        {
            context.Features.Set(new ParsedRequest(parsed));
            body = EmptyFrame;
        }

        context.Request.Body = new MemoryStream(body, writable: false);
        await next(context);
    }

    /// <summary>
    /// Only gRPC bodies are frames. HTTP/JSON calls (transcoded, on their own routes) are parsed by JSON transcoding, and
    /// any other content type on a gRPC route is refused by ASP.NET Core gRPC itself (415) before the service runs.
    /// </summary>
    private static bool IsGrpc(string? contentType) =>
        contentType is not null && contentType.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase);

    /// <summary>What is wrong with the request, or null; <paramref name="parsed"/> is its message when it could be read here.</summary>
    private static string? Check(byte[] body, string encoding, MessageParser parser, out bool tooLarge, out IMessage? parsed)
    {
        tooLarge = false;
        parsed = null;
        if (body.Length > HeaderSize + MaxMessageSize)
        {
            tooLarge = true;
            return $"The request message is larger than {MaxMessageSize} bytes.";
        }

        if (body.Length < HeaderSize)
        {
            return "The request is not one length-prefixed gRPC message.";
        }

        var compressed = body[0];
        var length = BinaryPrimitives.ReadUInt32BigEndian(body.AsSpan(1, 4));
        if (compressed > 1)
        {
            return "The gRPC message flag is neither 0 nor 1.";
        }

        if (length > MaxMessageSize)
        {
            tooLarge = true;
            return $"The request message is larger than {MaxMessageSize} bytes.";
        }

        if (length != body.Length - HeaderSize)
        {
            return "The gRPC message length does not match the request body (incomplete message or extra data).";
        }

        ReadOnlyMemory<byte> payload = body.AsMemory(HeaderSize);
        if (compressed == 1)
        {
            if (encoding is "gzip" or "deflate")
            {
                if (!TryDecompress(payload, encoding, out var plain, out tooLarge))
                {
                    return tooLarge ? $"The request message is larger than {MaxMessageSize} bytes." : $"The request message is not valid {encoding} data.";
                }

                payload = plain;
            }
            else if (encoding is "" or "identity")
            {
                return "The request message is flagged compressed but names no grpc-encoding.";
            }
            else
            {
                return null; // An unsupported encoding: gRPC answers UNIMPLEMENTED with the encodings it supports.
            }
        }

        try
        {
            parsed = parser.ParseFrom(payload.Span);
            return null;
        }
        catch (InvalidProtocolBufferException)
        {
            return "The request message is not a valid protobuf message of this method.";
        }
    }

    private static bool TryDecompress(ReadOnlyMemory<byte> payload, string encoding, out ReadOnlyMemory<byte> plain, out bool tooLarge)
    {
        plain = default;
        tooLarge = false;
        try
        {
            using var input = new MemoryStream(payload.ToArray(), writable: false);
            using Stream decompressor = encoding == "gzip"
                ? new GZipStream(input, CompressionMode.Decompress)
                : new ZLibStream(input, CompressionMode.Decompress);
            var buffer = new byte[MaxMessageSize + 1];
            var total = 0;
            int read;
            while (total < buffer.Length && (read = decompressor.Read(buffer, total, buffer.Length - total)) > 0)
            {
                total += read;
            }

            if (total > MaxMessageSize)
            {
                tooLarge = true;
                return false;
            }

            plain = buffer.AsMemory(0, total);
            return true;
        }
        catch (InvalidDataException)
        {
            return false;
        }
    }

    /// <summary>
    /// The request body, or its first <paramref name="limit"/> bytes when it is longer (then it is refused as too large).
    /// Read from the body's pipe, so a small request costs one array of its own size.
    /// </summary>
    private static async Task<byte[]> ReadBoundedAsync(PipeReader body, int limit, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await body.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            if (result.IsCompleted || result.IsCanceled || buffer.Length >= limit)
            {
                var bytes = buffer.Slice(0, Math.Min(buffer.Length, limit)).ToArray();
                body.AdvanceTo(buffer.End);
                return bytes;
            }

            body.AdvanceTo(buffer.Start, buffer.End);
        }
    }
}

/// <summary>A request message <see cref="RequestFrameValidation"/> has parsed already.</summary>
internal sealed record ParsedRequest(IMessage Message);

/// <summary>
/// Hands the service the message <see cref="RequestFrameValidation"/> parsed, in place of the empty one gRPC read
/// from the frame left behind; requests that were not parsed there (HTTP/JSON) pass unchanged. Runs first.
/// </summary>
internal sealed class ParsedRequestInterceptor : Interceptor
{
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request,
        ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation) =>
        continuation(context.GetHttpContext().Features.Get<ParsedRequest>()?.Message is TRequest parsed ? parsed : request, context);
}
