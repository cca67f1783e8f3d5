using System.Net;
using System.Net.Sockets;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>Loopback TCP port helpers shared by <see cref="TestServers"/> and <see cref="ServerProcess"/>.</summary>
public static class TcpPorts
{
    private static readonly Lock Gate = new();
    private static readonly HashSet<int> HandedOut = [];

    /// <summary>
    /// Returns a TCP port on 127.0.0.1 that is free right now (the OS picks it) and that this process has not handed out
    /// before, so two servers started one after the other never get the same port. Another process can still take it
    /// before it is used; callers that start servers retry with a new port when the bind fails.
    /// </summary>
    public static int GetFreeLoopbackPort()
    {
        lock (Gate)
        {
            for (var attempt = 0; attempt < 100; attempt++)
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

            throw new InvalidOperationException("Could not find a free TCP port on 127.0.0.1.");
        }
    }

    /// <summary>True when a TCP connection to <paramref name="host"/>:<paramref name="port"/> succeeds within <paramref name="timeout"/>.</summary>
    public static async Task<bool> CanConnectAsync(string host, int port, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(timeout);
        using var client = new TcpClient();
        try
        {
            await client.ConnectAsync(host, port, timeoutSource.Token).ConfigureAwait(false);
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
