using System.Security.Cryptography;
using System.Text;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using Metering.Testing;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using StackExchange.Redis;

namespace Metering.Benchmarks;

/// <summary>
/// The service's use cases on real PostgreSQL and Redis, each beside the round trip it cannot beat, measured in the
/// same run: the Ratio column says how many bare round trips a call costs, whatever the machine.
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class HotPathBenchmarks
{
    private static readonly UsageRequest[] Session = [new("minutes_per_month", 30), new("interviews_per_day", 1)];
    private static readonly Dictionary<string, string> NoAttributes = [];

    private TestServers _servers = null!;
    private Host _host = null!;
    private UsageMeter _meter = null!;
    private IDatabase _redis = null!;
    private NpgsqlDataSource _postgres = null!;
    private string _subject = null!;
    private long _events;

    [GlobalSetup]
    public async Task SetUpAsync()
    {
        _servers = await TestServers.StartAsync();
        var ledger = await _servers.CreateDatabaseAsync("bench");
        _host = new Host(ledger, _servers.RedisConnectionString);
        _meter = _host.Services.GetRequiredService<UsageMeter>();
        _redis = _host.Services.GetRequiredService<IConnectionMultiplexer>().GetDatabase();
        _postgres = NpgsqlDataSource.Create(ledger);

        // Premium is unlimited, so every call does the full work and none is refused along the way.
        _subject = $"bench-{Guid.NewGuid():N}";
        await _host.Services.GetRequiredService<SubscriptionDirectory>()
            .SetAsync(new SetSubscriptionCommand(_subject, "premium", 1, "Europe/Berlin"), CancellationToken.None);
        await CheckLimit();
    }

    [GlobalCleanup]
    public async Task CleanUpAsync()
    {
        await _postgres.DisposeAsync();
        await _host.DisposeAsync();
        await _servers.DisposeAsync();
    }

    [Benchmark(Baseline = true, Description = "Redis PING")]
    [BenchmarkCategory("hot path (Redis)")]
    public Task<TimeSpan> RedisPing() => _redis.PingAsync();

    [Benchmark(Description = "CheckLimit")]
    [BenchmarkCategory("hot path (Redis)")]
    public Task<CheckLimitResult> CheckLimit() =>
        _meter.CheckLimitAsync(new CheckLimitCommand(_subject, Session, Reserve: false, ReservationTtl: null), CancellationToken.None);

    [Benchmark(Description = "CheckLimit reserve + ReleaseReservation")]
    [BenchmarkCategory("hot path (Redis)")]
    public async Task<bool> ReserveAndRelease()
    {
        var check = await _meter.CheckLimitAsync(new CheckLimitCommand(_subject, Session, Reserve: true, ReservationTtl: null), CancellationToken.None);
        return await _meter.ReleaseReservationAsync(_subject, check.ReservationId!, CancellationToken.None);
    }

    [Benchmark(Description = "GetRemaining (4 usage types)")]
    [BenchmarkCategory("hot path (Redis)")]
    public Task<RemainingResult> GetRemaining() => _meter.GetRemainingAsync(_subject, [], CancellationToken.None);

    [Benchmark(Baseline = true, Description = "PostgreSQL SELECT 1")]
    [BenchmarkCategory("write path (PostgreSQL)")]
    public async Task<object?> PostgresSelect1()
    {
        await using var command = _postgres.CreateCommand("SELECT 1");
        return await command.ExecuteScalarAsync();
    }

    [Benchmark(Description = "TrackUsage (2 usage types)")]
    [BenchmarkCategory("write path (PostgreSQL)")]
    public Task<TrackUsageResult> TrackUsage() =>
        _meter.TrackUsageAsync(
            new TrackUsageCommand(_subject, $"event-{Interlocked.Increment(ref _events)}", Session, null, null, false, NoAttributes, RecordedBy: "bench"),
            CancellationToken.None);

    /// <summary>The service in process, with its real stores and clock; the first use of Services starts it.</summary>
    internal sealed class Host(string postgres, string redis) : WebApplicationFactory<Program>
    {
        protected override void ConfigureWebHost(IWebHostBuilder builder)
        {
            builder.UseEnvironment("Benchmark");
            builder.UseSetting("Metering:MigrateOnStart", "true");
            builder.UseSetting("ConnectionStrings:Postgres", postgres);
            builder.UseSetting("ConnectionStrings:Redis", redis);
            builder.UseSetting("Logging:LogLevel:Default", "Warning");

            // The use cases are called in process, past authentication; a caller is configured only because the
            // service refuses to start without one outside Development.
            var unusedKey = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Guid.NewGuid().ToString())));
            builder.UseSetting("Auth:ApiKeys:bench:Hash", unusedKey);
            builder.UseSetting("Auth:ApiKeys:bench:Scopes", "metering.read");
        }
    }
}
