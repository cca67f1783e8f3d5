// The chat service: when an interview ends, record the minutes it measured, settling the interview backend's
// reservation. Tracking goes through the client's durable spool: it never throws into the session's flow, and what
// cannot be delivered now is delivered later (also by the next run of this program).
//
//   dotnet run --project samples/ChatService -- <user> <reservation id or -> <session id> <measured minutes>
//
// Metering's address and key: Metering__Client__Address, Metering__Client__ApiKey (defaults: make run's).
using System.Globalization;
using Metering.Client;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

if (args.Length < 4)
{
    Console.Error.WriteLine("usage: ChatService <user> <reservation id or -> <session id> <measured minutes>");
    return 2;
}

var (user, reservation, sessionId) = (args[0], args[1] == "-" ? null : args[1], args[2]);
var minutes = long.Parse(args[3], CultureInfo.InvariantCulture);

var builder = Host.CreateApplicationBuilder();
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Services.AddMeteringClient(options =>
{
    options.ApiKey = "mtr_dev_local_key_not_secret"; // make run's local key; configuration below overrides it
    options.SpoolDirectory = Path.Combine(Path.GetTempPath(), "metering-samples", "chat-service");
    builder.Configuration.GetSection("Metering:Client").Bind(options);
});
using var host = builder.Build();
await host.StartAsync();
var metering = host.Services.GetRequiredService<IMeteringClient>();

var receipt = await metering.TrackAsync(new TrackRequest(user, sessionId, new Usage("minutes_per_month", minutes), new Usage("interviews_per_day", 1))
{
    ReservationId = reservation,
    Attributes = new Dictionary<string, string> { ["source"] = "chat-service" },
});
Console.WriteLine($"✔ Recorded {minutes} minutes of {user}'s interview (key {receipt.IdempotencyKey}, spooled: {receipt.Spooled}).");

using (var wait = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
{
    if (!await metering.FlushAsync(wait.Token))
    {
        Console.WriteLine("  Metering is not answering: the usage waits in the spool and is delivered on the next run.");
        await host.StopAsync();
        return 0;
    }
}

var remaining = await metering.GetRemainingAsync(user);
Console.WriteLine($"  {user} is on the {remaining.PlanId} plan:");
foreach (var limit in remaining.Limits)
{
    var left = limit.IsUnlimited ? "unlimited" : limit.Limit == 0 ? "not in the plan" : $"{limit.Remaining} of {limit.Limit} left";
    Console.WriteLine($"    {limit.UsageType,-28} {left,-22} {limit.PercentUsed,5:0}% {limit.Level}");
}

await host.StopAsync();
return 0;
