using System.Text.Json;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Metering.Server.Hosting;
using Microsoft.Extensions.Configuration;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>The real server binary as a new user starts it: from any folder, on a new database, with mistakes in its settings.</summary>
public sealed class StartupTests
{
    /// <summary>Every migration of the ledger: a new database gets them all.</summary>
    private static readonly int Migrations = typeof(Metering.Storage.Postgres.MeteringDbContext).Assembly.GetTypes()
        .Count(t => t.IsDefined(typeof(Microsoft.EntityFrameworkCore.Migrations.MigrationAttribute), inherit: false));

    [Test]
    public async Task FromAnotherFolder_OnANewDatabase_SeedsServesHttp2AndLogsTheMigrationsOnce()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("startup_fresh");
        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), Storage(database), workingDirectory: Path.GetTempPath());
        using var channel = GrpcChannel.ForAddress(server.Address, new GrpcChannelOptions { HttpHandler = new BearerHandler("mtr_dev_local_key_not_secret", new SocketsHttpHandler()) });

        var check = await new MeteringService.MeteringServiceClient(channel)
            .CheckLimitAsync(new CheckLimitRequest { SubjectId = $"startup-{Guid.NewGuid():N}", Usage = { new UsageAmount { UsageType = Minutes, Amount = 1 } } });
        await Task.Delay(300); // let the console logger flush

        Assert.Multiple(() =>
        {
            Assert.That(check.Allowed, Is.True, "the seed catalog next to the binary was found and applied");
            Assert.That(server.Output, Does.Not.Contain("fail:"), server.Output);
            Assert.That(server.Output, Does.Not.Contain("__EFMigrationsHistory"));
            Assert.That(Lines(server.Output, $"Applied {Migrations} migration(s): "), Has.Count.EqualTo(1), server.Output);
            Assert.That(server.Output, Does.Contain("Content root path: " + Path.GetDirectoryName(SmokeTests.ServerDll())));
        });
    }

    [Test]
    public async Task MissingConnectionString_IsOneLineAndExitCode2()
    {
        var result = await ServerProcess.RunToEndAsync(SmokeTests.ServerDll(), [], new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = await SharedLedger.ConnectionStringAsync(),
        }, Path.GetTempPath(), TimeSpan.FromSeconds(60));

        Assert.Multiple(() =>
        {
            Assert.That(result.ExitCode, Is.EqualTo(2), result.Output);
            Assert.That(result.Output.Trim(), Is.EqualTo("Metering cannot start: ConnectionStrings:Redis is not set (environment: ConnectionStrings__Redis)."));
        });
    }

    [Test]
    public async Task BadSetting_IsOneLineAndExitCode2()
    {
        var environment = Storage(await SharedLedger.ConnectionStringAsync());
        environment["Metering__DrainTimeout"] = "soon";
        var result = await ServerProcess.RunToEndAsync(SmokeTests.ServerDll(), [], environment, Path.GetTempPath(), TimeSpan.FromSeconds(60));

        Assert.Multiple(() =>
        {
            Assert.That(result.ExitCode, Is.EqualTo(2), result.Output);
            Assert.That(result.Output.Trim().Split('\n'), Has.Length.EqualTo(1), result.Output);
            Assert.That(result.Output, Does.StartWith("Metering cannot start: ").And.Contain("Metering:DrainTimeout"));
        });
    }

    [Test]
    public async Task MigrateOnStartOff_OnANewDatabase_RefusesToStart_ThenTheMigrateCommandMakesItStart()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("startup_no_migrate");
        var environment = Storage(database);
        environment["Metering__MigrateOnStart"] = "false";

        var refused = await ServerProcess.RunToEndAsync(SmokeTests.ServerDll(), [], environment, Path.GetTempPath(), TimeSpan.FromSeconds(60));
        var migrate = await ServerProcess.RunToEndAsync(SmokeTests.ServerDll(), ["migrate"], environment, Path.GetTempPath(), TimeSpan.FromSeconds(60));
        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), environment);
        var health = new Health.HealthClient(GrpcChannel.ForAddress(server.Address));
        var readiness = await health.CheckAsync(new HealthCheckRequest { Service = "readiness" });

        Assert.Multiple(() =>
        {
            Assert.That(refused.ExitCode, Is.EqualTo(2), refused.Output);
            Assert.That(refused.Output, Does.Contain("Metering cannot start: the database schema is not current").And.Contain("run 'Metering.Server migrate' first"));
            Assert.That(migrate.ExitCode, Is.Zero, migrate.Output);
            Assert.That(migrate.Output, Does.Contain($"Applied {Migrations} migration(s)").And.Not.Contain("fail:"));
            Assert.That(readiness.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.Serving), server.Output);
            Assert.That(server.Output, Does.Not.Contain("Applied"), "the server itself migrated nothing");
        });
    }

    [Test]
    public async Task EmptyCatalog_IsNotReady_WithAClearLogLine()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("startup_empty_catalog");
        var migrate = await ServerProcess.RunToEndAsync(SmokeTests.ServerDll(), ["migrate"], Storage(database), Path.GetTempPath(), TimeSpan.FromSeconds(60));
        Assert.That(migrate.ExitCode, Is.Zero, migrate.Output);
        await using (var connection = new NpgsqlConnection(database))
        {
            // The catalog emptied through the database; a catalog changed once is never seeded again.
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand("DELETE FROM plan_limits; DELETE FROM plans; DELETE FROM usage_types; UPDATE catalog_state SET version = version + 1;", connection);
            await command.ExecuteNonQueryAsync();
        }

        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), Storage(database));
        var health = new Health.HealthClient(GrpcChannel.ForAddress(server.Address));
        var readiness = await health.CheckAsync(new HealthCheckRequest { Service = "readiness" });
        var liveness = await health.CheckAsync(new HealthCheckRequest { Service = "liveness" });

        Assert.Multiple(() =>
        {
            Assert.That(readiness.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.NotServing));
            Assert.That(liveness.Status, Is.EqualTo(HealthCheckResponse.Types.ServingStatus.Serving));
            Assert.That(server.Output, Does.Contain("The catalog has no usage types or no plans"));
        });
    }

    [Test]
    public async Task UnknownKey_IsLoggedOncePerCall_AndJsonLogsAreAnOption()
    {
        var environment = Storage(await SharedLedger.ConnectionStringAsync());
        environment["Logging__Console__FormatterName"] = "json";
        await using var server = await ServerProcess.StartAsync(SmokeTests.ServerDll(), environment);
        using var channel = GrpcChannel.ForAddress(server.Address, new GrpcChannelOptions { HttpHandler = new BearerHandler("mtr_not_a_key", new SocketsHttpHandler()) });
        for (var i = 0; i < 2; i++)
        {
            Assert.ThrowsAsync<Grpc.Core.RpcException>(async () =>
                await new MeteringService.MeteringServiceClient(channel).GetRemainingAsync(new GetRemainingRequest { SubjectId = "nobody" }));
        }

        await Task.Delay(300);
        var lines = server.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var json = lines.Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement).ToList();

        Assert.Multiple(() =>
        {
            Assert.That(json, Has.Count.GreaterThan(3), server.Output);
            Assert.That(json.All(e => e.TryGetProperty("LogLevel", out _) && e.TryGetProperty("Message", out _)), Is.True, "every log line is a JSON object");
            Assert.That(lines.Count(l => l.Contains("unknown API key", StringComparison.Ordinal)), Is.EqualTo(2), "one line per refused call");
            Assert.That(server.Output, Does.Not.Contain("mtr_not_a_key"));
        });
    }

    [TestCase("Development", null, "http://127.0.0.1:50051;http://127.0.0.1:9464")]
    [TestCase("Production", null, "http://0.0.0.0:50051;http://0.0.0.0:9464")]
    [TestCase("Production", "http://0.0.0.0:6000", "http://0.0.0.0:6000;http://0.0.0.0:9464")]
    public void Addresses_DefaultTo50051_AndKeepAGivenUrl(string environment, string? urls, string expected)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["urls"] = urls }).Build();

        Assert.That(ServerHosting.Addresses(configuration, environment == "Development"), Is.EqualTo(expected));
    }

    [Test]
    public void Addresses_MetricsPortZero_ListensOnGrpcOnly()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["Metrics:Port"] = "0" }).Build();

        Assert.That(ServerHosting.Addresses(configuration, development: false), Is.EqualTo("http://0.0.0.0:50051"));
    }

    private static Dictionary<string, string> Storage(string postgres) => new()
    {
        ["ConnectionStrings__Postgres"] = postgres,
        ["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString,
    };

    private static List<string> Lines(string output, string containing) =>
        [.. output.Split('\n').Where(l => l.Contains(containing, StringComparison.Ordinal))];
}
