using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Npgsql;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>Finds (or, on Debian/Ubuntu as root, installs) the PostgreSQL and Redis server binaries.</summary>
internal static class ServerBinaries
{
    private static readonly SemaphoreSlim InstallGate = new(1, 1);

    /// <summary>Folder holding initdb and postgres: PATH first, then the highest /usr/lib/postgresql/N/bin (and other usual places).</summary>
    public static string? FindPostgresBinDirectory()
    {
        var initdb = Executables.FindOnPath("initdb");
        if (initdb is not null && Executables.IsExecutableFile(Path.Combine(Path.GetDirectoryName(initdb)!, "postgres")))
        {
            return Path.GetDirectoryName(initdb);
        }

        var versioned = new List<(Version Version, string BinDirectory)>();
        void AddVersioned(string parent, string prefix, string suffix)
        {
            if (!Directory.Exists(parent))
            {
                return;
            }

            foreach (var directory in Directory.EnumerateDirectories(parent, prefix + "*"))
            {
                var versionText = Path.GetFileName(directory)[prefix.Length..];
                var bin = Path.Combine(directory, suffix);
                if (Version.TryParse(versionText.Contains('.', StringComparison.Ordinal) ? versionText : versionText + ".0", out var version)
                    && Executables.IsExecutableFile(Path.Combine(bin, "initdb"))
                    && Executables.IsExecutableFile(Path.Combine(bin, "postgres")))
                {
                    versioned.Add((version, bin));
                }
            }
        }

        AddVersioned("/usr/lib/postgresql", "", "bin"); // Debian, Ubuntu
        AddVersioned("/usr", "pgsql-", "bin"); // RHEL, Fedora (PGDG)
        AddVersioned("/usr/local/opt", "postgresql@", "bin"); // Homebrew (Intel)
        AddVersioned("/opt/homebrew/opt", "postgresql@", "bin"); // Homebrew (Apple silicon)
        return versioned.OrderByDescending(v => v.Version).Select(v => v.BinDirectory).FirstOrDefault();
    }

    public static string? FindRedisServer()
    {
        return Executables.Find("redis-server", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/opt/homebrew/bin");
    }

    /// <summary>
    /// Makes sure the requested binaries exist: installs the missing ones with apt-get on Debian/Ubuntu when running as root,
    /// otherwise throws one exception that says what to install.
    /// </summary>
    public static async Task EnsureAsync(bool postgres, bool redis, string whyLocal, CancellationToken cancellationToken)
    {
        if (OperatingSystem.IsWindows())
        {
            throw new InvalidOperationException(
                $"{whyLocal}, and local PostgreSQL/Redis server processes are not supported on Windows. " +
                "Start Docker Desktop, or set METERING_TEST_POSTGRES (an Npgsql connection string) and METERING_TEST_REDIS (a StackExchange.Redis configuration string).");
        }

        await InstallGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var missing = Missing(postgres, redis);
            if (missing.Count == 0)
            {
                return;
            }

            var packages = string.Join(' ', missing.Select(m => m.DebianPackage));
            if (File.Exists("/etc/debian_version") && UnixUsers.IsRoot() && Executables.Find("apt-get", "/usr/bin") is { } aptGet)
            {
                var environment = new Dictionary<string, string> { ["DEBIAN_FRONTEND"] = "noninteractive" };
                string[] install = ["install", "-y", "-q", .. missing.Select(m => m.DebianPackage)];
                var result = await Commands.RunAsync(aptGet, install, TimeSpan.FromMinutes(15), cancellationToken, environment: environment).ConfigureAwait(false);
                if (result.ExitCode != 0)
                {
                    var update = await Commands.RunAsync(aptGet, ["update", "-q"], TimeSpan.FromMinutes(10), cancellationToken, environment: environment).ConfigureAwait(false);
                    result = await Commands.RunAsync(aptGet, install, TimeSpan.FromMinutes(15), cancellationToken, environment: environment).ConfigureAwait(false);
                    if (result.ExitCode != 0)
                    {
                        throw new InvalidOperationException(
                            $"{whyLocal}; installing the servers with 'apt-get install -y {packages}' failed (exit code {result.ExitCode}).\n" +
                            $"apt-get update said:\n{Tail(update.Output, 15)}\napt-get install said:\n{Tail(result.Output, 30)}");
                    }
                }

                missing = Missing(postgres, redis);
                if (missing.Count == 0)
                {
                    return;
                }
            }

            throw new InvalidOperationException(
                $"{whyLocal}, and {string.Join(" and ", missing.Select(m => m.What))} could not be found. " +
                $"Install them (Debian/Ubuntu: 'sudo apt-get install -y {packages}'; Fedora/RHEL: 'sudo dnf install -y {string.Join(' ', missing.Select(m => m.RpmPackage))}'; " +
                $"macOS: 'brew install {string.Join(' ', missing.Select(m => m.BrewPackage))}'), or start a Docker engine, " +
                "or set METERING_TEST_POSTGRES (an Npgsql connection string) and METERING_TEST_REDIS (a StackExchange.Redis configuration string).");
        }
        finally
        {
            InstallGate.Release();
        }
    }

    private static List<(string What, string DebianPackage, string RpmPackage, string BrewPackage)> Missing(bool postgres, bool redis)
    {
        var missing = new List<(string, string, string, string)>();
        if (postgres && FindPostgresBinDirectory() is null)
        {
            missing.Add(("the PostgreSQL server binaries (initdb and postgres, looked for on PATH and in /usr/lib/postgresql/*/bin)", "postgresql", "postgresql-server", "postgresql@16"));
        }

        if (redis && FindRedisServer() is null)
        {
            missing.Add(("redis-server (looked for on PATH)", "redis-server", "redis", "redis"));
        }

        return missing;
    }

    internal static string Tail(string text, int lines)
    {
        var all = text.TrimEnd('\n').Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }
}

/// <summary>
/// A throwaway PostgreSQL cluster: initdb into a fresh temp folder, postgres on a free 127.0.0.1 port with trust
/// authentication and durability switched off. When the test host runs as root, the cluster runs as the unprivileged
/// user "postgres" (if it exists) or "nobody", through setpriv.
/// </summary>
internal sealed class LocalPostgres : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private readonly string rootDirectory;
    private readonly IReadOnlyList<string> command;
    private Process process;
    private OutputBuffer output;
    private Watchdog watchdog;
    private IDisposable exitRegistration;
    private bool running = true;
    private int disposed;

    private LocalPostgres(Process process, OutputBuffer output, string rootDirectory, IReadOnlyList<string> command, int port, string description)
    {
        this.process = process;
        this.output = output;
        this.rootDirectory = rootDirectory;
        this.command = command;
        Port = port;
        Description = description;
        ConnectionString = new NpgsqlConnectionStringBuilder
        {
            Host = "127.0.0.1",
            Port = port,
            Database = "postgres",
            Username = "postgres",
            Password = "postgres",
        }.ConnectionString;
        (watchdog, exitRegistration) = Guard(process);
    }

    public string ConnectionString { get; }

    public string Description { get; }

    /// <summary>The 127.0.0.1 port the server listens on (the same after <see cref="StartAgainAsync"/>).</summary>
    public int Port { get; }

    /// <summary>Process id of the postmaster.</summary>
    public int ProcessId => process.Id;

    /// <param name="binDirectory">Folder of initdb and postgres.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <param name="settings">More server settings as "name=value", applied after the defaults (e.g. "max_connections=100").</param>
    public static async Task<LocalPostgres> StartAsync(string binDirectory, CancellationToken cancellationToken, IReadOnlyList<string>? settings = null)
    {
        (string Name, string Uid, string Gid)? runAs = null;
        string? setpriv = null;
        if (UnixUsers.IsRoot())
        {
            runAs = await UnixUsers.FindUserAsync(["postgres", "nobody"], cancellationToken).ConfigureAwait(false)
                ?? throw new InvalidOperationException("PostgreSQL refuses to run as root, and neither a 'postgres' nor a 'nobody' user exists to run it as.");
            setpriv = Executables.Find("setpriv", "/usr/bin", "/bin")
                ?? throw new InvalidOperationException("PostgreSQL refuses to run as root, and setpriv (util-linux) was not found to drop privileges. Install util-linux.");
        }

        // As root, use /tmp: TMPDIR may point somewhere the unprivileged user cannot reach.
        var tempBase = runAs is null ? Path.GetTempPath() : "/tmp";
        var rootDirectory = Path.Combine(tempBase, "metering-test-pg-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(rootDirectory);
        try
        {
            if (runAs is { } user)
            {
                var chown = await Commands.RunAsync(Executables.Find("chown", "/usr/bin", "/bin") ?? "chown", [$"{user.Uid}:{user.Gid}", rootDirectory], TimeSpan.FromSeconds(30), cancellationToken)
                    .ConfigureAwait(false);
                if (chown.ExitCode != 0)
                {
                    throw new InvalidOperationException($"chown of {rootDirectory} to {user.Name} failed: {chown.Output}");
                }
            }

            string[] Command(string executable, IEnumerable<string> arguments) => runAs is { } u
                ? [setpriv!, $"--reuid={u.Uid}", $"--regid={u.Gid}", "--clear-groups", "--", Path.Combine(binDirectory, executable), .. arguments]
                : [Path.Combine(binDirectory, executable), .. arguments];

            var dataDirectory = Path.Combine(rootDirectory, "data");
            var initdb = Command("initdb", ["-D", dataDirectory, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]);
            var initdbResult = await Commands.RunAsync(initdb[0], initdb.Skip(1), TimeSpan.FromMinutes(2), cancellationToken, workingDirectory: rootDirectory)
                .ConfigureAwait(false);
            if (initdbResult.ExitCode != 0)
            {
                throw new InvalidOperationException(
                    $"initdb failed (exit code {initdbResult.ExitCode}): {Commands.Describe(initdb[0], initdb.Skip(1))}\n{ServerBinaries.Tail(initdbResult.Output, 30)}");
            }

            var userText = runAs is { } runAsUser ? $", as user {runAsUser.Name}" : "";
            return await FreePortStart.StartAsync(
                port =>
                {
                    var postgres = Command("postgres",
                    [
                        "-D", dataDirectory,
                        "-p", port.ToString(CultureInfo.InvariantCulture),
                        "-c", "listen_addresses=127.0.0.1",
                        "-c", "unix_socket_directories=",
                        "-c", "fsync=off",
                        "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off",
                        "-c", "max_connections=300",
                        "-c", "jit=off",
                        "-c", "logging_collector=off",
                        "-c", "log_min_messages=warning",
                        .. (settings ?? []).SelectMany(setting => new[] { "-c", setting }),
                    ]);
                    var output = new OutputBuffer();
                    var process = ChildProcess.Start(postgres, rootDirectory, output);
                    return new LocalPostgres(process, output, rootDirectory, postgres, port, $"local process ({binDirectory}/postgres{userText}, 127.0.0.1:{port})");
                },
                server => server.WaitUntilReadyAsync(cancellationToken),
                server => server.StopProcessAsync()).ConfigureAwait(false);
        }
        catch
        {
            TryDeleteDirectory(rootDirectory);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        await StopProcessAsync().ConfigureAwait(false);
        TryDeleteDirectory(rootDirectory);
    }

    internal static void TryDeleteDirectory(string directory)
    {
        try
        {
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }
        }
        catch (IOException)
        {
            // A process may still be writing; the watchdog or the OS temp cleaner gets it later.
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }
    }

    /// <summary>
    /// Stops the server with <paramref name="signal"/> (SIGINT is <c>pg_ctl stop -m fast</c>, SIGQUIT <c>-m immediate</c>)
    /// and waits for it to end, keeping its data for <see cref="StartAgainAsync"/>. For fault tests.
    /// </summary>
    public async Task StopAsync(int signal)
    {
        if (!running)
        {
            return;
        }

        running = false;
        exitRegistration.Dispose();
        watchdog.Dispose();
        await Signals.StopAsync(process, signal, TimeSpan.FromSeconds(30)).ConfigureAwait(false);
    }

    /// <summary>Starts the stopped server again on the same data and port, and waits until it accepts connections.</summary>
    public async Task StartAgainAsync(CancellationToken cancellationToken)
    {
        if (running)
        {
            throw new InvalidOperationException("PostgreSQL is running.");
        }

        process.Dispose();
        output = new OutputBuffer();
        process = ChildProcess.Start(command, rootDirectory, output);
        (watchdog, exitRegistration) = Guard(process);
        running = true;
        await WaitUntilReadyAsync(cancellationToken).ConfigureAwait(false);
    }

    private (Watchdog Watchdog, IDisposable ExitRegistration) Guard(Process server)
    {
        var guard = Watchdog.Start(server, "QUIT", rootDirectory);
        var registration = ExitCleanup.Register(() =>
        {
            if (guard.IsActive)
            {
                guard.Trigger();
                return;
            }

            Signals.Stop(server, Signals.Quit, TimeSpan.FromSeconds(5));
            TryDeleteDirectory(rootDirectory);
        });
        return (guard, registration);
    }

    private async Task StopProcessAsync()
    {
        // SIGQUIT = immediate shutdown: the data is thrown away, so there is nothing to checkpoint.
        await StopAsync(Signals.Quit).ConfigureAwait(false);
        process.Dispose();
    }

    private async Task WaitUntilReadyAsync(CancellationToken cancellationToken)
    {
        var probe = new NpgsqlConnectionStringBuilder(ConnectionString) { Pooling = false, Timeout = 3 }.ConnectionString;
        var deadline = Stopwatch.StartNew();
        Exception? lastError = null;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (process.HasExited)
            {
                await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false); // drains the output
                var log = output.Tail(40);
                var message = $"PostgreSQL ({Description}) exited with code {process.ExitCode} before accepting connections. Log:\n{log}";
                throw log.Contains("Address already in use", StringComparison.OrdinalIgnoreCase) || log.Contains("could not bind", StringComparison.OrdinalIgnoreCase)
                    ? new PortInUseException(message)
                    : new InvalidOperationException(message);
            }

            try
            {
                await using var connection = new NpgsqlConnection(probe);
                await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
                await using var command = new NpgsqlCommand("select 1", connection);
                await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (e is NpgsqlException or SocketException or IOException or TimeoutException)
            {
                lastError = e;
            }

            if (deadline.Elapsed > StartTimeout)
            {
                throw new TimeoutException(
                    $"PostgreSQL ({Description}) did not accept connections within {StartTimeout.TotalSeconds:0} s (last error: {lastError.Message}). Log:\n{output.Tail(40)}");
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }
    }
}

/// <summary>A throwaway redis-server on a free 127.0.0.1 port, without persistence, in a fresh temp folder.</summary>
internal sealed class LocalRedis : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private readonly string rootDirectory;
    private readonly int port;
    private readonly IReadOnlyList<string> command;
    private Process process;
    private OutputBuffer output;
    private Watchdog watchdog;
    private IDisposable exitRegistration;
    private bool running = true;
    private int disposed;

    private LocalRedis(Process process, OutputBuffer output, string rootDirectory, IReadOnlyList<string> command, int port, string description)
    {
        this.process = process;
        this.output = output;
        this.rootDirectory = rootDirectory;
        this.command = command;
        this.port = port;
        Description = description;
        ConnectionString = $"127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)},allowAdmin=true";
        (watchdog, exitRegistration) = Guard(process);
    }

    public string ConnectionString { get; }

    public string Description { get; }

    /// <summary>The 127.0.0.1 port the server listens on (the same after <see cref="StartAgainAsync"/>).</summary>
    public int Port => port;

    /// <summary>Process id of redis-server.</summary>
    public int ProcessId => process.Id;

    /// <summary>The redis-server process, for tests that pause it (SIGSTOP) or stop it.</summary>
    internal Process Process => process;

    /// <param name="redisServer">Path of redis-server.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <param name="arguments">More command-line arguments, after the defaults (e.g. "--replicaof", "127.0.0.1", "6379").</param>
    public static async Task<LocalRedis> StartAsync(string redisServer, CancellationToken cancellationToken, IReadOnlyList<string>? arguments = null)
    {
        var rootDirectory = Path.Combine(Path.GetTempPath(), "metering-test-redis-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(rootDirectory);
        try
        {
            return await FreePortStart.StartAsync(
                port =>
                {
                    string[] command =
                    [
                        redisServer,
                        "--port", port.ToString(CultureInfo.InvariantCulture),
                        "--bind", "127.0.0.1",
                        "--save", "",
                        "--appendonly", "no",
                        "--dir", rootDirectory,
                        "--daemonize", "no",
                        "--protected-mode", "no",
                        "--loglevel", "warning",
                        .. arguments ?? [],
                    ];
                    var output = new OutputBuffer();
                    var process = ChildProcess.Start(command, rootDirectory, output);
                    return new LocalRedis(process, output, rootDirectory, command, port, $"local process ({redisServer}, 127.0.0.1:{port})");
                },
                server => server.WaitUntilReadyAsync(cancellationToken),
                server => server.StopProcessAsync()).ConfigureAwait(false);
        }
        catch
        {
            LocalPostgres.TryDeleteDirectory(rootDirectory);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        await StopProcessAsync().ConfigureAwait(false);
        LocalPostgres.TryDeleteDirectory(rootDirectory);
    }

    /// <summary>Sends <paramref name="signal"/> to redis-server (e.g. SIGSTOP/SIGCONT); false when it is not running.</summary>
    public bool Signal(int signal) => running && Signals.Send(process, signal);

    /// <summary>
    /// Stops redis-server with <paramref name="signal"/> (SIGKILL: a crash) and waits for it to end; it starts again, empty
    /// (no persistence), with <see cref="StartAgainAsync"/>. For fault tests.
    /// </summary>
    public async Task StopAsync(int signal)
    {
        if (!running)
        {
            return;
        }

        running = false;
        exitRegistration.Dispose();
        watchdog.Dispose();
        await Signals.StopAsync(process, signal, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
    }

    /// <summary>Starts the stopped server again with the same arguments and port, and waits until it answers PING.</summary>
    public async Task StartAgainAsync(CancellationToken cancellationToken)
    {
        if (running)
        {
            throw new InvalidOperationException("redis-server is running.");
        }

        process.Dispose();
        output = new OutputBuffer();
        process = ChildProcess.Start(command, rootDirectory, output);
        (watchdog, exitRegistration) = Guard(process);
        running = true;
        await WaitUntilReadyAsync(cancellationToken).ConfigureAwait(false);
    }

    private (Watchdog Watchdog, IDisposable ExitRegistration) Guard(Process server)
    {
        var guard = Watchdog.Start(server, "TERM", rootDirectory);
        var registration = ExitCleanup.Register(() =>
        {
            if (guard.IsActive)
            {
                guard.Trigger();
                return;
            }

            Signals.Stop(server, Signals.Terminate, TimeSpan.FromSeconds(5));
            LocalPostgres.TryDeleteDirectory(rootDirectory);
        });
        return (guard, registration);
    }

    private async Task StopProcessAsync()
    {
        await StopAsync(Signals.Terminate).ConfigureAwait(false);
        process.Dispose();
    }

    private async Task WaitUntilReadyAsync(CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.StartNew();
        Exception? lastError = null;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (process.HasExited)
            {
                await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
                var log = output.Tail(40);
                var message = $"redis-server ({Description}) exited with code {process.ExitCode} before accepting connections. Log:\n{log}";
                throw log.Contains("Address already in use", StringComparison.OrdinalIgnoreCase)
                    ? new PortInUseException(message)
                    : new InvalidOperationException(message);
            }

            try
            {
                if (await PingAsync(cancellationToken).ConfigureAwait(false))
                {
                    return;
                }
            }
            catch (Exception e) when (e is SocketException or IOException or TimeoutException)
            {
                lastError = e;
            }

            if (deadline.Elapsed > StartTimeout)
            {
                throw new TimeoutException(
                    $"redis-server ({Description}) did not answer PING within {StartTimeout.TotalSeconds:0} s (last error: {lastError?.Message ?? "no PONG"}). Log:\n{output.Tail(40)}");
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<bool> PingAsync(CancellationToken cancellationToken)
    {
        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            using var client = new TcpClient();
            await client.ConnectAsync("127.0.0.1", port, timeoutSource.Token).ConfigureAwait(false);
            var stream = client.GetStream();
            await stream.WriteAsync("PING\r\n"u8.ToArray(), timeoutSource.Token).ConfigureAwait(false);
            var buffer = new byte[64];
            var read = await stream.ReadAsync(buffer, timeoutSource.Token).ConfigureAwait(false);
            return Encoding.ASCII.GetString(buffer, 0, read).StartsWith("+PONG", StringComparison.Ordinal);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException("PING timed out.");
        }
    }
}

internal sealed class PortInUseException(string message) : Exception(message);
