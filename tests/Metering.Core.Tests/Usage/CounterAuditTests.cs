using Metering.Core.Usage;

namespace Metering.Core.Tests.Usage;

public sealed class CounterAuditTests
{
    [TestCase(12L, 12L, ExpectedResult = CacheState.InSync)]
    [TestCase(12L, 30L, ExpectedResult = CacheState.Mismatch)]
    [TestCase(0L, null, ExpectedResult = CacheState.Missing)]
    [TestCase(12L, null, ExpectedResult = CacheState.Missing)]
    [TestCase(0L, 0L, ExpectedResult = CacheState.InSync)]
    public CacheState Compare_TellsInSyncMismatchAndMissingApart(long ledger, long? counter) => CounterAudit.Compare(ledger, counter);

    [TestCase(12L, 1L, 12L, 12L, ExpectedResult = false, TestName = "everything agrees")]
    [TestCase(12L, 1L, 12L, 30L, ExpectedResult = true, TestName = "cache differs")]
    [TestCase(12L, 1L, 12L, null, ExpectedResult = true, TestName = "counter missing with usage")]
    [TestCase(0L, 0L, null, null, ExpectedResult = false, TestName = "no usage, no row, no counter")]
    [TestCase(0L, 0L, 0L, null, ExpectedResult = false, TestName = "no usage, empty row, no counter")]
    [TestCase(12L, 1L, 10L, 12L, ExpectedResult = true, TestName = "running total row differs from its events")]
    [TestCase(12L, 1L, null, 12L, ExpectedResult = true, TestName = "events without a running total row")]
    [TestCase(0L, 2L, 0L, 0L, ExpectedResult = false, TestName = "events summing to zero agree")]
    public bool NeedsRepair_OnlyWhenCacheOrRowDisagreeWithTheEvents(long eventTotal, long eventCount, long? rowTotal, long? counterTotal) =>
        CounterAudit.NeedsRepair(new LedgerSnapshot(eventTotal, eventCount, rowTotal, 1), new CounterSnapshot(counterTotal, 0, 1));
}
