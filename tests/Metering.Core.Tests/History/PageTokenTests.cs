using Metering.Core.Errors;
using Metering.Core.History;
using NodaTime;

namespace Metering.Core.Tests.History;

public sealed class PageTokenTests
{
    [TestCase(0L, 1L)]
    [TestCase(17_640_000_000_000_000L, 987_654_321L)]
    [TestCase(-5L, 3L)]
    public void EncodeThenDecode_RoundTrips(long ticks, long id)
    {
        var cursor = new EventCursor(Instant.FromUnixTimeTicks(ticks), id);

        var token = PageToken.Encode(cursor);

        Assert.Multiple(() =>
        {
            Assert.That(PageToken.TryDecode(token, out var decoded), Is.True);
            Assert.That(decoded, Is.EqualTo(cursor));
            Assert.That(token, Does.Match("^[A-Za-z0-9_-]+$"), "URL-safe, no padding");
        });
    }

    [TestCase("not-a-token")]
    [TestCase("djE6YWJjOjE")]
    [TestCase("djI6MTox")]
    [TestCase("%%%")]
    public void TryDecode_Garbage_IsRejected(string token) =>
        Assert.That(PageToken.TryDecode(token, out _), Is.False);

    [Test]
    public void Parse_Empty_IsTheFirstPage() => Assert.That(PageToken.Parse("page_token", ""), Is.Null);

    [Test]
    public void Parse_Garbage_NamesTheField()
    {
        var error = Assert.Throws<InvalidRequestException>(() => PageToken.Parse("page_token", "garbage"))!;

        Assert.That(error.Violations.Single().Field, Is.EqualTo("page_token"));
    }
}
