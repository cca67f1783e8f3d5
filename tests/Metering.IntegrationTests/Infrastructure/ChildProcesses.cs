using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>Finds executables on PATH and in a few well-known folders.</summary>
internal static class Executables
{
    public static string? FindOnPath(string name)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? "";
        var extensions = OperatingSystem.IsWindows()
            ? (Environment.GetEnvironmentVariable("PATHEXT") ?? ".EXE;.CMD;.BAT").Split(';', StringSplitOptions.RemoveEmptyEntries).Prepend("")
            : [""];
        foreach (var directory in path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (var extension in extensions)
            {
                var candidate = Path.Combine(directory.Trim('"'), name + extension);
                if (IsExecutableFile(candidate))
                {
                    return candidate;
                }
            }
        }

        return null;
    }

    public static string? Find(string name, params string[] extraDirectories)
    {
        return FindOnPath(name)
            ?? extraDirectories.Select(directory => Path.Combine(directory, name)).FirstOrDefault(IsExecutableFile);
    }

    public static bool IsExecutableFile(string path)
    {
        if (!File.Exists(path))
        {
            return false;
        }

        if (OperatingSystem.IsWindows())
        {
            return true;
        }

        const UnixFileMode anyExecute = UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        try
        {
            return (File.GetUnixFileMode(path) & anyExecute) != 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false; // e.g. a dangling symlink
        }
    }
}

/// <summary>Keeps the last part of a child process's output (stdout and stderr interleaved, line by line).</summary>
internal sealed class OutputBuffer(int maxChars = 256 * 1024)
{
    private readonly Lock gate = new();
    private readonly StringBuilder text = new();

    public void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (gate)
        {
            text.Append(line).Append('\n');
            if (text.Length > maxChars)
            {
                text.Remove(0, text.Length - maxChars);
            }
        }
    }

    /// <summary>Subscribes to the process's redirected stdout and stderr; call before <see cref="Process.Start()"/>.</summary>
    public void Attach(Process process)
    {
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
    }

    public string Tail(int lines)
    {
        var all = ToString().TrimEnd('\n').Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }

    public override string ToString()
    {
        lock (gate)
        {
            return text.ToString();
        }
    }
}

internal sealed record CommandResult(int ExitCode, string Output);

/// <summary>Runs short-lived commands (initdb, chown, id, apt-get) to completion.</summary>
internal static class Commands
{
    public static async Task<CommandResult> RunAsync(
        string fileName,
        IEnumerable<string> arguments,
        TimeSpan timeout,
        CancellationToken cancellationToken,
        string? workingDirectory = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var startInfo = new ProcessStartInfo(fileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory ?? "",
        };
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            startInfo.Environment[key] = value;
        }

        var output = new OutputBuffer(1024 * 1024);
        using var process = new Process { StartInfo = startInfo };
        output.Attach(process);
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(timeoutSource.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            TryKill(process);
            cancellationToken.ThrowIfCancellationRequested();
            throw new TimeoutException(
                $"'{Describe(fileName, startInfo.ArgumentList)}' did not finish within {timeout.TotalSeconds:0} s. Output:\n{output.Tail(40)}");
        }

        return new CommandResult(process.ExitCode, output.ToString());
    }

    public static string Describe(string fileName, IEnumerable<string> arguments)
    {
        return string.Join(' ', arguments.Prepend(fileName).Select(a => a.Length == 0 || a.Contains(' ', StringComparison.Ordinal) ? $"'{a}'" : a));
    }

    public static void TryKill(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // Already gone, or not ours to kill.
        }
    }
}

/// <summary>POSIX signals for child processes (SIGKILL through <see cref="Process.Kill(bool)"/> on Windows).</summary>
internal static class Signals
{
    public const int Interrupt = 2;
    public const int Quit = 3;
    public const int Sigkill = 9;
    public const int Terminate = 15;

    /// <summary>SIGSTOP and SIGCONT on Linux: the process hangs (its sockets stay open) until continued.</summary>
    public const int Pause = 19;
    public const int Continue = 18;

    /// <summary>Sends <paramref name="signal"/> to the process; false when it could not be sent (process gone).</summary>
    public static bool Send(Process process, int signal)
    {
        try
        {
            if (process.HasExited)
            {
                return false;
            }

            if (OperatingSystem.IsWindows())
            {
                process.Kill(entireProcessTree: true);
                return true;
            }

            return Kill(process.Id, signal) == 0;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>Sends <paramref name="signal"/>, waits up to <paramref name="grace"/> for the exit, then kills the process tree.</summary>
    public static async Task StopAsync(Process process, int signal, TimeSpan grace)
    {
        Send(process, signal);
        using var graceSource = new CancellationTokenSource(grace);
        try
        {
            await process.WaitForExitAsync(graceSource.Token).ConfigureAwait(false);
            return;
        }
        catch (OperationCanceledException)
        {
            // Did not stop in time.
        }

        Commands.TryKill(process);
        using var killSource = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            await process.WaitForExitAsync(killSource.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Nothing more to do.
        }
    }

    /// <summary>Synchronous variant for AppDomain.ProcessExit, where awaiting is not possible.</summary>
    public static void Stop(Process process, int signal, TimeSpan grace)
    {
        Send(process, signal);
        try
        {
            if (!process.WaitForExit(grace))
            {
                Commands.TryKill(process);
                process.WaitForExit(TimeSpan.FromSeconds(5));
            }
        }
        catch (InvalidOperationException)
        {
            // Not started or already disposed.
        }
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}

/// <summary>
/// Cleans up child processes when the test host exits without disposing them: a ProcessExit hook for a normal exit, and a
/// watchdog shell process (Unix) for a crash or SIGKILL of the test host.
/// </summary>
internal static class ExitCleanup
{
    private static readonly ConcurrentDictionary<long, Action> Actions = new();
    private static long nextId;

    static ExitCleanup()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => RunAll();
    }

    /// <summary>Runs <paramref name="cleanup"/> on process exit unless the returned registration is disposed first.</summary>
    public static IDisposable Register(Action cleanup)
    {
        var id = Interlocked.Increment(ref nextId);
        Actions[id] = cleanup;
        return new Registration(id);
    }

    private static void RunAll()
    {
        foreach (var id in Actions.Keys.Order().Reverse())
        {
            if (Actions.TryRemove(id, out var action))
            {
                try
                {
                    action();
                }
#pragma warning disable CA1031 // Best effort during process exit: one failed cleanup must not stop the others.
                catch (Exception)
#pragma warning restore CA1031
                {
                    // Ignore.
                }
            }
        }
    }

    private sealed class Registration(long id) : IDisposable
    {
        public void Dispose() => Actions.TryRemove(id, out _);
    }
}

/// <summary>
/// A small <c>/bin/sh</c> process that outlives the test host to clean up after it. It reads a line from its stdin, a pipe
/// whose write end only this process holds. Disposing the watchdog writes "disarm" and it exits. On anything else, such
/// as EOF when the test host dies (crash, SIGKILL, or vstest killing the test host soon after the run, which cuts
/// ProcessExit handlers short) or <see cref="Trigger"/>, it signals the server process (SIGKILL after 5 s) and deletes its
/// temp folder. The script puts itself in the background at once, so it is re-parented to init and is no longer part of
/// the test host's process tree if that tree is killed.
/// </summary>
internal sealed class Watchdog : IDisposable
{
    // $1 signal name, $2 pid, $3 expected process name (/proc/PID/comm) or "", $4 folder to delete or "".
    private const string Script =
        """
        exec >/dev/null 2>&1
        exec 3<&0
        (
          IFS= read -r command || true
          if [ "$command" = disarm ]; then exit 0; fi
          if [ -z "$3" ] || [ ! -r "/proc/$2/comm" ] || [ "$(cat "/proc/$2/comm")" = "$3" ]; then
            kill -s "$1" "$2"
            i=0
            while kill -0 "$2" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
            kill -s KILL "$2"
          fi
          if [ -n "$4" ]; then rm -rf "$4"; fi
        ) <&3 &
        """;

    private readonly Process? process;
    private int disposed;

    private Watchdog(Process? process) => this.process = process;

    /// <param name="process">Process to stop when the test host dies.</param>
    /// <param name="signalName">Signal name for kill -s, e.g. TERM, QUIT.</param>
    /// <param name="directoryToDelete">Folder to delete after the process is gone, or null.</param>
    public static Watchdog Start(Process process, string signalName, string? directoryToDelete)
    {
        if (OperatingSystem.IsWindows() || !File.Exists("/bin/sh"))
        {
            return new Watchdog(null);
        }

        // Linux shows the first 15 bytes of the executable's name in /proc/PID/comm; checked so that a reused PID is left alone.
        var comm = "";
        try
        {
            comm = File.Exists($"/proc/{process.Id}/comm") ? File.ReadAllText($"/proc/{process.Id}/comm").TrimEnd('\n') : "";
        }
        catch (IOException)
        {
            // Process already gone: no check then.
        }

        var startInfo = new ProcessStartInfo("/bin/sh")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = "/",
        };
        foreach (var argument in new[] { "-c", Script, "metering-test-watchdog", signalName, process.Id.ToString(CultureInfo.InvariantCulture), comm, directoryToDelete ?? "" })
        {
            startInfo.ArgumentList.Add(argument);
        }

        return new Watchdog(Process.Start(startInfo));
    }

    /// <summary>False where there is no watchdog (Windows): callers then clean up synchronously themselves.</summary>
    public bool IsActive => process is not null;

    /// <summary>Disarms the watchdog: it exits without touching anything. For an orderly stop by the caller.</summary>
    public void Dispose() => Finish("disarm\n");

    /// <summary>
    /// Makes the watchdog stop the process and delete the folder now, on its own: for ProcessExit handlers, which the test
    /// platform may cut short by killing the test host.
    /// </summary>
    public void Trigger() => Finish("");

    private void Finish(string line)
    {
        if (process is null || Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        try
        {
            process.StandardInput.Write(line);
            process.StandardInput.Close();
        }
        catch (IOException)
        {
            // The watchdog is gone already.
        }

        process.Dispose();
    }
}

/// <summary>User identity helpers for dropping root privileges (PostgreSQL refuses to run as root).</summary>
internal static class UnixUsers
{
    public static bool IsRoot()
    {
        if (OperatingSystem.IsWindows())
        {
            return false;
        }

        try
        {
            // Linux: "Uid: real effective saved fs".
            var uidLine = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Uid:", StringComparison.Ordinal));
            if (uidLine is not null)
            {
                return uidLine.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[2] == "0";
            }
        }
        catch (IOException)
        {
            // No /proc (macOS): fall back to the user name.
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }

        return Environment.UserName == "root";
    }

    /// <summary>Name, uid and primary gid of the first of <paramref name="candidates"/> that exists, or null.</summary>
    public static async Task<(string Name, string Uid, string Gid)?> FindUserAsync(IEnumerable<string> candidates, CancellationToken cancellationToken)
    {
        var id = Executables.Find("id", "/usr/bin", "/bin") ?? "id";
        foreach (var name in candidates)
        {
            var uid = await Commands.RunAsync(id, ["-u", name], TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
            var gid = await Commands.RunAsync(id, ["-g", name], TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
            if (uid.ExitCode == 0 && gid.ExitCode == 0)
            {
                return (name, uid.Output.Trim(), gid.Output.Trim());
            }
        }

        return null;
    }
}

/// <summary>Starts a child process with its output captured and its standard input closed.</summary>
internal static class ChildProcess
{
    public static Process Start(IReadOnlyList<string> command, string workingDirectory, OutputBuffer output, IReadOnlyDictionary<string, string>? environment = null)
    {
        var startInfo = new ProcessStartInfo(command[0])
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory,
        };
        foreach (var argument in command.Skip(1))
        {
            startInfo.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            startInfo.Environment[key] = value;
        }

        var process = new Process { StartInfo = startInfo };
        output.Attach(process);
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }
}
