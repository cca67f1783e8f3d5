using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;

namespace Metering.Server.Hosting;

/// <summary>
/// <c>Metering.Server health [address] [service]</c>: asks a running server's grpc.health.v1 (default
/// http://127.0.0.1:50051, service <c>readiness</c>) and exits 0 when SERVING, 1 otherwise. The container's HEALTHCHECK,
/// where no grpc client is installed.
/// </summary>
internal static class HealthCommand
{
    public static async Task<int> RunAsync(IReadOnlyList<string> arguments, TextWriter output)
    {
        var address = arguments.Count > 0 ? arguments[0] : $"http://127.0.0.1:{ServerHosting.DefaultGrpcPort}";
        var service = arguments.Count > 1 ? arguments[1] : HealthChecks.Readiness;
        try
        {
            using var channel = GrpcChannel.ForAddress(address);
            var response = await new Health.HealthClient(channel).CheckAsync(
                new HealthCheckRequest { Service = service }, deadline: DateTime.UtcNow.AddSeconds(5));
            await output.WriteLineAsync($"{service}: {response.Status}");
            return response.Status == HealthCheckResponse.Types.ServingStatus.Serving ? 0 : 1;
        }
        catch (RpcException ex)
        {
            await output.WriteLineAsync($"{service}: {ex.StatusCode} ({ex.Status.Detail})");
            return 1;
        }
        catch (UriFormatException ex)
        {
            await output.WriteLineAsync($"usage: Metering.Server health [address] [service]: {ex.Message}");
            return 2;
        }
    }
}
