using System.Diagnostics;
using System.Globalization;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// The real server as a child process, for end-to-end tests: <c>dotnet &lt;dll&gt; --urls http(s)://127.0.0.1:&lt;free port&gt;</c>,
/// started in the dll's folder (the content root, so its appsettings*.json are used) with the test host's environment plus
/// the given variables (and ASPNETCORE_ENVIRONMENT=Development unless given). Its stdout and stderr are kept in
/// <see cref="Output"/>. Disposing kills the process tree; a ProcessExit hook and a watchdog (Unix) kill it too if the
/// test host ends without disposing it. Note that a plaintext gRPC endpoint must be HTTP/2-only
/// (Kestrel EndpointDefaults Protocols = Http2, e.g. environment Kestrel__EndpointDefaults__Protocols=Http2) for h2c clients.
/// </summary>
public sealed class ServerProcess : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private readonly Process process;
    private readonly OutputBuffer output;
    private readonly Watchdog watchdog;
    private readonly IDisposable exitRegistration;
    private int disposed;

    private ServerProcess(Process process, OutputBuffer output, int port, string scheme)
    {
        this.process = process;
        this.output = output;
        Port = port;
        Address = $"{scheme}://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}";
        watchdog = Watchdog.Start(process, "TERM", directoryToDelete: null);
        exitRegistration = ExitCleanup.Register(() =>
        {
            if (watchdog.IsActive)
            {
                watchdog.Trigger();
                return;
            }

            Commands.TryKill(process);
        });
    }

    /// <summary>Base address, e.g. "http://127.0.0.1:41234".</summary>
    public string Address { get; }

    /// <summary>The TCP port the server listens on (127.0.0.1).</summary>
    public int Port { get; }

    /// <summary>Process id of the server (the dotnet host).</summary>
    public int ProcessId => process.Id;

    /// <summary>True once the server process has ended.</summary>
    public bool HasExited => process.HasExited;

    /// <summary>Everything the server wrote to stdout and stderr so far (interleaved by line; the last 4 MB).</summary>
    public string Output => output.ToString();

    /// <summary>
    /// Starts the server and waits (up to 60 s) until its port accepts TCP connections. <paramref name="scheme"/> "https"
    /// makes it listen with TLS (the environment must then configure a certificate, e.g. Kestrel__Certificates__Default__Path).
    /// </summary>
    public static async Task<ServerProcess> StartAsync(string serverDllPath, IReadOnlyDictionary<string, string> environment, CancellationToken ct = default, string scheme = "http")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(serverDllPath);
        ArgumentNullException.ThrowIfNull(environment);
        var dll = Path.GetFullPath(serverDllPath);
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"The server assembly {dll} does not exist; build the server project first.", dll);
        }

        return await FreePortStart.StartAsync(
            port =>
            {
                var variables = new Dictionary<string, string>
                {
                    ["ASPNETCORE_ENVIRONMENT"] = "Development",
                    [TestBudgets.RedisOperationTimeoutVariable] = TestBudgets.RedisOperationTimeout,
                };
                foreach (var (key, value) in environment)
                {
                    variables[key] = value;
                }

                var output = new OutputBuffer(4 * 1024 * 1024);
                var url = $"{scheme}://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}";
                var process = ChildProcess.Start([DotnetHost(), dll, "--urls", url], Path.GetDirectoryName(dll)!, output, variables);
                return new ServerProcess(process, output, port, scheme);
            },
            server => server.WaitForPortAsync(ct),
            server => server.DisposeAsync().AsTask()).ConfigureAwait(false);
    }

    /// <summary>Kills the server's process tree and waits (up to 10 s) for it to end.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        exitRegistration.Dispose();
        watchdog.Dispose();
        Commands.TryKill(process);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Gave up waiting; the kill was sent.
        }

        process.Dispose();
    }

    private static string DotnetHost()
    {
        var fromSdk = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(fromSdk) && File.Exists(fromSdk))
        {
            return fromSdk;
        }

        var current = Environment.ProcessPath;
        if (current is not null && Path.GetFileNameWithoutExtension(current).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
        {
            return current;
        }

        return Executables.FindOnPath("dotnet") ?? "dotnet";
    }

    private async Task WaitForPortAsync(CancellationToken cancellationToken)
    {
        var elapsed = Stopwatch.StartNew();
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (process.HasExited)
            {
                await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false); // drains the output
                var message = $"The server ({Commands.Describe(process.StartInfo.FileName, process.StartInfo.ArgumentList)}) exited with code {process.ExitCode} before listening on {Address}. Output:\n{Output}";
                throw Output.Contains("address already in use", StringComparison.OrdinalIgnoreCase)
                    ? new PortInUseException(message)
                    : new InvalidOperationException(message);
            }

            if (await TcpPorts.CanConnectAsync("127.0.0.1", Port, TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false))
            {
                return;
            }

            if (elapsed.Elapsed > StartTimeout)
            {
                throw new TimeoutException($"The server did not accept TCP connections on {Address} within {StartTimeout.TotalSeconds:0} s. Output:\n{Output}");
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }
    }
}
