using System.Globalization;
using Metering.LoadBench;

// dotnet Metering.LoadBench.dll [--callers 64] [--subjects 1000] [--seconds 10] [--warmup 3] [--table <file>] [--profile <file>]
//   measures the service under closed-loop load against its same-run references and prints one table
//   (also written to --table); exits 1 when any call failed. With --profile, also traces the service during each of
//   its scenarios (dotnet-trace) and writes where its time and the machine's CPU went to that file.
// dotnet Metering.LoadBench.dll serve-reference <port> <redis configuration>
//   the EVALSHA reference server (started by the benchmark itself).
// dotnet Metering.LoadBench.dll profile-report <file.nettrace>
//   the top frames and areas of a trace taken with dotnet-trace (what --profile writes per scenario).
if (args is ["serve-reference", var port, var redis])
{
    return await ReferenceServer.RunAsync(int.Parse(port, CultureInfo.InvariantCulture), redis);
}

if (args is ["profile-report", var nettrace])
{
    Console.WriteLine(ProfileReport.Read(nettrace, DateTime.MinValue, DateTime.MaxValue).ToMarkdown(15));
    return 0;
}

BenchOptions options;
try
{
    options = BenchOptions.Parse(args);
}
catch (ArgumentException e)
{
    await Console.Error.WriteLineAsync($"{e.Message}\nusage: Metering.LoadBench [--callers N] [--subjects M] [--seconds S] [--warmup W] [--table FILE] [--profile FILE]");
    return 2;
}

return await LoadRun.RunAsync(options);

namespace Metering.LoadBench
{
    /// <summary>The benchmark's parameters (make bench-load CALLERS=… SUBJECTS=… SECONDS=…).</summary>
    internal sealed record BenchOptions(int Callers, int Subjects, TimeSpan Duration, TimeSpan Warmup, string? TablePath, string? ProfilePath = null)
    {
        public static BenchOptions Parse(string[] args)
        {
            int callers = 64, subjects = 1000;
            double seconds = 10, warmup = 3;
            string? table = null, profile = null;
            for (var i = 0; i < args.Length; i++)
            {
                var value = i + 1 < args.Length ? args[i + 1] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--callers":
                        callers = Positive(args[i], value);
                        break;
                    case "--subjects":
                        subjects = Positive(args[i], value);
                        break;
                    case "--seconds":
                        seconds = PositiveSeconds(args[i], value);
                        break;
                    case "--warmup":
                        warmup = double.Parse(value, CultureInfo.InvariantCulture);
                        break;
                    case "--table":
                        table = value;
                        break;
                    case "--profile":
                        profile = value;
                        break;
                    default:
                        throw new ArgumentException($"unknown option {args[i]}");
                }

                i++;
            }

            return new BenchOptions(callers, subjects, TimeSpan.FromSeconds(seconds), TimeSpan.FromSeconds(Math.Max(0, warmup)), table, profile);
        }

        private static int Positive(string name, string value) =>
            int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : throw new ArgumentException($"{name} must be a positive integer, not '{value}'");

        private static double PositiveSeconds(string name, string value) =>
            double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && n > 0 && n <= 600 ? n : throw new ArgumentException($"{name} must be a number of seconds in (0, 600], not '{value}'");
    }
}
