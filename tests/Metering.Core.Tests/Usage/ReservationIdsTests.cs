using Metering.Core.Usage;
using NodaTime;

namespace Metering.Core.Tests.Usage;

public sealed class ReservationIdsTests
{
    [Test]
    public void New_CarriesItsPlacedAtToTheMillisecond()
    {
        var now = Instant.FromUtc(2026, 11, 18, 23, 58, 12) + Duration.FromTicks(1_234_567);

        var (id, placedAt) = ReservationIds.New(now);

        Assert.Multiple(() =>
        {
            Assert.That(id, Does.Match("^rsv_[0-9a-f]{32}$"));
            Assert.That(placedAt, Is.EqualTo(Instant.FromUtc(2026, 11, 18, 23, 58, 12) + Duration.FromMilliseconds(123)), "truncated to the millisecond");
            Assert.That(ReservationIds.PlacedAt(id), Is.EqualTo(placedAt));
            Assert.That(ReservationIds.New(now).Id, Is.Not.EqualTo(id), "unique at the same instant");
        });
    }

    [TestCase("no-such-hold")]
    [TestCase("rsv_")]
    [TestCase("rsv_0192f3a4b5c64d7e8f9a0b1c2d3e4f5a6")]
    [TestCase("rsv_0192f3a4b5c64d7e8f9a0b1c2d3e4f5")]
    [TestCase("rsv_0192f3a4b5c64d7e8f9a0b1c2d3e4fzz")]
    [TestCase("res_0192f3a4b5c67d7e8f9a0b1c2d3e4f5a")]
    public void PlacedAt_OfAnIdOfAnotherForm_IsNull(string reservationId) =>
        Assert.That(ReservationIds.PlacedAt(reservationId), Is.Null);

    [Test]
    public void PlacedAt_OfAGuidOfAnotherVersion_IsNull() =>
        Assert.That(ReservationIds.PlacedAt($"rsv_{Guid.NewGuid():N}"), Is.Null);
}
