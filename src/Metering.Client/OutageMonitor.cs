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
    private readonly Lock _gate = new();
    private DateTimeOffset? _since;
    private long _degradedChecks;

    /// <summary>True while calls fail.</summary>
    public bool InOutage
    {
        get
        {
            lock (_gate)
            {
                return _since is not null;
            }
        }
    }

    /// <summary>A call failed because Metering could not answer.</summary>
    public void Failed(RpcException exception, bool answeredByFailPolicy)
    {
        bool first;
        lock (_gate)
        {
            first = _since is null;
            _since ??= clock.GetUtcNow();
            if (answeredByFailPolicy)
            {
                _degradedChecks++;
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
        lock (_gate)
        {
            if (_since is not { } value)
            {
                return;
            }

            started = value;
            checks = _degradedChecks;
            _since = null;
            _degradedChecks = 0;
        }

        LogOutageEnded(options.Value.Address, clock.GetUtcNow() - started, checks);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Metering at {Address} is unreachable ({Status}: {Detail}); checks answer by their fail policy and tracking waits in the spool until it answers again")]
    private partial void LogOutageStarted(Uri address, StatusCode status, string detail);

    [LoggerMessage(Level = LogLevel.Information, Message = "Metering at {Address} answers again after {Duration}; {Checks} checks were answered by their fail policy meanwhile")]
    private partial void LogOutageEnded(Uri address, TimeSpan duration, long checks);
}
