using Metering.Testing;

namespace Metering.Client.Tests;

/// <summary>One PostgreSQL and Redis for the run, and one ledger database that every server process of it uses.</summary>
[SetUpFixture]
public sealed class ClientTestServers
{
    private static TestServers? _servers;
    private static string? _ledger;

    public static TestServers Instance => _servers ?? throw new InvalidOperationException("The test servers are not running.");

    public static string Ledger => _ledger ?? throw new InvalidOperationException("The test servers are not running.");

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _servers = await TestServers.StartAsync();
        _ledger = await _servers.CreateDatabaseAsync("client");
        await TestContext.Progress.WriteLineAsync($"Client test servers: {_servers.Source}");
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _servers, null) is { } running)
        {
            await running.DisposeAsync();
        }
    }
}
