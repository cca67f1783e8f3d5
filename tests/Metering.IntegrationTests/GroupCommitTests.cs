using Grpc.Core;
using Metering.Api.V1;
using Metering.Core.Periods;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using Metering.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using NodaTime;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;
using static Metering.IntegrationTests.RedisFailureTests;
using ResetPeriod = Metering.Core.Periods.ResetPeriod;
using UsageEvent = Metering.Core.Usage.UsageEvent;

namespace Metering.IntegrationTests;

/// <summary>
/// Group commit: concurrent writes share one ledger transaction, and each is still decided as it would be alone. The
/// ledger runs one write transaction at a time here; the tests hold it busy behind a row lock of their own, queue the
/// writes under test, then let it go, so that those writes are one batch.
/// </summary>
[NonParallelizable]
public sealed class GroupCommitTests
{
    private static readonly Instant At = Instant.FromDateTimeOffset(ServiceTest.DefaultStartForTests);
    private static readonly BillingCalendar Utc = new("UTC", 1);
    private static readonly Dictionary<string, string> NoAttributes = [];

    private MeteringHost _host = null!;
    private string _database = null!;
    private IUsageLedger _ledger = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        // Lock waits are the tests' own doing here: long enough that the held batch never times out meanwhile.
        _database = await Servers.Instance.CreateDatabaseAsync("group_commit") + ";Options=-c lock_timeout=30s -c statement_timeout=60s";
        _host = await MeteringHost.StartAsync(
            ServiceTest.DefaultStartForTests,
            _database,
            new Dictionary<string, string?> { ["Ledger:WriteConnections"] = "1" });
        _ledger = _host.Services.GetRequiredService<IUsageLedger>();
    }

    [OneTimeTearDown]
    public async Task StopAsync() => await _host.DisposeAsync();

    [Test]
    public async Task OneBatch_AFingerprintMismatchAndAnEnforcedEventOverTheLimit_FailOnlyThemselves()
    {
        var subject = await SubscribeAsync("starter"); // 300 minutes
        Assert.That(await _ledger.RecordAsync(Event(subject, "taken", 10, fingerprint: "first"), CancellationToken.None), Is.TypeOf<RecordOutcome.Recorded>());

        var outcomes = await InOneBatchAsync(
            Event(subject, "plain-1", 20),
            Event(subject, "taken", 10, fingerprint: "other"),
            Event(subject, "enforced-over", 400, enforcedLimit: 300),
            Event(subject, "plain-2", 30),
            Event(subject, "enforced-fits", 40, enforcedLimit: 300));

        Assert.Multiple(async () =>
        {
            Assert.That(outcomes[0], Is.TypeOf<RecordOutcome.Recorded>());
            Assert.That(outcomes[1], Is.EqualTo(new RecordOutcome.AlreadyRecorded("first")), "the key's payload was another: answered ALREADY_EXISTS");
            Assert.That(outcomes[2], Is.TypeOf<RecordOutcome.Refused>());
            Assert.That(((RecordOutcome.Refused)outcomes[2]).Readings[0].Used, Is.EqualTo(60), "decided under the lock, after the plain events of its batch");
            Assert.That(outcomes[3], Is.TypeOf<RecordOutcome.Recorded>());
            Assert.That(outcomes[4], Is.TypeOf<RecordOutcome.Recorded>());
            Assert.That(await TotalAsync(subject), Is.EqualTo(10 + 20 + 30 + 40));
            Assert.That(await EventCountAsync(subject), Is.EqualTo(4));
            Assert.That(await TransactionsAsync(subject, "plain-1", "plain-2"), Is.EqualTo(1), "the plain events were committed together");
        });
    }

    [Test]
    public async Task OneBatch_TheSameKeySeveralTimes_IsCountedOnce()
    {
        var subject = await SubscribeAsync("premium");
        var outcomes = await InOneBatchAsync(
            Event(subject, "retried", 7),
            Event(subject, "other", 5),
            Event(subject, "retried", 7),
            Event(subject, "retried", 7),
            Event(subject, "retried", 8, fingerprint: "changed"));

        Assert.Multiple(async () =>
        {
            Assert.That(outcomes[0], Is.TypeOf<RecordOutcome.Recorded>());
            Assert.That(outcomes[1], Is.TypeOf<RecordOutcome.Recorded>());
            Assert.That(outcomes[2], Is.EqualTo(new RecordOutcome.AlreadyRecorded("fp-retried")));
            Assert.That(outcomes[3], Is.EqualTo(new RecordOutcome.AlreadyRecorded("fp-retried")));
            Assert.That(outcomes[4], Is.EqualTo(new RecordOutcome.AlreadyRecorded("fp-retried")), "another payload under the key finds the first one's");
            Assert.That(await TotalAsync(subject), Is.EqualTo(12));
            Assert.That(await EventCountAsync(subject), Is.EqualTo(2));
        });
    }

    [Test]
    public async Task OneBatch_ParallelReserves_GrantExactlyTheLimit()
    {
        var subject = await SubscribeAsync("starter"); // 3 interviews a day
        var key = new CounterKey(subject, Interviews, PeriodCalculator.Containing(ResetPeriod.Day, At, DateTimeZone.Utc, 1));
        var holds = Enumerable.Range(0, 20)
            .Select(i => new HoldRequest(subject, $"r-{i}", null, Utc, [new CounterLine(key, 1, 3)], At, Duration.FromHours(1), 100))
            .ToList();

        var outcomes = await InOneBatchAsync(holds.Select(h => (Func<Task<object>>)(async () => await _ledger.HoldAsync(h, CancellationToken.None))).ToArray());
        var granted = outcomes.OfType<HoldOutcome.Decided>().Where(d => d.Hold is not null).ToList();
        var refused = outcomes.OfType<HoldOutcome.Decided>().Where(d => d.Hold is null).ToList();

        Assert.Multiple(async () =>
        {
            Assert.That(granted, Has.Count.EqualTo(3));
            Assert.That(refused, Has.Count.EqualTo(17));
            Assert.That(refused.Select(r => r.Readings[0].Reserved), Is.All.EqualTo(3), "each refusal saw the holds granted before it in the batch");
            Assert.That((await _ledger.ListLiveHoldsAsync(key, CancellationToken.None)).Count, Is.EqualTo(3));
            Assert.That((await _ledger.GetTotalsAsync([key], CancellationToken.None))[0].Held, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task PostgresStoppedMidBatch_EveryCallIsUnavailable_AndNothingIsRecorded()
    {
        await using var postgres = await LocalServer.StartPostgresAsync();
        var database = await CreateDatabaseAsync(postgres.ConnectionString);
        await using var host = await MeteringHost.StartAsync(
            ServiceTest.DefaultStartForTests,
            database + ";Options=-c lock_timeout=30s -c statement_timeout=60s",
            new Dictionary<string, string?> { ["Ledger:WriteConnections"] = "1" });
        var subjects = Enumerable.Range(0, 8).Select(i => $"mid-batch-{i}-{Guid.NewGuid():N}").ToList();
        foreach (var subject in subjects)
        {
            await host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "starter", TimeZone = "UTC", BillingAnchorDay = 1 });
        }

        // The rows of every subject are locked: the batch that takes the first of the calls waits for one of them, the
        // others queue up behind it or join it. PostgreSQL stops while that batch is in flight.
        var unpooled = new NpgsqlConnectionStringBuilder(database) { Pooling = false }.ConnectionString;
        var locker = new NpgsqlConnection(unpooled);
        await locker.OpenAsync();
        var transaction = await locker.BeginTransactionAsync();
        await using (var command = new NpgsqlCommand("SELECT 1 FROM subscriptions WHERE subject_id = ANY($1) FOR UPDATE", locker, transaction))
        {
            command.Parameters.AddWithValue(subjects.ToArray());
            await command.ExecuteNonQueryAsync();
        }

        var calls = subjects
            .Select(subject => OutcomeAsync(() => host.Metering.TrackUsageAsync(new TrackUsageRequest
            {
                SubjectId = subject,
                IdempotencyKey = "session",
                Usage = { new UsageAmount { UsageType = Minutes, Amount = 5 } },
            }).ResponseAsync))
            .ToList();
        await WaitForLockWaitAsync(database);
        await Task.Delay(TimeSpan.FromMilliseconds(500));
        await postgres.StopAsync(Signals.Interrupt); // a fast shutdown, as pg_ctl stop -m fast
        var outcomes = await Task.WhenAll(calls);
        await locker.DisposeAsync();

        await postgres.StartAgainAsync();
        await using var check = new NpgsqlConnection(unpooled);
        await check.OpenAsync();
        await using var count = new NpgsqlCommand("SELECT count(*) FROM usage_events WHERE subject_id = ANY($1)", check);
        count.Parameters.AddWithValue(subjects.ToArray());
        var recorded = (long)(await count.ExecuteScalarAsync())!;

        Assert.Multiple(() =>
        {
            Assert.That(outcomes.Select(o => o.Code), Is.All.EqualTo(StatusCode.Unavailable), string.Join("\n", outcomes.Select(o => o.Detail)));
            Assert.That(recorded, Is.Zero, "no call was acknowledged, and none is in the ledger");
        });
    }

    /// <summary>
    /// Holds the ledger's one write transaction busy behind a row lock, starts every write (each is queued as it is
    /// called), then releases the lock: the writes are decided in one batch. Returns their outcomes in order.
    /// </summary>
    private async Task<object[]> InOneBatchAsync(params UsageEvent[] events) =>
        await InOneBatchAsync(events.Select(e => (Func<Task<object>>)(async () => await _ledger.RecordAsync(e, CancellationToken.None))).ToArray());

    private async Task<object[]> InOneBatchAsync(params Func<Task<object>>[] writes)
    {
        var blocker = await SubscribeAsync("premium");
        await using var locker = new NpgsqlConnection(_database);
        await locker.OpenAsync();
        Task<RecordOutcome> blocked;
        await using (var transaction = await locker.BeginTransactionAsync())
        {
            await using (var command = new NpgsqlCommand("SELECT 1 FROM subscriptions WHERE subject_id = $1 FOR UPDATE", locker, transaction))
            {
                command.Parameters.AddWithValue(blocker);
                await command.ExecuteNonQueryAsync();
            }

            blocked = _ledger.RecordAsync(Event(blocker, "blocker", 1), CancellationToken.None);
            await WaitForLockWaitAsync(_database);
            var started = writes.Select(write => write()).ToList();
            await transaction.CommitAsync();
            Assert.That(await blocked, Is.TypeOf<RecordOutcome.Recorded>());
            return await Task.WhenAll(started);
        }
    }

    private static async Task WaitForLockWaitAsync(string database)
    {
        await using var probe = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(database) { Pooling = false, Options = null }.ConnectionString);
        await probe.OpenAsync();
        for (var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20); DateTime.UtcNow < deadline; await Task.Delay(20))
        {
            await using var command = new NpgsqlCommand(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'", probe);
            if ((long)(await command.ExecuteScalarAsync())! > 0)
            {
                return;
            }
        }

        Assert.Fail("The ledger's write never waited for the row lock.");
    }

    private async Task<string> SubscribeAsync(string plan)
    {
        var subject = $"batch-{Guid.NewGuid():N}";
        await _host.Admin.SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = plan, TimeZone = "UTC", BillingAnchorDay = 1 });
        return subject;
    }

    private static UsageEvent Event(string subject, string key, long amount, string? fingerprint = null, long? enforcedLimit = null) =>
        new(
            subject,
            key,
            fingerprint ?? $"fp-{key}",
            At,
            At,
            Utc,
            [new UsageLine(new CounterKey(subject, Minutes, PeriodCalculator.Containing(ResetPeriod.Month, At, DateTimeZone.Utc, 1)), amount)],
            null,
            NoAttributes,
            "tests",
            EnforcedLimits: enforcedLimit is { } limit ? [limit] : null);

    private async Task<long> TotalAsync(string subject) =>
        (await _ledger.GetTotalsAsync([new CounterKey(subject, Minutes, PeriodCalculator.Containing(ResetPeriod.Month, At, DateTimeZone.Utc, 1))], CancellationToken.None))[0].Total;

    private async Task<long> EventCountAsync(string subject) =>
        (long)(await ScalarAsync("SELECT count(*) FROM usage_events WHERE subject_id = $1", subject))!;

    /// <summary>How many transactions wrote the events of these keys (the transaction id each row was inserted by).</summary>
    private async Task<long> TransactionsAsync(string subject, params string[] keys) =>
        (long)(await ScalarAsync("SELECT count(DISTINCT xmin::text) FROM usage_events WHERE subject_id = $1 AND idempotency_key = ANY($2)", subject, keys))!;

    private async Task<object?> ScalarAsync(string sql, params object[] parameters)
    {
        await using var connection = new NpgsqlConnection(_database);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var parameter in parameters)
        {
            command.Parameters.AddWithValue(parameter);
        }

        return await command.ExecuteScalarAsync();
    }

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
}
