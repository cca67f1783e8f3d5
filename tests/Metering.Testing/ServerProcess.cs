using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Metering.Testing;

/// <summary>
/// The real Metering server as a child process (<c>dotnet Metering.Server.dll --urls ...</c>) on a 127.0.0.1 port, in
/// Development, with its output kept. Killed (its process tree) on dispose, or when the test host exits.
/// </summary>
public sealed class ServerProcess : IAsyncDisposable
{
    /// <summary>The Redis budget of a server a test starts (a shared test machine can stall a healthy call past the shipped 150 ms).</summary>
    public const string RedisOperationTimeout = "00:00:01";

    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private int _disposed;

    private ServerProcess(string dll, int port, IReadOnlyDictionary<string, string> environment, string scheme, string? workingDirectory)
    {
        Port = port;
        Address = $"{scheme}://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}";
        _process = new Process { StartInfo = Commands.StartInfo(DotnetHost(), [dll, "--urls", Address], workingDirectory ?? Path.GetDirectoryName(dll), Variables(environment)) };
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        ExitCleanup.Register(this, () => Commands.TryKill(_process));
    }

    public string Address { get; }

    public int Port { get; }

    public int ProcessId => _process.Id;

    public int ExitCode => _process.ExitCode;

    public bool HasExited => _process.HasExited;

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>The server as built beside the calling test assembly (same configuration and framework).</summary>
    public static string BuiltServerDll()
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var dll = Path.Combine(RepositoryRoot.Find(), "src", "Metering.Server", "bin", here.Parent!.Name, here.Name, "Metering.Server.dll");
        return File.Exists(dll) ? dll : throw new FileNotFoundException($"The server assembly {dll} does not exist; build the server project first.", dll);
    }

    /// <summary>Starts the server on a free port and waits until it accepts TCP connections.</summary>
    public static async Task<ServerProcess> StartAsync(string serverDllPath, IReadOnlyDictionary<string, string> environment, CancellationToken ct = default, string scheme = "http", string? workingDirectory = null)
    {
        for (var attempt = 1; ; attempt++)
        {
            var server = new ServerProcess(Path.GetFullPath(serverDllPath), TcpPorts.GetFreeLoopbackPort(), environment, scheme, workingDirectory);
            try
            {
                await server.WaitForPortAsync(ct).ConfigureAwait(false);
                return server;
            }
            catch (InvalidOperationException) when (attempt < 3 && server.Output.Contains("address already in use", StringComparison.OrdinalIgnoreCase))
            {
                await server.DisposeAsync().ConfigureAwait(false);
            }
            catch
            {
                await server.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }
    }

    /// <summary>Starts the server on <paramref name="port"/> (e.g. again at the address a client knows).</summary>
    public static async Task<ServerProcess> StartOnPortAsync(string serverDllPath, int port, IReadOnlyDictionary<string, string> environment, CancellationToken ct = default, string scheme = "http")
    {
        var server = new ServerProcess(Path.GetFullPath(serverDllPath), port, environment, scheme, workingDirectory: null);
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

    /// <summary>Runs the server with <paramref name="arguments"/> (e.g. <c>migrate</c>) to its end.</summary>
    public static Task<CommandResult> RunToEndAsync(string serverDllPath, IReadOnlyList<string> arguments, IReadOnlyDictionary<string, string> environment, string workingDirectory, TimeSpan timeout) =>
        Commands.RunAsync(DotnetHost(), arguments.Prepend(Path.GetFullPath(serverDllPath)), timeout, CancellationToken.None, workingDirectory, Variables(environment));

    /// <summary>Waits for the process to end by itself (e.g. after <see cref="Signals.Terminate"/>); false when it did not within <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var limit = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Sends a POSIX signal (e.g. <see cref="Signals.Terminate"/>) to the server.</summary>
    public bool Signal(int signal) => !_process.HasExited && Signals.Send(_process.Id, signal);

    /// <summary>Kills the process tree (SIGKILL), as a crash would.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        ExitCleanup.Unregister(this);
        Commands.TryKill(_process);
        await WaitForExitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        _process.Dispose();
    }

    private void Append(string? line)
    {
        lock (_output)
        {
            _output.Append(line).Append('\n');
        }
    }

    private static Dictionary<string, string> Variables(IReadOnlyDictionary<string, string> environment)
    {
        var variables = new Dictionary<string, string>
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Development",
            ["HttpApi__Port"] = "0",
            ["Metrics__Port"] = "0",
            ["Redis__OperationTimeout"] = RedisOperationTimeout,
        };
        foreach (var (key, value) in environment)
        {
            variables[key] = value;
        }

        return variables;
    }

    private static string DotnetHost() =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } fromSdk && File.Exists(fromSdk)
            ? fromSdk
            : Environment.ProcessPath is { } current && Path.GetFileNameWithoutExtension(current) == "dotnet"
                ? current
                : Commands.FindOnPath("dotnet") ?? "dotnet";

    private async Task WaitForPortAsync(CancellationToken cancellationToken)
    {
        var elapsed = Stopwatch.StartNew();
        while (!await TcpPorts.CanConnectAsync("127.0.0.1", Port, TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false))
        {
            if (_process.HasExited)
            {
                await _process.WaitForExitAsync(cancellationToken).ConfigureAwait(false); // drains the output
                throw new InvalidOperationException($"The server exited with code {_process.ExitCode} before listening on {Address}. Output:\n{Output}");
            }

            if (elapsed.Elapsed > StartTimeout)
            {
                throw new TimeoutException($"The server did not accept TCP connections on {Address} within {StartTimeout.TotalSeconds:0} s. Output:\n{Output}");
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }
    }
}
