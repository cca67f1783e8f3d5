// The interview backend: before an interview starts, ask Metering whether the user may have it, and hold the minutes
// and the interview slot. Start the interview only when allowed; hand the reservation to the chat service.
//
//   dotnet run --project samples/InterviewBackend -- <user> [minutes]
//
// Metering's address and key: Metering__Client__Address, Metering__Client__ApiKey (defaults: make run's).
using System.Globalization;
using Metering.Client;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

var user = args.ElementAtOrDefault(0) ?? "user-42";
var minutes = long.Parse(args.ElementAtOrDefault(1) ?? "30", CultureInfo.InvariantCulture);

var builder = Host.CreateApplicationBuilder();
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Services.AddMeteringClient(options =>
{
    options.ApiKey = "mtr_dev_local_key_not_secret"; // make run's local key; configuration below overrides it
    options.SpoolDirectory = Path.Combine(Path.GetTempPath(), "metering-samples", "interview-backend");
    builder.Configuration.GetSection("Metering:Client").Bind(options);
});
using var host = builder.Build();
await host.StartAsync();
var metering = host.Services.GetRequiredService<IMeteringClient>();

await using var session = await metering.BeginSessionAsync(user, minutes);
if (session.Allowed)
{
    var left = session.Limit("minutes_per_month");
    var today = session.Limit("interviews_per_day");
    Console.WriteLine($"✔ {user} may start an interview of up to {minutes} minutes.");
    if (left is not null && today is not null)
    {
        Console.WriteLine($"  Minutes left this month after it: {Describe(left)}; interviews left today: {Describe(today)}.");
    }

    if (session.Degraded)
    {
        Console.WriteLine($"  (Metering could not answer: allowed by the fail policy — {session.Check.DegradedReason})");
    }

    Console.WriteLine($"  Holding reservation {session.ReservationId ?? "(none: degraded)"} until {session.Check.ReservationExpiresAt:u}.");
    Console.WriteLine();
    Console.WriteLine("When the interview ends, the chat service records what it used:");
    Console.WriteLine($"  dotnet run --project samples/ChatService -- {user} {session.ReservationId ?? "-"} {session.SessionId} <measured minutes>");

    // The chat service now owns the reservation: do not release it when this session object goes away.
    Environment.Exit(0);
}

Console.WriteLine($"✘ {user} cannot start an interview of {minutes} minutes now.");
foreach (var limit in session.Limits.Where(l => l.Decision != Decision.Allowed))
{
    Console.WriteLine($"  {limit.UsageType}: {limit.Used} used, {limit.Reserved} held of {limit.Limit} ({limit.Level}); resets {limit.ResetsAt:u}.");
}

if (session.UpgradeOptions.Count > 0)
{
    Console.WriteLine("  Upgrade to start it now:");
    foreach (var option in session.UpgradeOptions)
    {
        var limits = string.Join(", ", option.Limits.Select(l => $"{(l.Limit < 0 ? "unlimited" : l.Limit.ToString(CultureInfo.InvariantCulture))} {l.UsageType}"));
        Console.WriteLine($"    {option.DisplayName} ({option.PlanId}): {limits}");
    }
}

await host.StopAsync();
return 1;

static string Describe(LimitStatus status) =>
    status.IsUnlimited ? "unlimited" : $"{status.Remaining} of {status.Limit} ({status.PercentUsed:0}% used, {status.Level})";
