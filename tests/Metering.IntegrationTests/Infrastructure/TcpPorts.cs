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

/// <summary>Starts a server on a free loopback port, and on another one when the chosen port was taken meanwhile.</summary>
internal static class FreePortStart
{
    private const int Attempts = 3;

    /// <summary>
    /// Calls <paramref name="start"/> with a free port and waits until the server is ready; a server that finds its port
    /// taken (<see cref="PortInUseException"/>) is stopped and started again on another, up to three times. A server
    /// that fails otherwise is stopped before the failure is passed on.
    /// </summary>
    public static async Task<T> StartAsync<T>(Func<int, T> start, Func<T, Task> waitUntilReady, Func<T, Task> stop)
    {
        for (var attempt = 1; ; attempt++)
        {
            var server = start(TcpPorts.GetFreeLoopbackPort());
            try
            {
                await waitUntilReady(server).ConfigureAwait(false);
                return server;
            }
            catch (PortInUseException) when (attempt < Attempts)
            {
                await stop(server).ConfigureAwait(false);
            }
            catch
            {
                await stop(server).ConfigureAwait(false);
                throw;
            }
        }
    }
}
