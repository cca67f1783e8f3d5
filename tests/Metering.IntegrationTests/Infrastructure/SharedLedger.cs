namespace Metering.IntegrationTests.Infrastructure;

/// <summary>One ledger database for the run: tests isolate themselves by unique subject ids.</summary>
internal static class SharedLedger
{
    private static readonly Lazy<Task<string>> Database = new(() => Servers.Instance.CreateDatabaseAsync("metering"));

    public static Task<string> ConnectionStringAsync() => Database.Value;
}
