using Google.Protobuf;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// The real server with every log category at Debug: whatever callers send, its output never holds an API key (valid,
/// unknown or malformed) nor the database password, and it does name the caller.
/// </summary>
public sealed class LogSafetyTests
{
    private const string DatabasePassword = "Pw-9c41e7d2-never-log-me";

    [Test]
    public async Task Output_NeverHoldsKeysOrThePassword_AndNamesTheCaller()
    {
        var key = $"mtr_{Guid.NewGuid():N}{Guid.NewGuid():N}";
        var unknownKey = $"mtr_{Guid.NewGuid():N}";
        var (postgres, password) = await ConnectionStringWithPasswordAsync();
        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = postgres,
            ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
            ["Auth__ApiKeys__log-test__Hash"] = TestKeys.Hash(key),
            ["Auth__ApiKeys__log-test__Scopes"] = "metering.track metering.read metering.check",
            ["Logging__LogLevel__Default"] = "Debug",
            ["Logging__LogLevel__Microsoft.AspNetCore"] = "Debug",
            ["Logging__LogLevel__Microsoft.EntityFrameworkCore"] = "Debug",
            ["Logging__LogLevel__Npgsql"] = "Debug",
        });
        using var raw = new RawGrpc(server.Address);
        var subject = $"log-{Guid.NewGuid():N}";
        var track = RawGrpc.Frame(new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "k", Usage = { new UsageAmount { UsageType = Minutes, Amount = 3 } } }.ToByteArray());
        var bad = RawGrpc.Frame(new TrackUsageRequest { SubjectId = subject, IdempotencyKey = "k2", Usage = { new UsageAmount { UsageType = Minutes, Amount = -3 } } }.ToByteArray());
        var path = "/metering.v1.MeteringService/TrackUsage";

        var ok = await raw.CallAsync(path, track, Bearer(key));
        await raw.CallAsync(path, bad, Bearer(key));
        await raw.CallAsync(path, track, Bearer(unknownKey));
        await raw.CallAsync(path, track, new Dictionary<string, string> { ["authorization"] = $"Basic {key}" });
        await raw.CallAsync(path, track, new Dictionary<string, string> { ["authorization"] = key });
        await raw.CallAsync(path, [0, 0, 0, 0, 9, 1], Bearer(key));
        await raw.CallAsync("/metering.v1.AdminService/SetSubscription", track, Bearer(key));
        await Task.Delay(500); // let the console logger flush

        var output = server.Output;
        Assert.Multiple(() =>
        {
            Assert.That(ok.GrpcStatus, Is.Zero, ok.Message);
            Assert.That(output, Does.Not.Contain(key), "the valid key");
            Assert.That(output, Does.Not.Contain(key[4..20]), "a part of the valid key");
            Assert.That(output, Does.Not.Contain(TestKeys.Hash(key)), "the key's hash");
            Assert.That(output, Does.Not.Contain(unknownKey), "an unknown key");
            Assert.That(output, Does.Not.Contain(password), "the database password");
            Assert.That(output, Does.Contain("Caller:log-test"), "the caller's key name, in the logging scope");
        });
    }

    private static Dictionary<string, string> Bearer(string key) => new() { ["authorization"] = $"Bearer {key}" };

    /// <summary>
    /// The run's ledger connection string with a password that appears nowhere else: a distinctive one when the server
    /// accepts any (the local trust-authenticated cluster), else the real one.
    /// </summary>
    private static async Task<(string ConnectionString, string Password)> ConnectionStringWithPasswordAsync()
    {
        var builder = new NpgsqlConnectionStringBuilder(await SharedLedger.ConnectionStringAsync()) { Password = DatabasePassword };
        try
        {
            await using var probe = new NpgsqlConnection(builder.ConnectionString);
            await probe.OpenAsync();
            return (builder.ConnectionString, DatabasePassword);
        }
        catch (PostgresException)
        {
            var original = new NpgsqlConnectionStringBuilder(await SharedLedger.ConnectionStringAsync());
            return (original.ConnectionString, original.Password!);
        }
    }
}
