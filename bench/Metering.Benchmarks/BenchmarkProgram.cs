using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Perfolizer.Horology;

namespace Metering.Benchmarks;

/// <summary><c>make bench</c>: runs every benchmark in process (the servers are started once), in short jobs warmed up well past JIT tiering.</summary>
internal static class BenchmarkProgram
{
    public static void Main(string[] args)
    {
        // The in-process host reads the server's appsettings.json from its project folder.
        Environment.SetEnvironmentVariable("ASPNETCORE_TEST_CONTENTROOT_METERING_SERVER", Path.Combine(RepositoryRoot(), "src", "Metering.Server"));
        if (args is ["concurrent", ..])
        {
            ConcurrentTrackUsage.RunAsync(args[1..]).GetAwaiter().GetResult();
            return;
        }

        var config = DefaultConfig.Instance
            .AddJob(Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance).WithMinIterationTime(TimeInterval.FromMilliseconds(250)).WithWarmupCount(8).WithIterationCount(6))
            .WithOptions(ConfigOptions.JoinSummary);
        BenchmarkSwitcher.FromAssembly(typeof(BenchmarkProgram).Assembly).Run(args.Length == 0 ? ["--filter", "*"] : args, config);
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Metering.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Run the benchmarks from inside the repository (Metering.sln not found).");
    }
}
