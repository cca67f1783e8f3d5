using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.IntegrationTests.Infrastructure;
using StackExchange.Redis;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>"Why was I blocked?" answered without reading Redis by hand, and counters repaired from the ledger.</summary>
public sealed class ExplainUsageTests : ServiceTest
{
    [Test]
    public async Task ExplainUsage_ShowsSubscriptionPlanPeriodLedgerCounterAndHolds_SideBySide()
    {
        var subject = await SubscribeAsync("starter", anchorDay: 15, timeZone: "Europe/Berlin");
        await TrackAsync(subject, Minutes, 120);
        await TrackAsync(subject, Minutes, 60);
        var hold = await CheckAsync(subject, Minutes, 100, reserve: true);

        var explained = await ExplainAsync(subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(explained.Subscription.PlanId, Is.EqualTo("starter"));
            Assert.That(explained.SubscriptionVersion, Is.EqualTo(1));
            Assert.That(explained.PlanId, Is.EqualTo("starter"));
            Assert.That(explained.PlanVersion, Is.GreaterThan(0));
            Assert.That(explained.CatalogVersion, Is.GreaterThanOrEqualTo(explained.PlanVersion));
            Assert.That(explained.Limit, Is.EqualTo(300));
            Assert.That(explained.ResetPeriod, Is.EqualTo(ResetPeriod.Month));
            Assert.That(explained.TimeZone, Is.EqualTo("Europe/Berlin"));
            Assert.That(explained.PeriodStartLocal, Is.EqualTo("2026-11-15T00:00:00"));
            Assert.That(explained.PeriodEndLocal, Is.EqualTo("2026-12-15T00:00:00"));
            Assert.That(explained.PeriodStart.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 11, 14, 23, 0, 0, TimeSpan.Zero)));
            Assert.That(explained.PeriodEnd.ToDateTimeOffset(), Is.EqualTo(new DateTimeOffset(2026, 12, 14, 23, 0, 0, TimeSpan.Zero)));
            Assert.That(explained.LedgerTotal, Is.EqualTo(180));
            Assert.That(explained.LedgerEvents, Is.EqualTo(2));
            Assert.That(explained.LedgerTotalRow, Is.EqualTo(180));
            Assert.That(explained.CounterValue, Is.EqualTo(180));
            Assert.That(explained.CounterVersion, Is.EqualTo(explained.LedgerTotalVersion));
            Assert.That(explained.CacheState, Is.EqualTo(CacheState.InSync));
            Assert.That(explained.Holds.Single().ReservationId, Is.EqualTo(hold.ReservationId));
            Assert.That(explained.Holds.Single().Amount, Is.EqualTo(100));
            Assert.That(explained.Holds.Single().ExpiresAt, Is.EqualTo(hold.ReservationExpiresAt));
            Assert.That(explained.StatusFromLedger.Used, Is.EqualTo(180));
            Assert.That(explained.StatusFromLedger.Reserved, Is.EqualTo(100));
            Assert.That(explained.StatusFromLedger.Remaining, Is.EqualTo(20));
        });
    }

    [Test]
    public async Task ExplainUsage_AfterTheCounterIsTampered_ReportsAMismatch_AndReconcileCountersFixesIt()
    {
        var subject = await SubscribeAsync("free");
        await TrackAsync(subject, Minutes, 12);
        var key = await CounterKeyAsync(subject, Minutes);
        await Host.Redis.HashSetAsync(key, "t", 30);
        Assert.That((await CheckAsync(subject, Minutes, 5)).Allowed, Is.False, "the tampered counter blocks the user");

        var before = await ExplainAsync(subject, Minutes);
        var reconciled = await Admin.ReconcileCountersAsync(new ReconcileCountersRequest { SubjectId = subject });
        var after = await ExplainAsync(subject, Minutes);

        var repair = reconciled.Repairs.Single();
        Assert.Multiple(async () =>
        {
            Assert.That(before.CacheState, Is.EqualTo(CacheState.Mismatch));
            Assert.That(before.CounterValue, Is.EqualTo(30));
            Assert.That(before.LedgerTotal, Is.EqualTo(12));
            Assert.That(reconciled.SubjectsChecked, Is.EqualTo(1));
            Assert.That(reconciled.CountersChecked, Is.EqualTo(4));
            Assert.That(repair.UsageType, Is.EqualTo(Minutes));
            Assert.That(repair.Before, Is.EqualTo(CacheState.Mismatch));
            Assert.That(repair.CounterValueBefore, Is.EqualTo(30));
            Assert.That(repair.LedgerTotal, Is.EqualTo(12));
            Assert.That(repair.LedgerTotalRowFixed, Is.False);
            Assert.That(repair.CounterValueAfter, Is.EqualTo(12));
            Assert.That(after.CacheState, Is.EqualTo(CacheState.InSync));
            Assert.That(after.CounterValue, Is.EqualTo(12));
            Assert.That((await CheckAsync(subject, Minutes, 5)).Allowed, Is.True, "unblocked");
        });
    }

    [Test]
    public async Task ReconcileCounters_CounterWithAVersionAheadOfTheLedger_IsEvictedAndRebuilt()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 40);
        await Host.Redis.HashSetAsync(await CounterKeyAsync(subject, Minutes), [new HashEntry("t", 299), new HashEntry("v", long.MaxValue / 2)]);

        var repair = (await Admin.ReconcileCountersAsync(new ReconcileCountersRequest { SubjectId = subject })).Repairs.Single();
        var explained = await ExplainAsync(subject, Minutes);
        var status = await RemainingAsync(subject, Minutes);

        Assert.Multiple(async () =>
        {
            Assert.That(repair.Evicted, Is.True);
            // Evicted, then rebuilt by the next call or by the outbox entry the reconcile queued (drained within
            // about half a second): either way, never the counter that was ahead of the ledger.
            Assert.That(explained.CacheState, Is.AnyOf(CacheState.Missing, CacheState.InSync));
            Assert.That(explained.CounterValue, Is.Not.EqualTo(299));
            Assert.That(status.Used, Is.EqualTo(40), "the next call rebuilt it from the ledger");
            Assert.That((await ExplainAsync(subject, Minutes)).CacheState, Is.EqualTo(CacheState.InSync));
        });
    }

    [Test]
    public async Task ReconcileCounters_RunningTotalRowThatDisagreesWithItsEvents_IsRecomputed()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Minutes, 12);
        await using (var connection = new Npgsql.NpgsqlConnection(Host.PostgresConnectionString))
        {
            await connection.OpenAsync();
            await using var command = new Npgsql.NpgsqlCommand("UPDATE usage_totals SET total = 99 WHERE subject_id = @s AND usage_type = @t", connection);
            command.Parameters.AddWithValue("s", subject);
            command.Parameters.AddWithValue("t", Minutes);
            Assert.That(await command.ExecuteNonQueryAsync(), Is.EqualTo(1));
        }

        var before = await ExplainAsync(subject, Minutes);
        var repair = (await Admin.ReconcileCountersAsync(new ReconcileCountersRequest { SubjectId = subject })).Repairs.Single();
        var after = await ExplainAsync(subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(before.LedgerTotalRow, Is.EqualTo(99));
            Assert.That(before.LedgerTotal, Is.EqualTo(12));
            Assert.That(repair.LedgerTotalRowFixed, Is.True);
            Assert.That(repair.CounterValueAfter, Is.EqualTo(12));
            Assert.That(after.LedgerTotalRow, Is.EqualTo(12));
            Assert.That(after.CounterValue, Is.EqualTo(12));
            Assert.That(after.CacheState, Is.EqualTo(CacheState.InSync));
        });
    }

    [Test]
    public async Task ExplainUsage_CounterMissing_ReportsMissing_AndChangesNothing()
    {
        var subject = await SubscribeAsync("starter");
        await TrackAsync(subject, Interviews, 2);
        var key = await CounterKeyAsync(subject, Interviews);
        await Host.Redis.KeyDeleteAsync(key);

        var explained = await ExplainAsync(subject, Interviews);

        Assert.Multiple(async () =>
        {
            Assert.That(explained.CacheState, Is.EqualTo(CacheState.Missing));
            Assert.That(explained.HasCounterValue, Is.False);
            Assert.That(explained.LedgerTotal, Is.EqualTo(2));
            Assert.That(await Host.Redis.KeyExistsAsync(key), Is.False);
        });
    }

    [Test]
    public async Task ReconcileCounters_ForAllSubjects_RepairsTheTamperedOnes_AndLeavesInSyncOnesAlone()
    {
        var tampered1 = await SubscribeAsync("pro");
        var tampered2 = await SubscribeAsync("pro");
        var fine = await SubscribeAsync("pro");
        foreach (var subject in new[] { tampered1, tampered2, fine })
        {
            await TrackAsync(subject, Minutes, 10);
            await TrackAsync(subject, Interviews, 1);
        }

        await Host.Redis.HashSetAsync(await CounterKeyAsync(tampered1, Minutes), "t", 900);
        await Host.Redis.KeyDeleteAsync(await CounterKeyAsync(tampered2, Interviews));

        var result = await Admin.ReconcileCountersAsync(new ReconcileCountersRequest());

        var repairs = result.Repairs.Where(r => r.SubjectId == tampered1 || r.SubjectId == tampered2 || r.SubjectId == fine).ToList();
        Assert.Multiple(async () =>
        {
            Assert.That(result.SubjectsChecked, Is.GreaterThanOrEqualTo(3));
            Assert.That(repairs.Select(r => (r.SubjectId, r.UsageType, r.Before)), Is.EquivalentTo(new[]
            {
                (tampered1, Minutes, CacheState.Mismatch),
                (tampered2, Interviews, CacheState.Missing),
            }));
            Assert.That((await ExplainAsync(tampered1, Minutes)).CacheState, Is.EqualTo(CacheState.InSync));
            Assert.That((await ExplainAsync(tampered2, Interviews)).CacheState, Is.EqualTo(CacheState.InSync));
        });
    }

    [Test]
    public async Task ReconcileCounters_RacingTrackUsage_LosesNothing()
    {
        var subject = await SubscribeAsync("premium");
        using var stop = new CancellationTokenSource();
        var reconciler = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await Host.Redis.HashSetAsync(await CounterKeyAsync(subject, Minutes), "t", 0);
                await Admin.ReconcileCountersAsync(new ReconcileCountersRequest { SubjectId = subject });
            }
        });
        await TrackAsync(subject, Minutes, 1, key: "first");
        await Task.WhenAll(Enumerable.Range(0, 40).Select(i => TrackAsync(subject, Minutes, 1, key: $"e{i}")));
        await stop.CancelAsync();
        await reconciler;
        await Admin.ReconcileCountersAsync(new ReconcileCountersRequest { SubjectId = subject });

        var explained = await ExplainAsync(subject, Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(explained.LedgerTotal, Is.EqualTo(41));
            Assert.That(explained.LedgerTotalRow, Is.EqualTo(41));
            Assert.That(explained.CounterValue, Is.EqualTo(41));
            Assert.That(explained.CacheState, Is.EqualTo(CacheState.InSync));
        });
    }

    [Test]
    public void ExplainUsage_InvalidRequest_NamesTheFields()
    {
        var error = FailsWith(StatusCode.InvalidArgument, () => Admin.ExplainUsageAsync(new ExplainUsageRequest { SubjectId = "", UsageType = "hours" }).ResponseAsync);

        Assert.That(error.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations.Select(v => v.Field), Is.EquivalentTo(new[] { "subject_id", "usage_type" }));
    }

    private async Task<ExplainUsageResponse> ExplainAsync(string subject, string usageType) =>
        await Admin.ExplainUsageAsync(new ExplainUsageRequest { SubjectId = subject, UsageType = usageType });

    /// <summary>The counter's key, once the outbox has nothing left to write to it (so that tampering sticks).</summary>
    private async Task<RedisKey> CounterKeyAsync(string subject, string usageType)
    {
        await LedgerProbe.OutboxDrainedAsync(Host, subject);
        var start = (await RemainingAsync(subject, usageType)).PeriodStart.ToDateTimeOffset().ToUnixTimeSeconds();
        return $"mtr:{{{subject}}}:c:{usageType}:{start}";
    }
}
