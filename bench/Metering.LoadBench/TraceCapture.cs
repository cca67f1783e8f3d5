using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace Metering.LoadBench;

/// <summary>
/// <c>dotnet-trace collect</c> (the local tool of dotnet-tools.json) attached to a process, sampling its managed threads'
/// stacks into a .nettrace file until <see cref="StopAsync"/>. The tool runs in a process group of its own
/// (<c>setsid</c>), so that one SIGINT to the group reaches the tool behind the <c>dotnet</c> launcher and it writes the
/// file and ends, as after Ctrl+C.
/// </summary>
internal sealed partial class TraceCapture : IAsyncDisposable
{
    private const int SigInt = 2;
    private readonly Process _process;
    private readonly StringWriter _output = new();
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private TraceCapture(Process process, string path)
    {
        _process = process;
        Path = path;
    }

    public string Path { get; }

    /// <summary>The tool's process id (also its process group's), for the CPU split.</summary>
    public int ProcessId => _process.Id;

    /// <summary>Starts tracing <paramref name="pid"/> into <paramref name="path"/>; returns once the session is live.</summary>
    public static async Task<TraceCapture> StartAsync(string repositoryRoot, int pid, string path)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        File.Delete(path);
        var start = new ProcessStartInfo("setsid")
        {
            WorkingDirectory = repositoryRoot,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "dotnet", "dotnet-trace", "collect", "-p", pid.ToString(CultureInfo.InvariantCulture), "--profile", "dotnet-sampled-thread-time", "-o", path })
        {
            start.ArgumentList.Add(argument);
        }

        var capture = new TraceCapture(new Process { StartInfo = start }, path);
        capture._process.OutputDataReceived += (_, e) => capture.Note(e.Data);
        capture._process.ErrorDataReceived += (_, e) => capture.Note(e.Data);
        capture._process.Start();
        capture._process.BeginOutputReadLine();
        capture._process.BeginErrorReadLine();
        var exited = capture._process.WaitForExitAsync();
        var first = await Task.WhenAny(capture._started.Task, exited, Task.Delay(TimeSpan.FromSeconds(60))).ConfigureAwait(false);
        if (first != capture._started.Task)
        {
            await capture.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"dotnet-trace did not start tracing pid {pid} (run `dotnet tool restore`?):\n{capture.Output()}");
        }

        return capture;
    }

    /// <summary>Ends the session (SIGINT to the tool's process group) and waits until the file is written.</summary>
    public async Task StopAsync()
    {
        _ = Kill(-_process.Id, SigInt);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await _process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        if (!File.Exists(Path))
        {
            throw new InvalidOperationException($"dotnet-trace wrote no {Path}:\n{Output()}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync().ConfigureAwait(false);
        }

        _process.Dispose();
    }

    private void Note(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.WriteLine(line);
        }

        // Printed once the EventPipe session is open.
        if (line.StartsWith("Output File", StringComparison.Ordinal))
        {
            _started.TrySetResult();
        }
    }

    private string Output()
    {
        lock (_output)
        {
            return _output.ToString();
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
