namespace Metering.IntegrationTests;

/// <summary>
/// Starts one <see cref="TestServers"/> (PostgreSQL and Redis) for every test in the Metering.IntegrationTests namespace
/// and below, and stops it after the last one.
/// </summary>
[SetUpFixture]
public sealed class Servers
{
    private static TestServers? _instance;

    /// <summary>The servers of this test run; available from the tests' set-up on.</summary>
    public static TestServers Instance => _instance
        ?? throw new InvalidOperationException("The test servers are not running: Servers.Instance is only available to tests in the Metering.IntegrationTests namespace (or below), after the [SetUpFixture] has run.");

    [OneTimeSetUp]
    public async Task StartServersAsync()
    {
        _instance = await TestServers.StartAsync().ConfigureAwait(false);
        await TestContext.Progress.WriteLineAsync($"Integration test servers: {_instance.Source}").ConfigureAwait(false);
    }

    [OneTimeTearDown]
    public async Task StopServersAsync()
    {
        var servers = Interlocked.Exchange(ref _instance, null);
        if (servers is not null)
        {
            await servers.DisposeAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>One ledger database for the run: tests isolate themselves by unique subject ids.</summary>
internal static class SharedLedger
{
    private static readonly Lazy<Task<string>> Database = new(() => Servers.Instance.CreateDatabaseAsync("metering"));

    public static Task<string> ConnectionStringAsync() => Database.Value;
}
