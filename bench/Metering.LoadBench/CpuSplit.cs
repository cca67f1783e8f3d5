using System.Globalization;

namespace Metering.LoadBench;

/// <summary>
/// CPU time of the processes a run involves, from /proc: each named part is a process (optionally with its children,
/// the living ones and those that ended), and the whole machine from /proc/stat. Two snapshots give CPU-seconds per
/// second of each part over the window between them.
/// </summary>
internal sealed class CpuSplit(IReadOnlyList<CpuSplit.Part> parts)
{
    /// <summary>USER_HZ: the unit of the times in /proc/&lt;pid&gt;/stat and /proc/stat on Linux.</summary>
    private const double TicksPerSecond = 100;

    /// <summary>A process to account for, by a function that gives its pid now (null when not running).</summary>
    public sealed record Part(string Name, Func<int?> ProcessId, bool WithChildren);

    public IReadOnlyList<string> Names { get; } = [.. parts.Select(p => p.Name), "whole machine"];

    /// <summary>The CPU ticks of every part now, the whole machine's busy ticks last.</summary>
    public Snapshot Take()
    {
        var stats = ReadAllStats();
        var ticks = parts.Select(part => part.ProcessId() is { } pid ? Ticks(stats, pid, part.WithChildren) : 0).ToList();
        ticks.Add(MachineBusyTicks());
        return new Snapshot(DateTime.UtcNow, ticks);
    }

    /// <summary>CPU-seconds per second of each part (in <see cref="Names"/> order) between two snapshots.</summary>
    public static double[] Rates(Snapshot from, Snapshot to)
    {
        var seconds = (to.AtUtc - from.AtUtc).TotalSeconds;
        return [.. from.Ticks.Zip(to.Ticks, (a, b) => seconds > 0 ? Math.Max(0, b - a) / TicksPerSecond / seconds : 0)];
    }

    private static long Ticks(Dictionary<int, ProcStat> stats, int pid, bool withChildren)
    {
        if (!stats.TryGetValue(pid, out var own))
        {
            return 0;
        }

        var total = own.User + own.System;
        if (withChildren)
        {
            // Ended children are in the parent's cutime/cstime; living ones are counted one by one.
            total += own.ChildrenUser + own.ChildrenSystem;
            total += stats.Values.Where(s => s.ParentId == pid).Sum(s => s.User + s.System);
        }

        return total;
    }

    private static Dictionary<int, ProcStat> ReadAllStats()
    {
        var stats = new Dictionary<int, ProcStat>();
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(directory), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && ReadStat(pid) is { } stat)
            {
                stats[pid] = stat;
            }
        }

        return stats;
    }

    /// <summary>Fields 4 (ppid) and 14-17 (utime, stime, cutime, cstime) of /proc/&lt;pid&gt;/stat, read after the command name.</summary>
    private static ProcStat? ReadStat(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
        }
        catch (IOException)
        {
            return null; // Ended meanwhile.
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }

        var fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
        long Field(int number) => long.Parse(fields[number - 3], CultureInfo.InvariantCulture);
        return new ProcStat((int)Field(4), Field(14), Field(15), Field(16), Field(17));
    }

    /// <summary>All CPUs' busy time (user, nice, system, irq, softirq, steal) from the first line of /proc/stat.</summary>
    private static long MachineBusyTicks()
    {
        var fields = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return new[] { 1, 2, 3, 6, 7, 8 }.Sum(i => long.Parse(fields[i], CultureInfo.InvariantCulture));
    }

    public sealed record Snapshot(DateTime AtUtc, IReadOnlyList<long> Ticks);

    private sealed record ProcStat(int ParentId, long User, long System, long ChildrenUser, long ChildrenSystem);
}
