using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Metering.Client;

/// <summary>
/// Whether Metering answers, as every call of this client sees it: the first failure of an outage is logged as a
/// warning, the following ones are not, and the first success after it logs how long it lasted and what was degraded.
/// </summary>
internal sealed partial class OutageMonitor(IOptions<MeteringClientOptions> options, TimeProvider clock, ILogger<OutageMonitor> logger)
{
    private readonly Lock gate = new();
    private DateTimeOffset? since;
    private long degradedChecks;

    /// <summary>True while calls fail.</summary>
    public bool InOutage
    {
        get
        {
            lock (gate)
            {
                return since is not null;
            }
        }
    }

    /// <summary>A call failed because Metering could not answer.</summary>
    public void Failed(RpcException exception, bool answeredByFailPolicy)
    {
        bool first;
        lock (gate)
        {
            first = since is null;
            since ??= clock.GetUtcNow();
            if (answeredByFailPolicy)
            {
                degradedChecks++;
            }
        }

        if (first)
        {
            LogOutageStarted(options.Value.Address, exception.StatusCode, exception.Status.Detail);
        }
    }

    /// <summary>A call got Metering's answer.</summary>
    public void Succeeded()
    {
        DateTimeOffset started;
        long checks;
        lock (gate)
        {
            if (since is not { } value)
            {
                return;
            }

            started = value;
            checks = degradedChecks;
            since = null;
            degradedChecks = 0;
        }

        LogOutageEnded(options.Value.Address, clock.GetUtcNow() - started, checks);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Metering at {Address} is unreachable ({Status}: {Detail}); checks answer by their fail policy and tracking waits in the spool until it answers again")]
    private partial void LogOutageStarted(Uri address, StatusCode status, string detail);

    [LoggerMessage(Level = LogLevel.Information, Message = "Metering at {Address} answers again after {Duration}; {Checks} checks were answered by their fail policy meanwhile")]
    private partial void LogOutageEnded(Uri address, TimeSpan duration, long checks);
}
