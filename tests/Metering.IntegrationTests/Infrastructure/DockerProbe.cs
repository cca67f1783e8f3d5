using System.Globalization;
using System.IO.Pipes;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// Tells quickly whether a Docker engine answers at one of the endpoints Testcontainers would try (in its order):
/// docker.host / tc.host in ~/.testcontainers.properties, DOCKER_HOST, the current Docker context (DOCKER_CONTEXT or
/// currentContext in $DOCKER_CONFIG/config.json), the default npipe (Windows) or /var/run/docker.sock, Docker Desktop's
/// ~/.docker/run/docker.sock, and rootless sockets ($XDG_RUNTIME_DIR, ~/.docker/desktop, /run/user/UID). Testcontainers
/// uses the first endpoint that answers a ping, so "any candidate answers" is the same test. Each probe is a connect plus
/// GET /_ping with a 2 s limit; a missing socket file costs nothing.
/// </summary>
internal static class DockerProbe
{
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(2);

    /// <summary>The endpoints that were probed, for error messages.</summary>
    public static IReadOnlyList<string> Candidates() => CandidateEndpoints().Distinct(StringComparer.Ordinal).ToList();

    /// <summary>Returns the first endpoint whose Docker engine answered, or null when none did.</summary>
    public static async Task<string?> FindAnsweringEndpointAsync(CancellationToken cancellationToken)
    {
        foreach (var endpoint in Candidates())
        {
            if (await AnswersAsync(endpoint, cancellationToken).ConfigureAwait(false))
            {
                return endpoint;
            }
        }

        return null;
    }

    private static IEnumerable<string> CandidateEndpoints()
    {
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        var properties = ReadTestcontainersProperties(Path.Combine(home, ".testcontainers.properties"));
        if (properties.TryGetValue("tc.host", out var tcHost))
        {
            yield return tcHost;
        }

        if (properties.TryGetValue("docker.host", out var propertiesHost))
        {
            yield return propertiesHost;
        }

        var dockerHost = Environment.GetEnvironmentVariable("DOCKER_HOST");
        if (!string.IsNullOrWhiteSpace(dockerHost))
        {
            yield return dockerHost.Trim();
        }

        var contextHost = ReadDockerContextHost(home);
        if (contextHost is not null)
        {
            yield return contextHost;
        }

        if (OperatingSystem.IsWindows())
        {
            yield return "npipe://./pipe/docker_engine";
            yield break;
        }

        yield return "unix:///var/run/docker.sock";
        yield return "unix://" + Path.Combine(home, ".docker", "run", "docker.sock");
        var runtimeDirectory = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        if (!string.IsNullOrEmpty(runtimeDirectory))
        {
            yield return "unix://" + Path.Combine(runtimeDirectory, "docker.sock");
        }

        yield return "unix://" + Path.Combine(home, ".docker", "desktop", "docker.sock");
        var uid = ReadUid();
        if (uid is not null)
        {
            yield return $"unix:///run/user/{uid}/docker.sock";
        }
    }

    private static Dictionary<string, string> ReadTestcontainersProperties(string path)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            if (!File.Exists(path))
            {
                return values;
            }

            foreach (var line in File.ReadAllLines(path))
            {
                var trimmed = line.Trim();
                var separator = trimmed.IndexOf('=', StringComparison.Ordinal);
                if (trimmed.StartsWith('#') || separator <= 0)
                {
                    continue;
                }

                var value = trimmed[(separator + 1)..].Trim();
                if (value.Length > 0)
                {
                    values[trimmed[..separator].Trim()] = value;
                }
            }
        }
        catch (IOException)
        {
            // Unreadable: ignore, like a missing file.
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }

        return values;
    }

    private static string? ReadDockerContextHost(string home)
    {
        try
        {
            var configDirectory = Environment.GetEnvironmentVariable("DOCKER_CONFIG") is { Length: > 0 } fromEnvironment
                ? fromEnvironment
                : Path.Combine(home, ".docker");
            var context = Environment.GetEnvironmentVariable("DOCKER_CONTEXT");
            var configFile = Path.Combine(configDirectory, "config.json");
            if (string.IsNullOrEmpty(context) && File.Exists(configFile))
            {
                using var config = JsonDocument.Parse(File.ReadAllText(configFile));
                if (config.RootElement.ValueKind == JsonValueKind.Object
                    && config.RootElement.TryGetProperty("currentContext", out var current)
                    && current.ValueKind == JsonValueKind.String)
                {
                    context = current.GetString();
                }
            }

            var metaRoot = Path.Combine(configDirectory, "contexts", "meta");
            if (string.IsNullOrEmpty(context) || context == "default" || !Directory.Exists(metaRoot))
            {
                return null;
            }

            foreach (var metaFile in Directory.EnumerateFiles(metaRoot, "meta.json", SearchOption.AllDirectories))
            {
                using var meta = JsonDocument.Parse(File.ReadAllText(metaFile));
                var root = meta.RootElement;
                if (root.ValueKind == JsonValueKind.Object
                    && root.TryGetProperty("Name", out var name) && name.ValueKind == JsonValueKind.String && name.GetString() == context
                    && root.TryGetProperty("Endpoints", out var endpoints) && endpoints.ValueKind == JsonValueKind.Object
                    && endpoints.TryGetProperty("docker", out var docker) && docker.ValueKind == JsonValueKind.Object
                    && docker.TryGetProperty("Host", out var host) && host.ValueKind == JsonValueKind.String)
                {
                    return host.GetString();
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            // A broken Docker config means no usable context.
        }

        return null;
    }

    private static string? ReadUid()
    {
        try
        {
            var uidLine = File.Exists("/proc/self/status")
                ? File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Uid:", StringComparison.Ordinal))
                : null;
            return uidLine?.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[1];
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static async Task<bool> AnswersAsync(string endpoint, CancellationToken cancellationToken)
    {
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri))
        {
            return false;
        }

        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(ProbeTimeout);
        try
        {
            switch (uri.Scheme)
            {
                case "unix":
                {
                    if (!File.Exists(uri.LocalPath) || OperatingSystem.IsWindows())
                    {
                        return false;
                    }

                    using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(uri.LocalPath), timeoutSource.Token).ConfigureAwait(false);
                    await using var stream = new NetworkStream(socket, ownsSocket: false);
                    return await PingAsync(stream, timeoutSource.Token).ConfigureAwait(false);
                }

                case "tcp" or "http" or "https":
                {
                    using var client = new TcpClient();
                    var port = uri.IsDefaultPort || uri.Port <= 0 ? 2375 : uri.Port;
                    await client.ConnectAsync(uri.Host, port, timeoutSource.Token).ConfigureAwait(false);
                    var tls = uri.Scheme == "https"
                        || port == 2376
                        || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOCKER_TLS_VERIFY"))
                        || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOCKER_TLS"));

                    // With TLS a ping needs the client certificates; an accepted connection is as far as we can check cheaply.
                    return tls || await PingAsync(client.GetStream(), timeoutSource.Token).ConfigureAwait(false);
                }

                case "npipe":
                {
                    if (!OperatingSystem.IsWindows())
                    {
                        return false;
                    }

                    var segments = uri.AbsolutePath.Trim('/').Split('/');
                    var pipeName = segments.Length >= 2 && segments[0] == "pipe" ? string.Join('/', segments.Skip(1)) : segments[^1];
                    var server = string.IsNullOrEmpty(uri.Host) ? "." : uri.Host;
                    await using var pipe = new NamedPipeClientStream(server, pipeName, PipeDirection.InOut, PipeOptions.Asynchronous);
                    await pipe.ConnectAsync(timeoutSource.Token).ConfigureAwait(false);
                    return await PingAsync(pipe, timeoutSource.Token).ConfigureAwait(false);
                }

                default:
                    return false;
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
        catch (Exception e) when (e is SocketException or IOException or UnauthorizedAccessException or TimeoutException)
        {
            return false;
        }
    }

    private static async Task<bool> PingAsync(Stream stream, CancellationToken cancellationToken)
    {
        var request = Encoding.ASCII.GetBytes("GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n");
        await stream.WriteAsync(request, cancellationToken).ConfigureAwait(false);
        await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        var buffer = new byte[512];
        var length = 0;
        while (length < buffer.Length)
        {
            var read = await stream.ReadAsync(buffer.AsMemory(length), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                break;
            }

            length += read;
            var head = Encoding.ASCII.GetString(buffer, 0, length);
            if (head.Contains("\r\n", StringComparison.Ordinal))
            {
                // "HTTP/1.1 200 OK": any 2xx status line means a Docker engine is there.
                var parts = head.Split(' ', 3);
                return parts.Length >= 2
                    && parts[0].StartsWith("HTTP/", StringComparison.Ordinal)
                    && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var status)
                    && status is >= 200 and < 300;
            }
        }

        return false;
    }
}
