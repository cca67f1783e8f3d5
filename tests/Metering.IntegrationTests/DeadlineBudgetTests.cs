using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;
using static Metering.IntegrationTests.RedisFailureTests;

namespace Metering.IntegrationTests;

/// <summary>
/// Store budgets stay inside the caller's deadline: a 300 ms deadline against a hanging Redis or a locked table gets an
/// answer in time, and the service does not go on waiting after it.
/// </summary>
[NonParallelizable]
public sealed class DeadlineBudgetTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMilliseconds(300);

    [Test]
    public async Task HangingRedis_TrackUsageWithA300msDeadline_IsRecordedWithinIt()
    {
        await using var redis = await LocalServer.StartRedisAsync();
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, settings: TestBudgets.Shipped(redis.ConnectionString));
        var subject = $"starter-{Guid.NewGuid():N}";
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await TrackAsync(host, subject, "warm-up", deadline: null);
        await Task.Delay(TimeSpan.FromSeconds(1.1)); // a quiet instance

        var calls = new List<(Outcome Outcome, TimeSpan Elapsed)>();
        redis.Signal(Signals.Pause);
        try
        {
            for (var i = 0; i < 3; i++)
            {
                calls.Add(await TimedOutcomeAsync(() => TrackAsync(host, subject, $"hanging-{i}", Deadline)));
            }
        }
        finally
        {
            redis.Signal(Signals.Continue);
        }

        var acknowledgedInLedger = await LedgerProbe.EventCountAsync(host, subject);
        var retries = new List<Outcome>();
        for (var i = 0; i < calls.Count; i++)
        {
            retries.Add(await OutcomeAsync(() => TrackAsync(host, subject, $"hanging-{i}", deadline: null)));
        }

        var recorded = await LedgerProbe.EventCountAsync(host, subject);
        TestContext.Out.WriteLine(string.Join("; ", calls.Select(c => $"{c.Outcome.Code} after {c.Elapsed.TotalMilliseconds:0} ms")));
        Assert.Multiple(() =>
        {
            Assert.That(calls.Select(c => c.Outcome.Code), Is.All.AnyOf(StatusCode.OK, StatusCode.DeadlineExceeded, StatusCode.Unavailable));
            Assert.That(calls.Skip(1).Select(c => c.Outcome.Code), Is.All.EqualTo(StatusCode.OK), "once the breaker is open, Redis costs nothing");
            Assert.That(acknowledgedInLedger, Is.GreaterThanOrEqualTo(1 + calls.Count(c => c.Outcome.Code == StatusCode.OK)), "every acknowledged call is in the ledger");
            Assert.That(retries.Select(r => r.Code), Is.All.EqualTo(StatusCode.OK), "retries without a deadline, Redis back");
            Assert.That(recorded, Is.EqualTo(1 + calls.Count), "each key once, whether its first answer came in time or not");
        });
    }

    [Test]
    public async Task LockedTotals_TrackUsageWithA300msDeadline_AnswersInTime_AndStopsWaiting()
    {
        var database = await Servers.Instance.CreateDatabaseAsync("deadline_lock");
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests, database);
        var subject = $"starter-{Guid.NewGuid():N}";
        await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter" });
        await TrackAsync(host, subject, "before", deadline: null);

        await using var locker = new NpgsqlConnection(database);
        await locker.OpenAsync();
        var transaction = await locker.BeginTransactionAsync();
        await using (var command = new NpgsqlCommand("LOCK TABLE usage_totals IN ACCESS EXCLUSIVE MODE", locker, transaction))
        {
            await command.ExecuteNonQueryAsync();
        }

        (Outcome Outcome, TimeSpan Elapsed) tracked;
        long waitingAfter;
        try
        {
            tracked = await TimedOutcomeAsync(() => TrackAsync(host, subject, "during-lock", Deadline));
            await Task.Delay(500);
            await using var probe = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(database) { Pooling = false }.ConnectionString);
            await probe.OpenAsync();
            await using var waiting = new NpgsqlCommand("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query NOT LIKE '%FROM counter_outbox%'", probe);
            waitingAfter = (long)(await waiting.ExecuteScalarAsync())!;
        }
        finally
        {
            await transaction.RollbackAsync();
            await transaction.DisposeAsync();
        }

        await Task.Delay(200);
        var recorded = await LedgerProbe.EventCountAsync(host, subject);
        TestContext.Out.WriteLine($"{tracked.Outcome.Code} after {tracked.Elapsed.TotalMilliseconds:0} ms; {waitingAfter} statements still waiting for the lock 500 ms later");
        Assert.Multiple(() =>
        {
            Assert.That(tracked.Outcome.Code, Is.AnyOf(StatusCode.DeadlineExceeded, StatusCode.Unavailable), tracked.Outcome.Detail);
            Assert.That(tracked.Elapsed, Is.LessThan(TimeSpan.FromMilliseconds(900)), "ended by the 300 ms deadline, not by lock_timeout (1 s)");
            Assert.That(waitingAfter, Is.Zero, "the service stopped waiting when the caller's deadline passed (the outbox drain, which has no caller, waits out its lock_timeout)");
            Assert.That(recorded, Is.EqualTo(1), "the call that was not acknowledged left nothing behind");
        });
    }

    private static Task<TrackUsageResponse> TrackAsync(MeteringHost host, string subject, string key, TimeSpan? deadline) =>
        host.Metering.TrackUsageAsync(
            new TrackUsageRequest { SubjectId = subject, IdempotencyKey = key, Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } } },
            deadline: deadline is { } d ? DateTime.UtcNow + d : null).ResponseAsync;
}
