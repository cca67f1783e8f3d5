using System.Globalization;
using Npgsql;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// A throwaway PostgreSQL cluster of one test's own, run with <c>pg_ctl</c> so that the test can stop it
/// (<c>pg_ctl stop -m fast</c>) and start it again on the same port and data folder, as an operator restarting the
/// database would. Runs as an unprivileged user when the test host is root; stopped (<c>-m immediate</c>) and deleted on
/// dispose and on process exit.
/// </summary>
internal sealed class RestartablePostgres : IAsyncDisposable
{
    private readonly string _root;
    private readonly string _binDirectory;
    private readonly (string Name, string Uid, string Gid)? _runAs;
    private readonly string? _setpriv;
    private readonly string[] _settings;
    private readonly IDisposable _exitRegistration;

    private RestartablePostgres(string root, string binDirectory, (string, string, string)? runAs, string? setpriv, int port, string[] settings)
    {
        _root = root;
        _binDirectory = binDirectory;
        _runAs = runAs;
        _setpriv = setpriv;
        _settings = settings;
        Port = port;
        ConnectionString = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = port, Database = "postgres", Username = "postgres" }.ConnectionString;
        _exitRegistration = ExitCleanup.Register(() =>
        {
            var stop = Command("pg_ctl", ["-D", DataDirectory, "-m", "immediate", "-w", "stop"]);
            Commands.RunAsync(stop[0], stop.Skip(1), TimeSpan.FromSeconds(20), CancellationToken.None).GetAwaiter().GetResult();
            LocalPostgres.TryDeleteDirectory(_root);
        });
    }

    public int Port { get; }

    /// <summary>To the maintenance database "postgres", as superuser.</summary>
    public string ConnectionString { get; }

    private string DataDirectory => Path.Combine(_root, "data");

    /// <summary>initdb and start; <paramref name="settings"/> are extra <c>-c name=value</c> server settings.</summary>
    public static async Task<RestartablePostgres> StartAsync(params string[] settings)
    {
        await ServerBinaries.EnsureAsync(true, false, "A test needs a PostgreSQL of its own", CancellationToken.None);
        var bin = ServerBinaries.FindPostgresBinDirectory()!;
        (string, string, string)? runAs = null;
        string? setpriv = null;
        if (UnixUsers.IsRoot())
        {
            runAs = await UnixUsers.FindUserAsync(["postgres", "nobody"], CancellationToken.None)
                ?? throw new InvalidOperationException("No unprivileged user to run PostgreSQL as.");
            setpriv = Executables.Find("setpriv", "/usr/bin", "/bin") ?? throw new InvalidOperationException("setpriv not found.");
        }

        var root = Path.Combine("/tmp", "metering-test-pgctl-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(root);
        if (runAs is { } user)
        {
            await Commands.RunAsync("chown", [$"{user.Item2}:{user.Item3}", root], TimeSpan.FromSeconds(30), CancellationToken.None);
        }

        var server = new RestartablePostgres(root, bin, runAs, setpriv, TcpPorts.GetFreeLoopbackPort(), settings);
        try
        {
            await server.RunAsync("initdb", ["-D", server.DataDirectory, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]);
            await server.StartAgainAsync();
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>pg_ctl start on the same port and data, waiting until it accepts connections.</summary>
    public async Task StartAgainAsync()
    {
        var options = string.Join(' ', new[]
        {
            "-p", Port.ToString(CultureInfo.InvariantCulture), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "jit=off",
        }.Concat(_settings.SelectMany(s => new[] { "-c", s })));
        await RunAsync("pg_ctl", ["-D", DataDirectory, "-l", Path.Combine(_root, "log"), "-o", options, "-w", "-t", "60", "start"]);
    }

    /// <summary>pg_ctl stop -m fast: sessions are ended, the server shuts down cleanly.</summary>
    public Task StopAsync() => RunAsync("pg_ctl", ["-D", DataDirectory, "-m", "fast", "-w", "stop"]);

    public async ValueTask DisposeAsync()
    {
        _exitRegistration.Dispose();
        var stop = Command("pg_ctl", ["-D", DataDirectory, "-m", "immediate", "-w", "stop"]);
        await Commands.RunAsync(stop[0], stop.Skip(1), TimeSpan.FromSeconds(30), CancellationToken.None);
        LocalPostgres.TryDeleteDirectory(_root);
    }

    private async Task RunAsync(string executable, string[] arguments)
    {
        var command = Command(executable, arguments);
        var result = await Commands.RunAsync(command[0], command.Skip(1), TimeSpan.FromMinutes(2), CancellationToken.None, workingDirectory: _root);
        if (result.ExitCode != 0)
        {
            var log = File.Exists(Path.Combine(_root, "log")) ? File.ReadAllText(Path.Combine(_root, "log")) : "";
            throw new InvalidOperationException($"{executable} failed ({result.ExitCode}): {result.Output}\n{ServerBinaries.Tail(log, 20)}");
        }
    }

    private string[] Command(string executable, IEnumerable<string> arguments) => _runAs is { } u
        ? [_setpriv!, $"--reuid={u.Uid}", $"--regid={u.Gid}", "--clear-groups", "--", Path.Combine(_binDirectory, executable), .. arguments]
        : [Path.Combine(_binDirectory, executable), .. arguments];
}
