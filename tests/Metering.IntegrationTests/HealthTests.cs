using Grpc.Core;
using Grpc.Health.V1;
using Metering.IntegrationTests.Infrastructure;
using Npgsql;

namespace Metering.IntegrationTests;

/// <summary>
/// grpc.health.v1 by service name: liveness says the process answers; readiness (also "", and each API's name) says it
/// can serve: it fails without PostgreSQL, stays SERVING without Redis (degraded), and never needs a key.
/// </summary>
public sealed class HealthTests
{
    private static readonly string[] ReadinessNames = ["", "readiness", "metering.v1.MeteringService", "metering.v1.AdminService"];

    [Test]
    public async Task EveryServiceName_IsServing_WithoutAKey()
    {
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests);
        var health = new Health.HealthClient(host.ChannelFor(apiKey: null));

        foreach (var name in ReadinessNames.Append("liveness"))
        {
            var response = await health.CheckAsync(new HealthCheckRequest { Service = name });
            Assert.That(response.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.Serving), $"service '{name}'");
        }

        var unknown = Assert.ThrowsAsync<RpcException>(async () => await health.CheckAsync(new HealthCheckRequest { Service = "metering.v1.NoSuchService" }))!;
        Assert.That(unknown.StatusCode, Is.EqualTo(StatusCode.NotFound));
    }

    [Test]
    public async Task RedisUnreachable_ReadinessStaysServing()
    {
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, settings: new Dictionary<string, string?>
        {
            ["ConnectionStrings:Redis"] = $"127.0.0.1:{TcpPorts.GetFreeLoopbackPort()},connectTimeout=200",
        });
        var health = new Health.HealthClient(host.ChannelFor(apiKey: null));

        foreach (var name in ReadinessNames.Append("liveness"))
        {
            var response = await health.CheckAsync(new HealthCheckRequest { Service = name });
            Assert.That(response.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.Serving), $"service '{name}' with Redis down (degraded)");
        }
    }

    [Test]
    public async Task PostgresUnreachable_ReadinessIsNotServing_LivenessIsServing()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("health_pg_down");
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, database);
        var health = new Health.HealthClient(host.ChannelFor(apiKey: null));
        Assert.That((await health.CheckAsync(new HealthCheckRequest { Service = "readiness" })).Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.Serving));

        await SetAcceptingConnectionsAsync(database, false);
        try
        {
            foreach (var name in ReadinessNames)
            {
                var response = await health.CheckAsync(new HealthCheckRequest { Service = name });
                Assert.That(response.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.NotServing), $"service '{name}' with PostgreSQL down");
            }

            var liveness = await health.CheckAsync(new HealthCheckRequest { Service = "liveness" });
            Assert.That(liveness.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.Serving), "liveness does not depend on PostgreSQL");
        }
        finally
        {
            await SetAcceptingConnectionsAsync(database, true);
        }

        Assert.That((await health.CheckAsync(new HealthCheckRequest { Service = "readiness" })).Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.Serving), "ready again");
    }

    /// <summary>Makes the database refuse (or accept again) new connections and ends the open ones.</summary>
    internal static async Task SetAcceptingConnectionsAsync(string database, bool accept)
    {
        var name = new NpgsqlConnectionStringBuilder(database).Database!;
        var maintenance = new NpgsqlConnectionStringBuilder(database) { Database = "postgres", Pooling = false }.ConnectionString;
        await using var connection = new NpgsqlConnection(maintenance);
        await connection.OpenAsync();
        await using (var alter = new NpgsqlCommand($"ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS {(accept ? "true" : "false")}", connection))
        {
            await alter.ExecuteNonQueryAsync();
        }

        if (!accept)
        {
            await using var terminate = new NpgsqlCommand("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = @name AND pid <> pg_backend_pid()", connection);
            terminate.Parameters.AddWithValue("name", name);
            await terminate.ExecuteNonQueryAsync();
        }

        NpgsqlConnection.ClearAllPools();
    }
}
