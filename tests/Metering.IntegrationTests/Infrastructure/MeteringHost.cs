using Grpc.Net.Client;
using Metering.Api.V1;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using StackExchange.Redis;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// The real service, hosted in process on the real PostgreSQL and Redis, with a clock the test controls.
/// </summary>
public sealed class MeteringHost : WebApplicationFactory<Program>
{
    private readonly string _postgres;
    private readonly string _redis;
    private readonly IReadOnlyDictionary<string, string?> _settings;
    private readonly Action<IServiceCollection>? _services;
    private GrpcChannel? _channel;

    private MeteringHost(string postgres, string redis, DateTimeOffset start, IReadOnlyDictionary<string, string?> settings, Action<IServiceCollection>? services)
    {
        _postgres = postgres;
        _redis = redis;
        _settings = settings;
        _services = services;
        Clock = new FakeTimeProvider(start);
    }

    /// <summary>What the host logged (as filtered by its configuration).</summary>
    public CapturedLog Log { get; } = new();

    /// <summary>The service's clock; advance it to move between periods.</summary>
    public FakeTimeProvider Clock { get; }

    public string PostgresConnectionString => _postgres;

    public MeteringService.MeteringServiceClient Metering => new(Channel);

    public AdminService.AdminServiceClient Admin => new(Channel);

    /// <summary>Redis as the service sees it, for tests that tamper with the cache.</summary>
    public IDatabase Redis => Services.GetRequiredService<IConnectionMultiplexer>().GetDatabase();

    /// <summary>
    /// What FLUSHDB does to one subject: deletes every key of <paramref name="subject"/> and the catalog versions, on
    /// every primary (one server or each node of a cluster), without emptying a Redis that other tests share.
    /// </summary>
    public async Task ForgetInRedisAsync(string subject)
    {
        var redis = Services.GetRequiredService<IConnectionMultiplexer>();
        foreach (var pattern in new[] { $"mtr:{{{subject}}}:*", "mtr:catalog:*" })
        {
            foreach (var key in await LedgerProbe.KeysAsync(redis, pattern))
            {
                await Redis.KeyDeleteAsync(key);
            }
        }
    }

    private GrpcChannel Channel => _channel ??= ChannelFor(TestKeys.All);

    /// <summary>A new channel to the host whose calls carry <paramref name="apiKey"/> as a bearer token (none when null).</summary>
    public GrpcChannel ChannelFor(string? apiKey) => GrpcChannel.ForAddress(
        Server.BaseAddress,
        new GrpcChannelOptions { HttpHandler = new BearerHandler(apiKey, Server.CreateHandler()) });

    /// <summary>
    /// Starts a host on the run's servers; <paramref name="database"/> defaults to the run's shared ledger database;
    /// <paramref name="services"/> changes the host's services after the service registered its own.
    /// </summary>
    public static async Task<MeteringHost> StartAsync(
        DateTimeOffset start,
        string? database = null,
        IReadOnlyDictionary<string, string?>? settings = null,
        Action<IServiceCollection>? services = null)
    {
        var host = new MeteringHost(database ?? await SharedLedger.ConnectionStringAsync(), Servers.Instance.RedisConnectionString, start, settings ?? new Dictionary<string, string?>(), services);
        _ = host.Server; // builds and starts the host: migrations, seed, catalog
        return host;
    }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Testing");
        foreach (var (key, value) in TestKeys.Settings)
        {
            builder.UseSetting(key, value);
        }

        builder.UseSetting("Metering:MigrateOnStart", "true");
        builder.UseSetting("ConnectionStrings:Postgres", _postgres);
        builder.UseSetting("ConnectionStrings:Redis", _redis);
        builder.UseSetting("Redis:OperationTimeout", TestBudgets.RedisOperationTimeout);
        foreach (var (key, value) in _settings)
        {
            builder.UseSetting(key, value);
        }

        builder.ConfigureLogging(logging => logging.AddProvider(Log));
        builder.ConfigureServices(services =>
        {
            services.RemoveAll<TimeProvider>();
            services.AddSingleton<TimeProvider>(Clock);
            _services?.Invoke(services);
        });
    }

    protected override void Dispose(bool disposing)
    {
        _channel?.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>Adds <c>authorization: Bearer &lt;key&gt;</c> to every request.</summary>
internal sealed class BearerHandler(string? apiKey, HttpMessageHandler inner) : DelegatingHandler(inner)
{
    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (apiKey is not null)
        {
            request.Headers.TryAddWithoutValidation("authorization", $"Bearer {apiKey}");
        }

        return base.SendAsync(request, cancellationToken);
    }
}
