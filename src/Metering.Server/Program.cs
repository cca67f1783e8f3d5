using Metering.Server.Grpc;
using Metering.Server.Hosting;
using Metering.Server.HttpApi;
using Metering.Server.Security;

if (args is ["api-key", .. var apiKeyArguments])
{
    return ApiKeyCommand.Run(apiKeyArguments, Console.Out, Console.Error);
}

var builder = WebApplication.CreateBuilder(args);
builder.Services
    .AddMeteringGrpc()
    .AddMeteringSecurity()
    .AddMeteringCore(builder.Configuration)
    .AddMeteringPostgres(builder.Configuration)
    .AddMeteringRedis(builder.Configuration)
    .AddMeteringTelemetry(builder.Configuration)
    .AddMeteringHttpApi(builder.Configuration);

var app = builder.Build();

if (args.Contains("migrate"))
{
    await StorageInitializer.MigrateAsync(app.Services, CancellationToken.None);
    return 0;
}

if (!app.Services.GetRequiredService<CallerRegistry>().HasCallers && !app.Environment.IsDevelopment())
{
    await Console.Error.WriteLineAsync(
        $"Metering refuses to start: no API keys are configured (Auth:ApiKeys, Auth:ApiKeysFile or Auth:ClientCertificates), so every call would be refused; create one with 'make api-key' (environment: {app.Environment.EnvironmentName}).");
    return 1;
}

await StorageInitializer.InitializeAsync(app.Services, app.Lifetime.ApplicationStopping);

app.ListenForHttpApi();
app.MapMeteringOpenApi();

app.UseMeteringSecurity();
app.MapGrpcService<MeteringGrpcService>().RequireAdminScopeUnlessNamed();
app.MapGrpcService<AdminGrpcService>().RequireAdminScopeUnlessNamed();
app.MapGrpcHealthChecksService();
if (app.Configuration.GetValue("Metering:EnableReflection", true))
{
    app.MapGrpcReflectionService();
}

await app.RunAsync();
return 0;

/// <summary>Entry point; public so that tests can host the service in process.</summary>
public partial class Program;
