using Metering.Core.Errors;
using Metering.Core.Tests.Fakes;
using Metering.Core.Usage;

namespace Metering.Core.Tests.Usage;

public sealed class UsageCorrectionsTests
{
    private const string Minutes = "minutes_per_month";

    private MeteringWorld _world = null!;
    private MeteringInstance _one = null!;

    [SetUp]
    public async Task SetUpAsync()
    {
        _world = new MeteringWorld();
        _one = await _world.NewInstance();
        await _one.Subscriptions.SetAsync(new SetSubscriptionCommand("ann", "starter", 1, "UTC"), CancellationToken.None);
        await _one.Meter.TrackUsageAsync(new TrackUsageCommand("ann", "e1", [new(Minutes, 50)], null, null, false, new Dictionary<string, string>(), "test"), CancellationToken.None);
    }

    [TearDown]
    public void TearDown() => _world.Dispose();

    [Test]
    public async Task AdjustUsage_RecordsTheCorrectionOnce()
    {
        var command = new AdjustUsageCommand("ann", Minutes, -10, "broken audio", "refund-1", null, "support");

        var first = await _one.Corrections.AdjustUsageAsync(command, CancellationToken.None);
        var retry = await _one.Corrections.AdjustUsageAsync(command, CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(first.Duplicate, Is.False);
            Assert.That(first.Amount, Is.EqualTo(-10));
            Assert.That(first.Limit.Used, Is.EqualTo(40));
            Assert.That(retry.Duplicate, Is.True);
            Assert.That(retry.Amount, Is.Zero);
            Assert.That(retry.Limit.Used, Is.EqualTo(40));
        });
    }

    [Test]
    public async Task AdjustUsage_SameKeyOtherAmount_IsRefused()
    {
        await _one.Corrections.AdjustUsageAsync(new AdjustUsageCommand("ann", Minutes, -10, "broken audio", "refund-1", null, "support"), CancellationToken.None);

        Assert.ThrowsAsync<IdempotencyConflictException>(() =>
            _one.Corrections.AdjustUsageAsync(new AdjustUsageCommand("ann", Minutes, -11, "broken audio", "refund-1", null, "support"), CancellationToken.None));
    }

    [Test]
    public async Task ResetUsage_ZeroesThePeriodAsARecordedAdjustment()
    {
        var reset = await _one.Corrections.ResetUsageAsync(new ResetUsageCommand("ann", Minutes, "support", "reset-1", "support"), CancellationToken.None);
        var check = await _one.Meter.CheckLimitAsync(new CheckLimitCommand("ann", [new(Minutes, 300)], false, null), CancellationToken.None);

        Assert.Multiple(() =>
        {
            Assert.That(reset.Amount, Is.EqualTo(-50));
            Assert.That(reset.Limit.Used, Is.Zero);
            Assert.That(check.Allowed, Is.True);
        });
    }
}
