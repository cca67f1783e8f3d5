using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using StackExchange.Redis;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>Redis is a cache of the ledger: whatever happens to it, answers converge to the ledger.</summary>
public sealed class CounterConsistencyTests : ServiceTest
{
    [Test]
    public async Task GetRemaining_AfterTheCounterIsDeleted_RebuildsItFromTheLedger()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 120);
        await TrackAsync(subject, Minutes, 30);

        var deleted = await DeleteCountersAsync(subject);
        var status = await RemainingAsync(subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(deleted, Is.GreaterThan(0), "a counter existed to delete");
            Assert.That(status.Used, Is.EqualTo(150));
            Assert.That(status.Remaining, Is.EqualTo(150));
        });
    }

    [Test]
    public async Task CheckLimit_AfterRedisIsFlushed_StillEnforcesWhatTheLedgerHolds()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 295);
        await TrackAsync(subject, Interviews, 3);

        await Host.ForgetInRedisAsync(subject);
        var response = await Metering.CheckLimitAsync(new CheckLimitRequest
        {
            SubjectId = subject,
            Usage = { Usage(Minutes, 10), Usage(Interviews, 1) },
        });

        Assert.Multiple(() =>
        {
            Assert.That(response.PlanId, Is.EqualTo("starter"), "subscription reloaded from the ledger");
            Assert.That(response.Allowed, Is.False);
            Assert.That(response.Limits[0].Used, Is.EqualTo(295));
            Assert.That(response.Limits[0].Remaining, Is.EqualTo(5));
            Assert.That(response.Limits[1].Used, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task TrackUsage_OverAStaleCounterWithAnOldVersion_ReplacesItWithTheLedgerTotal()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 10);
        await LedgerProbe.OutboxDrainedAsync(Host, subject);
        var key = (await CounterKeysAsync(subject, Minutes)).Single();
        await Host.Redis.HashSetAsync(key, [new HashEntry("t", 999), new HashEntry("v", 0)]);

        var response = await TrackAsync(subject, Minutes, 5);

        Assert.That(response.Limits[0].Used, Is.EqualTo(15));
    }

    [Test]
    public async Task Counters_RebuiltWhileUsageIsTrackedConcurrently_EqualTheLedger()
    {
        var subject = await SubscribeAsync("pro");
        const int Events = 60;
        using var stop = new CancellationTokenSource();

        // While events are recorded, keep deleting the counters and reading (which rebuilds them).
        var vandal = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await DeleteCountersAsync(subject);
                await RemainingAsync(subject, Minutes);
            }
        });
        await Task.WhenAll(Enumerable.Range(0, Events).Select(i => TrackAsync(subject, Minutes, 1, key: $"e{i}")));
        await stop.CancelAsync();
        await vandal;

        var cached = await RemainingAsync(subject, Minutes);
        var ledger = await LedgerTotalAsync(subject, Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(ledger, Is.EqualTo(Events));
            Assert.That(cached.Used, Is.EqualTo(Events));
        });
    }

    private async Task<long> DeleteCountersAsync(string subject)
    {
        var keys = await CounterKeysAsync(subject);
        return keys.Length == 0 ? 0 : await Host.Redis.KeyDeleteAsync(keys);
    }

    private async Task<RedisKey[]> CounterKeysAsync(string subject, string usageType = "*")
    {
        var redis = Host.Services.GetRequiredService<IConnectionMultiplexer>();
        return [.. await LedgerProbe.KeysAsync(redis, $"mtr:{{{subject}}}:c:{usageType}:*")];
    }

    private async Task<long> LedgerTotalAsync(string subject, string usageType)
    {
        await using var connection = new NpgsqlConnection(Host.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT COALESCE(SUM(amount), 0) FROM usage_event_lines WHERE subject_id = @s AND usage_type = @t",
            connection);
        command.Parameters.AddWithValue("s", subject);
        command.Parameters.AddWithValue("t", usageType);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
