using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Metering.LoadBench;

/// <summary>
/// A server as a child process (<c>dotnet &lt;dll&gt; args</c>) listening on a loopback port; its output goes to a log file.
/// Stopped by its PID: SIGTERM, then a kill after 15 s. Also killed when the benchmark ends early.
/// </summary>
internal sealed partial class ChildServer : IAsyncDisposable
{
    private const int SigTerm = 15;
    private readonly Process _process;
    private readonly StreamWriter _log;
    private int _stopped;

    private ChildServer(Process process, StreamWriter log, int port)
    {
        _process = process;
        _log = log;
        Port = port;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => KillNow();
        Console.CancelKeyPress += (_, _) => KillNow();
    }

    public int Port { get; }

    public int ProcessId => _process.Id;

    public Uri Address => new($"http://127.0.0.1:{Port.ToString(CultureInfo.InvariantCulture)}");

    /// <summary>Starts <c>dotnet <paramref name="dll"/> <paramref name="arguments"/></c> in the dll's folder with <paramref name="environment"/> added.</summary>
    public static ChildServer Start(string dll, IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment, int port, string logPath)
    {
        var start = new ProcessStartInfo(DotnetHost())
        {
            WorkingDirectory = Path.GetDirectoryName(dll)!,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(dll);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(logPath)!);
        var _log = new StreamWriter(logPath, append: false) { AutoFlush = true };
        var _process = new Process { StartInfo = start };
        _process.OutputDataReceived += (_, e) => Write(_log, e.Data);
        _process.ErrorDataReceived += (_, e) => Write(_log, e.Data);
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        return new ChildServer(_process, _log, port);
    }

    /// <summary>A port on 127.0.0.1 that nothing listens on right now.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Waits until <paramref name="ready"/> succeeds (the server answers), failing when the process ends or <paramref name="timeout"/> passes.</summary>
    public async Task WaitUntilReadyAsync(Func<Task> ready, TimeSpan timeout, string logPath)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"The server (pid {_process.Id}) exited with code {_process.ExitCode} while starting; see {logPath}.");
            }

            try
            {
                await ready().ConfigureAwait(false);
                return;
            }
            catch (Exception) when (deadline.Elapsed < timeout)
            {
                await Task.Delay(250).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Resident set size of the process now (VmRSS in /proc/&lt;pid&gt;/status), or null when unreadable.</summary>
    public long? ResidentBytes() => ProcessMemory.ResidentBytes(_process.Id);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        if (!_process.HasExited)
        {
            _ = Kill(_process.Id, SigTerm);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try
            {
                await _process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync().ConfigureAwait(false);
            }
        }

        _process.Dispose();
        await _log.DisposeAsync().ConfigureAwait(false);
    }

    private void KillNow()
    {
        if (Volatile.Read(ref _stopped) == 0)
        {
            try
            {
                if (!_process.HasExited)
                {
                    _process.Kill(entireProcessTree: true);
                }
            }
            catch (InvalidOperationException)
            {
                // Already gone.
            }
        }
    }

    private static void Write(StreamWriter _log, string? line)
    {
        if (line is not null)
        {
            lock (_log)
            {
                _log.WriteLine(line);
            }
        }
    }

    private static string DotnetHost()
    {
        var fromSdk = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(fromSdk) && File.Exists(fromSdk))
        {
            return fromSdk;
        }

        var current = Environment.ProcessPath;
        return current is not null && Path.GetFileNameWithoutExtension(current) == "dotnet" ? current : "dotnet";
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}

/// <summary>Reads a process's resident set size from /proc.</summary>
internal static class ProcessMemory
{
    public static long? ResidentBytes(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    var kilobytes = line["VmRSS:".Length..].Trim().Split(' ')[0];
                    return long.Parse(kilobytes, CultureInfo.InvariantCulture) * 1024;
                }
            }
        }
        catch (IOException)
        {
            // The process has ended.
        }

        return null;
    }
}
