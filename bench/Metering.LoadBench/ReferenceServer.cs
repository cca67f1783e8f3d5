using System.Net;
using Grpc.Core;
using Metering.Api.V1;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using StackExchange.Redis;

namespace Metering.LoadBench;

/// <summary>
/// The floor for a check: a bare grpc-dotnet server whose CheckLimit is one <c>EVALSHA</c> (read one subject's counter
/// hash) against the same Redis, and nothing else: no authentication, validation, catalog or ledger. Runs as its own
/// process (<c>serve-reference &lt;port&gt; &lt;redis&gt;</c>), like the real server, on 127.0.0.1 only.
/// </summary>
internal static class ReferenceServer
{
    /// <summary>Reads one counter hash, as the service's check reads a subject's counters.</summary>
    private const string ReadCounter = "local c = redis.call('HMGET', KEYS[1], 't', 'h') return {tonumber(c[1]) or 0, tonumber(c[2]) or 0}";

    public static async Task<int> RunAsync(int port, string redisConfiguration)
    {
        var redis = await ConnectionMultiplexer.ConnectAsync(redisConfiguration).ConfigureAwait(false);
        var script = new ReadCounterScript(System.Security.Cryptography.SHA1.HashData(System.Text.Encoding.UTF8.GetBytes(ReadCounter)));
        foreach (var server in redis.GetServers())
        {
            await server.ScriptLoadAsync(ReadCounter).ConfigureAwait(false);
        }

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(kestrel =>
            kestrel.Listen(IPAddress.Loopback, port, listen => listen.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton<IConnectionMultiplexer>(redis);
        builder.Services.AddSingleton(script);
        var app = builder.Build();
        app.MapGrpcService<EvalShaCheck>();
        await app.RunAsync().ConfigureAwait(false);
        return 0;
    }

    private sealed record ReadCounterScript(byte[] Sha1);

    private sealed class EvalShaCheck(IConnectionMultiplexer redis, ReadCounterScript script) : MeteringService.MeteringServiceBase
    {
        public override async Task<CheckLimitResponse> CheckLimit(CheckLimitRequest request, ServerCallContext context)
        {
            var usage = request.Usage.Count > 0 ? request.Usage[0] : new UsageAmount { UsageType = "minutes_per_month", Amount = 1 };
            var result = (RedisResult[])(await redis.GetDatabase().ScriptEvaluateAsync(
                script.Sha1, [(RedisKey)$"mtr:{{{request.SubjectId}}}:c:{usage.UsageType}:ref"], []).ConfigureAwait(false))!;
            var used = (long)result[0];
            return new CheckLimitResponse
            {
                Allowed = true,
                PlanId = "reference",
                Limits = { new LimitStatus { UsageType = usage.UsageType, Limit = -1, Used = used, Reserved = (long)result[1], Remaining = -1, Decision = Decision.Allowed } },
            };
        }
    }
}
