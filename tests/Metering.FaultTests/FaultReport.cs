using System.Globalization;
using System.Text;
using Metering.Testing;

namespace Metering.FaultTests;

/// <summary>
/// The table of every scenario run so far: printed to the test output after each scenario and written as markdown to
/// TestResults/faults/reliability-table.md (repository root), which <c>make test-faults</c> copies into docs/reliability.md.
/// </summary>
internal static class FaultReport
{
    private static readonly List<FaultRow> Rows = [];
    private static readonly Lock Gate = new();

    public static string TablePath => Path.Combine(RepositoryRoot.Find(), "TestResults", "faults", "reliability-table.md");

    public static async Task AddAsync(FaultRow row)
    {
        string table;
        lock (Gate)
        {
            Rows.Add(row);
            table = Markdown(Rows);
        }

        await TestContext.Progress.WriteLineAsync($"\n{row.Scenario}: {row.Details}\n{table}");
        Directory.CreateDirectory(Path.GetDirectoryName(TablePath)!);
        await File.WriteAllTextAsync(TablePath, table);
    }

    private static string Markdown(IEnumerable<FaultRow> rows)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"Measured {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC ({Environment.ProcessorCount} cores).");
        text.AppendLine();
        text.AppendLine("| scenario | acknowledged | in ledger | duplicates counted | counters ≠ ledger after 1 s | granted over limit | answered UNKNOWN/INTERNAL | result |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|---:|---|");
        foreach (var r in rows)
        {
            var pass = r.Acknowledged == r.InLedger && r.DuplicatesCounted == 0 && r.CountersOffLedger == 0 && r.GrantedOverLimit == 0 && r.UnknownOrInternal == 0;
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Scenario} | {r.Acknowledged} | {r.InLedger} | {r.DuplicatesCounted} | {r.CountersOffLedger} | {r.GrantedOverLimit} | {r.UnknownOrInternal} | {(pass ? "pass" : "**FAIL**")} |");
        }

        return text.ToString();
    }
}
