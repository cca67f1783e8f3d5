using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Metering.Testing;

/// <summary>POSIX signals, sent by process id: faults are injected only on processes a test started.</summary>
public static class Signals
{
    public const int Interrupt = 2;
    public const int Quit = 3;
    public const int Sigkill = 9;
    public const int Terminate = 15;
    public const int Continue = 18;
    public const int Pause = 19;

    /// <summary>Sends <paramref name="signal"/> to process <paramref name="pid"/>; false when there is no such process.</summary>
    public static bool Send(int pid, int signal) => pid > 0 && Kill(pid, signal) == 0;

    /// <summary>Sends <paramref name="signal"/> and waits up to <paramref name="grace"/> for the process to end, then kills it.</summary>
    public static async Task StopAsync(int pid, int signal, TimeSpan grace)
    {
        Send(pid, signal);
        foreach (var (deadline, last) in new[] { (grace, false), (TimeSpan.FromSeconds(10), true) })
        {
            var waited = Stopwatch.StartNew();
            while (Send(pid, 0) && waited.Elapsed < deadline)
            {
                await Task.Delay(50).ConfigureAwait(false);
            }

            if (last || !Send(pid, 0))
            {
                return;
            }

            Send(pid, Sigkill);
        }
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}

/// <summary>What a command printed and how it ended.</summary>
public sealed record CommandResult(int ExitCode, string Stdout, string Stderr)
{
    public string Output => Stdout + Stderr;
}

/// <summary>Runs commands to their end, within a time limit.</summary>
public static class Commands
{
    public static async Task<CommandResult> RunAsync(
        string fileName,
        IEnumerable<string> arguments,
        TimeSpan timeout,
        CancellationToken cancellationToken = default,
        string? workingDirectory = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        using var process = new Process { StartInfo = StartInfo(fileName, arguments, workingDirectory, environment) };
        process.Start();
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            TryKill(process);
            cancellationToken.ThrowIfCancellationRequested();
            throw new TimeoutException($"'{fileName} {string.Join(' ', arguments)}' did not finish within {timeout.TotalSeconds:0} s.");
        }

        return new CommandResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    public static ProcessStartInfo StartInfo(string fileName, IEnumerable<string> arguments, string? workingDirectory, IReadOnlyDictionary<string, string>? environment)
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

        return startInfo;
    }

    /// <summary>The first executable <paramref name="name"/> on PATH, or null.</summary>
    public static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(directory => Path.Combine(directory, name))
            .FirstOrDefault(File.Exists);

    public static void TryKill(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // Already gone, or not ours to kill.
        }
    }
}

/// <summary>Loopback ports for servers the tests start.</summary>
public static class TcpPorts
{
    private static readonly Lock Gate = new();
    private static readonly HashSet<int> HandedOut = [];

    /// <summary>A port on 127.0.0.1 that was free a moment ago and was not handed out before in this process.</summary>
    public static int GetFreeLoopbackPort()
    {
        lock (Gate)
        {
            while (true)
            {
                var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                var port = ((IPEndPoint)listener.LocalEndpoint).Port;
                listener.Stop();
                if (HandedOut.Add(port))
                {
                    return port;
                }
            }
        }
    }

    public static async Task<bool> CanConnectAsync(string host, int port, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        using var client = new TcpClient();
        try
        {
            await client.ConnectAsync(host, port, limit.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}

/// <summary>Cleanups run when the test host exits, for what a test could not stop itself (it failed, or was aborted).</summary>
public static class ExitCleanup
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<object, Action> Actions = new();

    static ExitCleanup() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        foreach (var action in Actions.Values)
        {
            action();
        }
    };

    public static void Register(object owner, Action cleanup) => Actions[owner] = cleanup;

    public static void Unregister(object owner) => Actions.TryRemove(owner, out _);
}
