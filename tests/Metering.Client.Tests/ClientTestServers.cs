using Metering.Testing;

namespace Metering.Client.Tests;

/// <summary>One PostgreSQL and Redis for the run, and one ledger database that every server process of it uses.</summary>
[SetUpFixture]
public sealed class ClientTestServers
{
    private static TestServers? servers;
    private static string? ledger;

    public static TestServers Instance => servers ?? throw new InvalidOperationException("The test servers are not running.");

    public static string Ledger => ledger ?? throw new InvalidOperationException("The test servers are not running.");

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        servers = await TestServers.StartAsync();
        ledger = await servers.CreateDatabaseAsync("client");
        await TestContext.Progress.WriteLineAsync($"Client test servers: {servers.Source}");
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref servers, null) is { } running)
        {
            await running.DisposeAsync();
        }
    }
}
