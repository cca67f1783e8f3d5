using Google.Rpc;
using Grpc.Core;
using Metering.Api.V1;
using Metering.Core.Validation;
using Metering.IntegrationTests.Infrastructure;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// Amounts near the int64 limits never reach a sum: they are refused as input, and no period total may pass
/// <see cref="RequestValidator.MaxPeriodTotal"/> (10^15, exact in Lua's doubles), in the ledger or in a hold.
/// </summary>
public sealed class OverflowTests : ServiceTest
{
    [TestCase(long.MaxValue)]
    [TestCase(long.MaxValue - 1)]
    [TestCase(long.MinValue)]
    [TestCase(-1L)]
    [TestCase(RequestValidator.MaxAmount + 1)]
    [TestCase(1L << 53)]
    public async Task HugeOrNegativeAmount_IsInvalidArgumentEverywhereAndChangesNothing(long amount)
    {
        var subject = await SubscribeAsync("premium");

        FailsWith(StatusCode.InvalidArgument, () => TrackAsync(subject, Minutes, amount));
        FailsWith(StatusCode.InvalidArgument, () => CheckAsync(subject, Minutes, amount, reserve: true));
        FailsWith(StatusCode.InvalidArgument, () => Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "mixed",
            Usage = { Usage(Minutes, 1), Usage(Interviews, amount) },
        }).ResponseAsync);

        var status = await RemainingAsync(subject, Minutes);
        Assert.Multiple(() =>
        {
            Assert.That(status.Used, Is.Zero);
            Assert.That(status.Reserved, Is.Zero);
        });
    }

    [Test]
    public async Task MaxAmount_OnEveryUsageType_IsRecordedExactly()
    {
        var subject = await SubscribeAsync("premium");

        var response = await Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "max",
            Usage = { Usage(Minutes, RequestValidator.MaxAmount), Usage(Interviews, RequestValidator.MaxAmount), Usage(VideoReview, RequestValidator.MaxAmount) },
        });

        Assert.That(response.Limits.Select(l => l.Used), Is.All.EqualTo(RequestValidator.MaxAmount));
    }

    [Test]
    public async Task Total_UpToTheCeiling_IsExact_AndOnePastItIsRefusedWithNothingRecordedOrHeld()
    {
        var subject = await SubscribeAsync("premium");
        const long head = RequestValidator.MaxAmount / 2;
        await SeedLedgerLineAsync(subject, Minutes, RequestValidator.MaxPeriodTotal - head);

        // Exactly to the ceiling: every sum, in PostgreSQL, C# and Lua, stays exact.
        var upTo = await TrackAsync(subject, Minutes, head);
        var tooFar = FailsWith(StatusCode.ResourceExhausted, () => TrackAsync(subject, Minutes, 1));
        var holdTooFar = FailsWith(StatusCode.ResourceExhausted, () => CheckAsync(subject, Minutes, 1, reserve: true));
        var enforced = FailsWith(StatusCode.ResourceExhausted, () => Metering.TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "enforced",
            Usage = { Usage(Minutes, RequestValidator.MaxAmount) },
            Enforce = true,
        }).ResponseAsync);
        var look = await CheckAsync(subject, Minutes, RequestValidator.MaxAmount);
        var status = await RemainingAsync(subject, Minutes);

        Assert.Multiple(() =>
        {
            Assert.That(upTo.Limits[0].Used, Is.EqualTo(RequestValidator.MaxPeriodTotal));
            Assert.That(tooFar.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason, Is.EqualTo("TOTAL_CEILING_REACHED"));
            Assert.That(holdTooFar.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason, Is.EqualTo("TOTAL_CEILING_REACHED"));
            Assert.That(enforced.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason, Is.EqualTo("TOTAL_CEILING_REACHED"));
            Assert.That(look.Limits[0].Used, Is.EqualTo(RequestValidator.MaxPeriodTotal), "a read still answers, exactly");
            Assert.That(status.Used, Is.EqualTo(RequestValidator.MaxPeriodTotal));
            Assert.That(status.Reserved, Is.Zero);
            Assert.That(status.Remaining, Is.EqualTo(-1));
        });
    }

    [Test]
    public async Task Holds_CannotPileUpPastTheCeiling()
    {
        var subject = await SubscribeAsync("premium");
        await SeedLedgerLineAsync(subject, Interviews, RequestValidator.MaxPeriodTotal - (2 * RequestValidator.MaxAmount));

        var first = await CheckAsync(subject, Interviews, RequestValidator.MaxAmount, reserve: true);
        var second = await CheckAsync(subject, Interviews, RequestValidator.MaxAmount, reserve: true);
        FailsWith(StatusCode.ResourceExhausted, () => CheckAsync(subject, Interviews, 1, reserve: true));
        var status = await RemainingAsync(subject, Interviews);

        Assert.Multiple(() =>
        {
            Assert.That(first.ReservationId, Is.Not.Empty);
            Assert.That(second.ReservationId, Is.Not.Empty);
            Assert.That(status.Reserved, Is.EqualTo(2 * RequestValidator.MaxAmount));
            Assert.That(status.Used + status.Reserved, Is.EqualTo(RequestValidator.MaxPeriodTotal));
        });
    }

    /// <summary>
    /// Puts a large event straight into the ledger (as years of usage would), bypassing the per-call amount limit;
    /// the counters are rebuilt from it on next use.
    /// </summary>
    private async Task SeedLedgerLineAsync(string subject, string usageType, long amount)
    {
        var now = Host.Clock.GetUtcNow().UtcDateTime;
        await using var connection = new NpgsqlConnection(Host.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            """
            WITH e AS (
              INSERT INTO usage_events (subject_id, idempotency_key, fingerprint, occurred_at, recorded_at, attributes, recorded_by)
              VALUES (@s, 'seed', repeat('0', 64), @t, @t, '{}', 'test-seed') RETURNING id)
            INSERT INTO usage_event_lines (event_id, usage_type, amount, subject_id, occurred_at, period_start)
            SELECT id, @u, @a, @s, @t, @t FROM e
            """,
            connection);
        command.Parameters.AddWithValue("s", subject);
        command.Parameters.AddWithValue("u", usageType);
        command.Parameters.AddWithValue("a", amount);
        command.Parameters.AddWithValue("t", now);
        await command.ExecuteNonQueryAsync();
    }
}
