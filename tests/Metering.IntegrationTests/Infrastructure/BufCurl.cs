using System.Diagnostics;
using System.Text;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// Runs <c>buf curl</c> (the npm package @bufbuild/buf in the repository's node_modules, else buf on PATH) against a gRPC
/// server that has server reflection, the way a person would from a shell.
/// </summary>
/// <remarks>
/// The command is
/// <c>buf curl --protocol grpc --http2-prior-knowledge --emit-defaults --connect-timeout 10 --data @- [-H "name: value"]... ADDRESS/METHOD</c>,
/// with the JSON body on stdin. What comes back (checked against buf 1.75.0):
/// <list type="bullet">
/// <item><description>Success: exit code 0; stdout is the response message as protobuf JSON, pretty-printed (two-space
/// indent), field names in lowerCamelCase, and, because of --emit-defaults, fields with default values (0, false, "")
/// included; stderr is empty.</description></item>
/// <item><description>The RPC failed with a gRPC status: exit code = status code &lt;&lt; 3 (3 InvalidArgument → 24,
/// 5 NotFound → 40, 7 PermissionDenied → 56, 8 ResourceExhausted → 64, 9 FailedPrecondition → 72, 13 Internal → 104,
/// 14 Unavailable → 112, 16 Unauthenticated → 128; see <see cref="BufCurlResult.GrpcStatusCode"/>); stdout is empty and
/// stderr holds a JSON object in the Connect error format:
/// <c>{"code": "invalid_argument", "message": "...", "details": [{"type": "google.rpc.ErrorInfo", "value": "&lt;base64 of the message&gt;"}]}</c>
/// (code is the snake_case status name; "details" only when the status has details: rich error details from
/// google.rpc.Status, base64-encoded protobuf).</description></item>
/// <item><description>Anything else: an exit code from 1 to 7 (seen: 1) and a line <c>Failure: ...</c> on stderr, e.g. a
/// body that does not fit the request message (<c>json unmarshal: proto: ... unknown field "x"</c>), an unknown method
/// (<c>service "x" contains no such method</c>), and also a server that cannot be reached or whose reflection fails:
/// buf resolves the schema by reflection first, so a refused connection reads <c>failed to find service named "x" in schema</c>.
/// A plaintext server must speak HTTP/2 without TLS (Kestrel: EndpointDefaults Protocols = Http2); an HTTP/1.1-and-2
/// endpoint answers prior-knowledge HTTP/2 with GOAWAY, which also ends as "failed to find service".</description></item>
/// </list>
/// Headers are sent with the RPC only, not with the reflection requests.
/// </remarks>
public static class BufCurl
{
    private static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Calls <paramref name="method"/> (e.g. "metering.v1.MeteringService/CheckLimit") at <paramref name="address"/>
    /// (e.g. "http://127.0.0.1:5000") with <paramref name="jsonBody"/>; see the class remarks for the result.
    /// Gives up after 60 s (TimeoutException) unless <paramref name="cancellationToken"/> ends it first.
    /// </summary>
    public static async Task<BufCurlResult> InvokeAsync(
        string address,
        string method,
        string jsonBody,
        IReadOnlyDictionary<string, string>? headers = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(address);
        ArgumentException.ThrowIfNullOrWhiteSpace(method);
        ArgumentNullException.ThrowIfNull(jsonBody);

        var startInfo = new ProcessStartInfo(FindBuf())
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardInputEncoding = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false),
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        startInfo.Environment["NO_COLOR"] = "1";
        foreach (var argument in BuildArguments(address, method, headers))
        {
            startInfo.ArgumentList.Add(argument);
        }

        using var process = new Process { StartInfo = startInfo };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException(
                $"Could not run {startInfo.FileName}: {e.Message}. node_modules/.bin/buf is a Node.js launcher: is node on PATH? Else run 'npm ci' in the repository root again.", e);
        }

        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);

        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(DefaultTimeout);
        try
        {
            try
            {
                await process.StandardInput.WriteAsync(jsonBody.AsMemory(), timeoutSource.Token).ConfigureAwait(false);
                process.StandardInput.Close();
            }
            catch (IOException)
            {
                // buf exited before reading the body (e.g. a usage error); its exit code and stderr tell why.
            }

            await process.WaitForExitAsync(timeoutSource.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Commands.TryKill(process);
            cancellationToken.ThrowIfCancellationRequested();
            throw new TimeoutException($"buf curl {method} at {address} did not finish within {DefaultTimeout.TotalSeconds:0} s.");
        }

        return new BufCurlResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    /// <summary>The arguments after the buf executable, e.g. for logging a failing call.</summary>
    public static IReadOnlyList<string> BuildArguments(string address, string method, IReadOnlyDictionary<string, string>? headers = null)
    {
        var arguments = new List<string>
        {
            "curl",
            "--protocol", "grpc",
            "--http2-prior-knowledge",
            "--emit-defaults",
            "--connect-timeout", "10",
            "--data", "@-",
        };
        foreach (var (name, value) in headers ?? new Dictionary<string, string>())
        {
            arguments.Add("--header");
            arguments.Add($"{name}: {value}");
        }

        arguments.Add($"{address.TrimEnd('/')}/{method.TrimStart('/')}");
        return arguments;
    }

    /// <summary>
    /// &lt;repo&gt;/node_modules/.bin/buf (found from the folder holding Metering.sln above the test binaries), else buf on PATH.
    /// </summary>
    public static string FindBuf()
    {
        var root = RepositoryRoot.TryFind();
        if (root is not null)
        {
            foreach (var name in OperatingSystem.IsWindows() ? new[] { "buf.cmd", "buf.exe" } : ["buf"])
            {
                var candidate = Path.Combine(root, "node_modules", ".bin", name);
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }
        }

        return Commands.FindOnPath("buf")
            ?? throw new InvalidOperationException(
                $"The buf CLI was not found: neither {(root is null ? "<repository root>" : root)}{Path.DirectorySeparatorChar}node_modules{Path.DirectorySeparatorChar}.bin{Path.DirectorySeparatorChar}buf nor buf on PATH exists. " +
                $"Run 'npm ci' in the repository root{(root is null ? "" : $" ({root})")} to install it.");
    }
}

/// <summary>What <c>buf curl</c> returned; see <see cref="BufCurl"/> for how to read it.</summary>
public sealed record BufCurlResult(int ExitCode, string Stdout, string Stderr)
{
    /// <summary>True when the RPC succeeded (exit code 0).</summary>
    public bool Succeeded => ExitCode == 0;

    /// <summary>
    /// The gRPC status code of a failed RPC (exit code &gt;&gt; 3, for exit codes from 8 on), 0 on success, null when buf
    /// itself failed (exit codes 1 to 7: see <see cref="Stderr"/>).
    /// </summary>
    public int? GrpcStatusCode => ExitCode == 0 ? 0 : ExitCode >= 8 ? ExitCode >> 3 : null;

    /// <inheritdoc />
    public override string ToString() => $"buf curl exit code {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}
