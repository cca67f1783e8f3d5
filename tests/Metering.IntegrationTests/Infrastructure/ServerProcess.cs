using System.Diagnostics;
using System.Globalization;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// The real server as a child process, for end-to-end tests: <c>dotnet &lt;dll&gt; --urls http(s)://127.0.0.1:&lt;free port&gt;</c>,
/// started in the dll's folder (the content root, so its appsettings*.json are used) with the test host's environment plus
/// the given variables (and ASPNETCORE_ENVIRONMENT=Development, HttpApi__Port=0 and Metrics__Port=0, no HTTP/JSON or metrics port, unless given). Its stdout and stderr are kept in
/// <see cref="Output"/>. Disposing kills the process tree; a ProcessExit hook and a watchdog (Unix) kill it too if the
/// test host ends without disposing it. The server makes its gRPC endpoint HTTP/2-only itself, as h2c clients need.
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

    /// <summary>The exit code once the process has ended.</summary>
    public int ExitCode => process.ExitCode;

    /// <summary>Waits for the process to end by itself (e.g. after <see cref="Signals.Terminate"/>); false when it did not within <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var source = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(source.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Sends a POSIX signal (e.g. <see cref="Signals.Terminate"/>) to the server.</summary>
    public bool Signal(int signal) => Signals.Send(process, signal);

    /// <summary>True once the server process has ended.</summary>
    public bool HasExited => process.HasExited;

    /// <summary>Everything the server wrote to stdout and stderr so far (interleaved by line; the last 4 MB).</summary>
    public string Output => output.ToString();

    /// <summary>
    /// Starts the server and waits (up to 60 s) until its port accepts TCP connections. <paramref name="scheme"/> "https"
    /// makes it listen with TLS (the environment must then configure a certificate, e.g. Kestrel__Certificates__Default__Path).
    /// </summary>
    /// <param name="workingDirectory">The folder to start in; the dll's folder when null.</param>
    public static async Task<ServerProcess> StartAsync(string serverDllPath, IReadOnlyDictionary<string, string> environment, CancellationToken ct = default, string scheme = "http", string? workingDirectory = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(serverDllPath);
        ArgumentNullException.ThrowIfNull(environment);
        var dll = Path.GetFullPath(serverDllPath);
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"The server assembly {dll} does not exist; build the server project first.", dll);
        }

        return await FreePortStart.StartAsync(
            port => Launch(dll, port, environment, scheme, workingDirectory),
            server => server.WaitForPortAsync(ct),
            server => server.DisposeAsync().AsTask()).ConfigureAwait(false);
    }

    /// <summary>
    /// Starts the server on a given port, e.g. again on the port of one that was killed, so that its clients find it at
    /// the same address; waits as <see cref="StartAsync(string, IReadOnlyDictionary{string, string}, CancellationToken, string)"/> does.
    /// </summary>
    public static async Task<ServerProcess> StartOnPortAsync(string serverDllPath, int port, IReadOnlyDictionary<string, string> environment, CancellationToken ct = default, string scheme = "http")
    {
        ArgumentNullException.ThrowIfNull(environment);
        var server = Launch(Path.GetFullPath(serverDllPath), port, environment, scheme, workingDirectory: null);
        try
        {
            await server.WaitForPortAsync(ct).ConfigureAwait(false);
            return server;
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Runs the server dll with <paramref name="arguments"/> to its end (e.g. <c>migrate</c>, or a start that must fail), in <paramref name="workingDirectory"/>.</summary>
    internal static async Task<CommandResult> RunToEndAsync(string serverDllPath, IReadOnlyList<string> arguments, IReadOnlyDictionary<string, string> environment, string workingDirectory, TimeSpan timeout) =>
        await Commands.RunAsync(DotnetHost(), arguments.Prepend(Path.GetFullPath(serverDllPath)), timeout, CancellationToken.None, workingDirectory, Variables(environment)).ConfigureAwait(false);

    private static ServerProcess Launch(string dll, int port, IReadOnlyDictionary<string, string> environment, string scheme, string? workingDirectory)
    {
        var variables = Variables(environment);
        var output = new OutputBuffer(4 * 1024 * 1024);
        var url = $"{scheme}://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}";
        var process = ChildProcess.Start([DotnetHost(), dll, "--urls", url], workingDirectory ?? Path.GetDirectoryName(dll)!, output, variables);
        return new ServerProcess(process, output, port, scheme);
    }

    /// <summary>
    /// The test host's environment for the server: Development, and no HTTP/JSON or metrics port (servers run side by
    /// side), and a Redis budget for a loaded test machine (<see cref="TestBudgets"/>), unless <paramref name="environment"/>
    /// says otherwise.
    /// </summary>
    private static Dictionary<string, string> Variables(IReadOnlyDictionary<string, string> environment)
    {
        var variables = new Dictionary<string, string>
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Development",
            ["HttpApi__Port"] = "0",
            ["Metrics__Port"] = "0",
            [TestBudgets.RedisOperationTimeoutVariable] = TestBudgets.RedisOperationTimeout,
        };
        foreach (var (key, value) in environment)
        {
            variables[key] = value;
        }

        return variables;
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
