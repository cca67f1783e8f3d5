using Metering.Storage.Redis;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// The Redis budget of the hosts that tests start. Most tests are about something else than a slow Redis, and a test
/// machine shared by several builds can stall a healthy Redis call past the shipped 150 ms, so they get a generous one;
/// the tests of Redis failures ask for <see cref="Shipped"/>, what a deployment gets.
/// </summary>
public static class TestBudgets
{
    public const string RedisOperationTimeout = ServerProcess.RedisOperationTimeout;

    /// <summary>The shipped Redis settings (RedisOptions' defaults, also in appsettings.json), as host settings.</summary>
    public static IReadOnlyDictionary<string, string?> Shipped(string redisConnectionString) => new Dictionary<string, string?>
    {
        ["ConnectionStrings:Redis"] = redisConnectionString,
        ["Redis:OperationTimeout"] = new RedisOptions().OperationTimeout.ToString("c", System.Globalization.CultureInfo.InvariantCulture),
    };
}
