using System.Globalization;

namespace Metering.Testing;

/// <summary>
/// A throwaway PostgreSQL or Redis started by <c>deploy/local/servers.sh</c> (the script <c>make run</c> uses) in a
/// fresh temp folder on a free 127.0.0.1 port, without durability. The test owns its process (by id): it may signal,
/// stop and start it again on the same data and port. Stopped and deleted on dispose, or when the test host exits.
/// </summary>
public sealed class LocalServer : IAsyncDisposable
{
    private const int Attempts = 3;
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromMinutes(3);

    private readonly string _kind;
    private readonly string _directory;
    private readonly string[] _options;
    private int _disposed;

    private LocalServer(string kind, string directory, string[] options, int port, string connectionString)
    {
        _kind = kind;
        _directory = directory;
        _options = options;
        Port = port;
        ConnectionString = connectionString;
    }

    /// <summary>Npgsql connection string (superuser <c>metering</c>, database <c>metering</c>), or the StackExchange.Redis
    /// configuration string with <c>allowAdmin=true</c>.</summary>
    public string ConnectionString { get; }

    /// <summary>The 127.0.0.1 port; the same after <see cref="StartAgainAsync"/>.</summary>
    public int Port { get; }

    /// <summary>The server's process id (the postmaster for PostgreSQL); a new one after <see cref="StartAgainAsync"/>.</summary>
    public int ProcessId { get; private set; }

    public string Description => $"local {_kind} (deploy/local/servers.sh, 127.0.0.1:{Port.ToString(CultureInfo.InvariantCulture)}, {_directory})";

    /// <param name="cancellationToken">Cancels the start.</param>
    /// <param name="settings">More server settings as "name=value", e.g. "max_connections=100".</param>
    public static Task<LocalServer> StartPostgresAsync(CancellationToken cancellationToken = default, params string[] settings) =>
        StartAsync("postgres", settings.SelectMany(s => new[] { "--postgres-setting", s }), cancellationToken);

    /// <param name="cancellationToken">Cancels the start.</param>
    /// <param name="arguments">More redis-server arguments, e.g. "--replicaof", "127.0.0.1", "6379".</param>
    public static Task<LocalServer> StartRedisAsync(CancellationToken cancellationToken = default, params string[] arguments) =>
        StartAsync("redis", arguments.SelectMany(a => new[] { "--redis-arg", a }), cancellationToken);

    /// <summary>Sends <paramref name="signal"/> (e.g. <see cref="Signals.Pause"/>); false when the server is not running.</summary>
    public bool Signal(int signal) => Signals.Send(ProcessId, signal);

    /// <summary>
    /// Stops the server with <paramref name="signal"/> (PostgreSQL: <see cref="Signals.Interrupt"/> is a fast shutdown,
    /// <see cref="Signals.Quit"/> an immediate one; <see cref="Signals.Sigkill"/> a crash) and waits for it to end.
    /// </summary>
    public Task StopAsync(int signal) => Signals.StopAsync(ProcessId, signal, TimeSpan.FromSeconds(30));

    /// <summary>Starts the stopped server again on the same data and port (Redis comes back empty).</summary>
    public async Task StartAgainAsync(CancellationToken cancellationToken = default)
    {
        var result = await RunScriptAsync("start", _options, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"servers.sh start failed again ({result.ExitCode}):\n{result.Stderr}");
        }

        ProcessId = await ReadPidAsync(cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            ExitCleanup.Unregister(this);
            await StopAsync(ShutdownSignal).ConfigureAwait(false);
            DeleteDirectory(_directory);
        }
    }

    private int ShutdownSignal => _kind == "postgres" ? Signals.Quit : Signals.Terminate;

    private static async Task<LocalServer> StartAsync(string _kind, IEnumerable<string> extra, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            var port = TcpPorts.GetFreeLoopbackPort();
            var _directory = Path.Combine("/tmp", $"metering-test-{_kind}-{Guid.NewGuid():N}"[..32]);
            Directory.CreateDirectory(_directory);
            string[] _options = ["--dir", _directory, "--only", _kind, "--throwaway", $"--{_kind}-port", port.ToString(CultureInfo.InvariantCulture), .. extra];
            var result = await RunScriptAsync("start", _options, cancellationToken).ConfigureAwait(false);
            if (result.ExitCode == 0)
            {
                var connectionString = result.Stdout.Trim().Split('=', 2)[1] + (_kind == "redis" ? ",allowAdmin=true" : "");
                var server = new LocalServer(_kind, _directory, _options, port, connectionString);
                ExitCleanup.Register(server, () =>
                {
                    Signals.Send(server.ProcessId, server.ShutdownSignal);
                    DeleteDirectory(_directory);
                });
                server.ProcessId = await server.ReadPidAsync(cancellationToken).ConfigureAwait(false);
                return server;
            }

            DeleteDirectory(_directory);
            if (attempt == Attempts || !result.Stderr.Contains("is in use", StringComparison.Ordinal))
            {
                throw new InvalidOperationException(
                    $"deploy/local/servers.sh could not start a throwaway {_kind} (exit code {result.ExitCode}); it said:\n{result.Stderr}");
            }
        }
    }

    private async Task<int> ReadPidAsync(CancellationToken cancellationToken)
    {
        var result = await RunScriptAsync("pid", [_kind, .. _options], cancellationToken).ConfigureAwait(false);
        return result.ExitCode == 0
            ? int.Parse(result.Stdout.Trim(), CultureInfo.InvariantCulture)
            : throw new InvalidOperationException($"servers.sh pid {_kind} failed: {result.Stderr}");
    }

    private static Task<CommandResult> RunScriptAsync(string command, IEnumerable<string> arguments, CancellationToken cancellationToken) =>
        Commands.RunAsync(
            Commands.FindOnPath("bash") ?? "/bin/bash",
            [Path.Combine(RepositoryRoot.Find(), "deploy", "local", "servers.sh"), command, .. arguments],
            ScriptTimeout,
            cancellationToken);

    private static void DeleteDirectory(string _directory)
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A server still writing; the OS temp cleaner takes it later.
        }
    }
}
