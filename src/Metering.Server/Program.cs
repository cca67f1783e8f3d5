using Metering.Server.Grpc;
using Metering.Server.Hosting;
using Metering.Server.HttpApi;
using Metering.Server.Security;
using Metering.Server.Telemetry;
using Microsoft.Extensions.Options;

if (args is ["api-key", .. var apiKeyArguments])
{
    return ApiKeyCommand.Run(apiKeyArguments, Console.Out, Console.Error);
}

if (args is ["health", .. var healthArguments])
{
    return await HealthCommand.RunAsync(healthArguments, Console.Out);
}

try
{
    var builder = WebApplication.CreateBuilder(ServerHosting.Options(args));
    builder.ConfigureMeteringServer();
    builder.Services
        .AddMeteringGrpc()
        .AddMeteringSecurity()
        .AddMeteringCore(builder.Configuration)
        .AddMeteringStorage(builder.Configuration, builder.Environment)
        .AddMeteringTelemetry(builder.Configuration)
        .AddMeteringHttpApi(builder.Configuration);

    var app = builder.Build();
    app.Services.GetRequiredService<IStartupValidator>().Validate();

    if (args.Contains("migrate"))
    {
        await StorageInitializer.MigrateAsync(app.Services, seed: true, CancellationToken.None);
        return 0;
    }

    if (!app.Services.GetRequiredService<CallerRegistry>().HasCallers && !app.Environment.IsDevelopment())
    {
        return StartupFailure.ConfigurationError(
            $"Metering refuses to start: no API keys are configured (Auth:ApiKeys, Auth:ApiKeysFile or Auth:ClientCertificates), so every call would be refused; create one with 'make api-key' (environment: {app.Environment.EnvironmentName}).");
    }

    await StorageInitializer.InitializeAsync(app.Services, app.MigrateOnStart(), app.Lifetime.ApplicationStopping);

    app.ListenForHttpApi();
    app.MapMeteringOpenApi();

    app.UseMiddleware<RpcMetricsMiddleware>();
    app.UseMeteringSecurity();
    app.MapGrpcService<MeteringGrpcService>().RequireAdminScopeUnlessNamed();
    app.MapGrpcService<AdminGrpcService>().RequireAdminScopeUnlessNamed();
    app.MapGrpcHealthChecksService();
    if (app.Configuration.GetValue("Metering:EnableReflection", true))
    {
        app.MapGrpcReflectionService();
    }

    app.MapMeteringMetrics();

    await app.RunAsync();
    return 0;
}
catch (OptionsValidationException ex)
{
    return StartupFailure.ConfigurationError($"Metering cannot start: {string.Join("; ", ex.Failures)}.");
}
catch (InvalidOperationException ex) when (ex.InnerException is FormatException or OverflowException or ArgumentException)
{
    return StartupFailure.ConfigurationError($"Metering cannot start: {ex.Message} {ex.InnerException.Message}");
}
catch (StartupException ex)
{
    return StartupFailure.ConfigurationError($"Metering cannot start: {ex.Message}");
}

/// <summary>Entry point; public so that tests can host the service in process.</summary>
public partial class Program;
