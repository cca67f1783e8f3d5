using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// gRPC by hand over a real loopback HTTP/2 connection (h2c, prior knowledge): any bytes as the request body, any
/// headers, so that tests can send what no generated client would (broken protobuf, broken length-prefixed frames).
/// </summary>
public sealed class RawGrpc : IDisposable
{
    private readonly HttpClient _client;

    public RawGrpc(string address)
    {
        _client = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = true })
        {
            BaseAddress = new Uri(address),
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(30),
        };
    }

    /// <summary>One length-prefixed gRPC message: flag byte, 4-byte big-endian length, payload.</summary>
    public static byte[] Frame(ReadOnlySpan<byte> payload, bool compressed = false)
    {
        var frame = new byte[5 + payload.Length];
        frame[0] = compressed ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(frame.AsSpan(5));
        return frame;
    }

    /// <summary>Posts <paramref name="body"/> as-is to <paramref name="path"/> (e.g. "/metering.v1.MeteringService/TrackUsage").</summary>
    public async Task<RawGrpcResult> CallAsync(string path, byte[] body, IReadOnlyDictionary<string, string>? headers = null, CancellationToken cancellationToken = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path)
        {
            Content = new ByteArrayContent(body),
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TryAddWithoutValidation("te", "trailers");
        foreach (var (name, value) in headers ?? new Dictionary<string, string>())
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        using var response = await _client.SendAsync(request, cancellationToken);
        var payload = await response.Content.ReadAsByteArrayAsync(cancellationToken);
        var status = Header(response.TrailingHeaders, "grpc-status") ?? Header(response.Headers, "grpc-status");
        var message = Header(response.TrailingHeaders, "grpc-message") ?? Header(response.Headers, "grpc-message");
        return new RawGrpcResult(
            (int)response.StatusCode,
            status is null ? null : int.Parse(status, CultureInfo.InvariantCulture),
            message is null ? null : Uri.UnescapeDataString(message),
            payload);
    }

    public void Dispose() => _client.Dispose();

    private static string? Header(HttpHeaders headers, string name) =>
        headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;
}

/// <summary>What came back: the HTTP status, the gRPC status (null when none was sent), its message and the body.</summary>
public sealed record RawGrpcResult(int HttpStatus, int? GrpcStatus, string? Message, byte[] Body)
{
    /// <summary>The response message of a successful call (the body without its 5-byte frame header).</summary>
    public byte[] ResponsePayload => Body.Length >= 5 ? Body[5..] : [];
}
