using System.ComponentModel.DataAnnotations;

namespace Metering.Storage.Postgres;

/// <summary>How the ledger groups concurrent writes into shared transactions (configuration section <c>Ledger</c>).</summary>
public sealed class LedgerWriteOptions
{
    /// <summary>Group-commit transactions in flight at once per instance, each on one connection.</summary>
    [Range(1, 64)]
    public int WriteConnections { get; set; } = 2;

    /// <summary>The most writes (events and holds) one transaction takes.</summary>
    [Range(1, 1024)]
    public int MaxWriteBatch { get; set; } = 64;
}
