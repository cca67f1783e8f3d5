using Metering.Server.Grpc;
using Metering.Server.Hosting;

var builder = WebApplication.CreateBuilder(args);
builder.Services
    .AddMeteringGrpc()
    .AddMeteringCore(builder.Configuration)
    .AddMeteringPostgres(builder.Configuration)
    .AddMeteringRedis(builder.Configuration)
    .AddMeteringTelemetry(builder.Configuration);

var app = builder.Build();

if (args.Contains("migrate"))
{
    await StorageInitializer.MigrateAsync(app.Services, CancellationToken.None);
    return;
}

await StorageInitializer.InitializeAsync(app.Services, app.Lifetime.ApplicationStopping);

app.MapGrpcService<MeteringGrpcService>();
app.MapGrpcService<AdminGrpcService>();
app.MapGrpcHealthChecksService();
if (app.Configuration.GetValue("Metering:EnableReflection", true))
{
    app.MapGrpcReflectionService();
}

await app.RunAsync();

/// <summary>Entry point; public so that tests can host the service in process.</summary>
public partial class Program;
