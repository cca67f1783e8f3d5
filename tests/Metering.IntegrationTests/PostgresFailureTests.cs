using System.Diagnostics;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Metering.Server.Grpc;
using Metering.Storage.Postgres;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;
using static Metering.IntegrationTests.RedisFailureTests;

namespace Metering.IntegrationTests;

/// <summary>
/// What the service answers when PostgreSQL fails: stopped and restarted, locked, out of connections. Never UNKNOWN;
/// UNAVAILABLE with RetryInfo while it cannot serve, success once it can, and the connections an instance takes bounded.
/// </summary>
[NonParallelizable]
public sealed class PostgresFailureTests
{
    [Test]
    public async Task StoppedAndRestarted_CallsAreUnavailableWhileDown_LoggedOnceAndSummarised_AndSucceedAfter()
    {
        await using var postgres = await LocalServer.StartPostgresAsync();
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, await CreateDatabaseAsync(postgres.ConnectionString));
        var subject = $"starter-{Guid.NewGuid():N}";
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await TrackAsync(host, subject, "before");

        await postgres.StopAsync(Signals.Interrupt); // a fast shutdown, as pg_ctl stop -m fast
        var mark = host.Log.Mark;
        var first = await OutcomeAsync(() => TrackAsync(host, subject, "while-down"));
        var afterFirst = PerCall(host.Log.Since(mark));
        var more = new List<Outcome>();
        for (var i = 0; i < 3; i++)
        {
            more.Add(await OutcomeAsync(() => TrackAsync(host, subject, $"while-down-{i}")));
        }

        var afterMore = PerCall(host.Log.Since(mark));
        await Task.Delay(FailureLog.Interval + TimeSpan.FromMilliseconds(200));
        var summarised = await OutcomeAsync(() => TrackAsync(host, subject, "still-down"));
        var afterSummary = PerCall(host.Log.Since(mark));

        await postgres.StartAgainAsync();
        var retried = await OutcomeAsync(() => TrackAsync(host, subject, "while-down"));
        var remaining = await host.Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = subject, UsageTypes = { Minutes } });

        TestContext.Out.WriteLine(string.Join("\n", afterSummary));
        Assert.Multiple(() =>
        {
            Assert.That(first.Code, Is.EqualTo(StatusCode.Unavailable), first.Detail);
            Assert.That(first.RetryDelay, Is.EqualTo(TimeSpan.FromSeconds(1)), "google.rpc.RetryInfo");
            Assert.That(more.Select(m => m.Code), Is.All.EqualTo(StatusCode.Unavailable));
            Assert.That(summarised.Code, Is.EqualTo(StatusCode.Unavailable));
            Assert.That(afterFirst, Has.Count.EqualTo(1), "one line for a failed call:\n" + string.Join("\n", afterFirst));
            Assert.That(afterMore, Has.Count.EqualTo(1), "no line per call during an outage:\n" + string.Join("\n", afterMore));
            Assert.That(afterSummary, Has.Count.EqualTo(2), "then one summary line:\n" + string.Join("\n", afterSummary));
            Assert.That(afterSummary.LastOrDefault()?.Message, Does.Contain("3 more calls failed the same way"));
            Assert.That(retried.Code, Is.EqualTo(StatusCode.OK), retried.Detail);
            Assert.That(remaining.Limits[0].Used, Is.EqualTo(10), "the call before and the retried one, each once");
        });
    }

    [Test]
    public async Task AccessExclusiveLockOnTheTotals_TrackUsageIsUnavailableQuickly_InsteadOfWaiting()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("locked_totals");
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, database);
        var subject = $"starter-{Guid.NewGuid():N}";
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await TrackAsync(host, subject, "before");

        await using var locker = new NpgsqlConnection(database);
        await locker.OpenAsync();
        await using var transaction = await locker.BeginTransactionAsync();
        await using (var command = new NpgsqlCommand("LOCK TABLE usage_totals IN ACCESS EXCLUSIVE MODE", locker, transaction))
        {
            await command.ExecuteNonQueryAsync();
        }

        var release = Task.Delay(TimeSpan.FromSeconds(10)).ContinueWith(_ => transaction.RollbackAsync(), TaskScheduler.Default).Unwrap();
        var tracked = await TimedOutcomeAsync(() => TrackAsync(host, subject, "during-lock"));
        await release;

        TestContext.Out.WriteLine($"TrackUsage behind the lock answered {tracked.Outcome.Code} after {tracked.Elapsed.TotalMilliseconds:0} ms");
        Assert.Multiple(() =>
        {
            Assert.That(tracked.Outcome.Code, Is.EqualTo(StatusCode.Unavailable), tracked.Outcome.Detail);
            Assert.That(tracked.Outcome.RetryDelay, Is.Not.Null);
            Assert.That(tracked.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "lock_timeout (1 s, one retry) ends the wait, not the lock's holder (10 s)");
        });
    }

    [Test]
    public async Task ConnectionStringDefaults_ApplyUnlessTheStringSetsItsOwn()
    {
        var defaults = new NpgsqlConnectionStringBuilder(PostgresStorageServiceCollectionExtensions.WithLedgerDefaults("Host=127.0.0.1;Database=m"));
        var own = new NpgsqlConnectionStringBuilder(PostgresStorageServiceCollectionExtensions.WithLedgerDefaults(
            "Host=127.0.0.1;Database=m;Maximum Pool Size=50;timeout=7;CommandTimeout=9;Max Auto Prepare=0;Options=-c lock_timeout=3s"));

        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests);
        await using var db = await host.Services.GetRequiredService<IDbContextFactory<MeteringDbContext>>().CreateDbContextAsync();
        var connection = (NpgsqlConnection)db.Database.GetDbConnection();
        await connection.OpenAsync();
        var statementTimeout = await ShowAsync(connection, "statement_timeout");
        var lockTimeout = await ShowAsync(connection, "lock_timeout");

        Assert.Multiple(() =>
        {
            Assert.That(defaults.MaxPoolSize, Is.EqualTo(16));
            Assert.That(defaults.Timeout, Is.EqualTo(5));
            Assert.That(defaults.CommandTimeout, Is.EqualTo(5));
            Assert.That(defaults.MaxAutoPrepare, Is.EqualTo(32));
            Assert.That(defaults.Options, Is.EqualTo("-c statement_timeout=3s -c lock_timeout=1s"));
            Assert.That(own.MaxPoolSize, Is.EqualTo(50));
            Assert.That(own.Timeout, Is.EqualTo(7));
            Assert.That(own.CommandTimeout, Is.EqualTo(9));
            Assert.That(own.MaxAutoPrepare, Is.Zero);
            Assert.That(own.Options, Is.EqualTo("-c lock_timeout=3s -c statement_timeout=3s"));
            Assert.That(new NpgsqlConnectionStringBuilder(connection.ConnectionString).MaxPoolSize, Is.EqualTo(16), "the host's ledger connections");
            Assert.That((statementTimeout, lockTimeout), Is.EqualTo(("3s", "1s")), "as the server sees the host's session");
        });
    }

    [Test]
    public async Task TwoInstancesAt64ConcurrentCallsEach_AgainstMaxConnections40_AllSucceed()
    {
        await using var postgres = await LocalServer.StartPostgresAsync(default, "max_connections=40");
        var database = await CreateDatabaseAsync(postgres.ConnectionString);

        // Two instances: Npgsql pools per connection string and process, so each host names itself to get a pool of its own.
        await using var first = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, database + ";Application Name=instance-1");
        await using var second = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, database + ";Application Name=instance-2");
        var peak = 0L;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            await using var probe = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { Pooling = false }.ConnectionString);
            await probe.OpenAsync();
            while (!sampling.IsCancellationRequested)
            {
                await using var count = new NpgsqlCommand("SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend'", probe);
                peak = Math.Max(peak, (long)(await count.ExecuteScalarAsync())!);
                await Task.Delay(10);
            }
        });

        var watch = Stopwatch.StartNew();
        var calls = new[] { first, second }
            .SelectMany(host => Enumerable.Range(0, 64).Select(i => OutcomeAsync(() => TrackAsync(host, $"pool-{Guid.NewGuid():N}", "k"))))
            .ToList();
        var outcomes = await Task.WhenAll(calls);
        var elapsed = watch.Elapsed;
        await sampling.CancelAsync();
        await sampler;

        var failures = outcomes.Where(o => o.Code != StatusCode.OK).ToList();
        TestContext.Out.WriteLine($"128 calls in {elapsed.TotalMilliseconds:0} ms, at most {peak} client connections (the sampler's own included)");
        Assert.Multiple(() =>
        {
            Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(5)));
            Assert.That(peak, Is.LessThanOrEqualTo(2 * 16 + 1), "two pools of 16, and the sampler");
        });
    }

    /// <summary>The lines written for calls: without the health checks' own, which run on a timer.</summary>
    private static List<LogLine> PerCall(IEnumerable<LogLine> lines) =>
        [.. lines.Where(l => !l.Category.StartsWith("Microsoft.Extensions.Diagnostics.HealthChecks", StringComparison.Ordinal))];

    private static async Task<string> CreateDatabaseAsync(string server)
    {
        var name = $"metering_{Guid.NewGuid():N}";
        await using (var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(server) { Pooling = false }.ConnectionString))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"CREATE DATABASE \"{name}\" TEMPLATE template0", connection);
            await command.ExecuteNonQueryAsync();
        }

        return new NpgsqlConnectionStringBuilder(server) { Database = name }.ConnectionString;
    }

    private static async Task<string> ShowAsync(NpgsqlConnection connection, string setting)
    {
        await using var command = new NpgsqlCommand($"SHOW {setting}", connection);
        return (string)(await command.ExecuteScalarAsync())!;
    }

    private static Task<TrackUsageResponse> TrackAsync(MeteringHost host, string subject, string key) =>
        host.Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = key,
            Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } },
        }).ResponseAsync;
}
