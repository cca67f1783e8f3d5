using System.Globalization;
using Grpc.Core;
using Grpc.Net.Client;
using Metering.Api.V1;
using Metering.Testing;
using Npgsql;
using StackExchange.Redis;

namespace Metering.FaultTests;

/// <summary>
/// What the fault scenarios run on, all local child processes on 127.0.0.1: one PostgreSQL (max_connections=100, as
/// a stock server), one Redis primary, and two Metering server instances on the same ledger. Faults are injected on
/// these processes only, by their process ids.
/// </summary>
internal sealed class FaultRig : IAsyncDisposable
{
    /// <summary>The Development key (every scope) that the instances accept; they run in Development.</summary>
    public const string Key = "mtr_dev_local_key_not_secret";

    private readonly List<GrpcChannel> _retiredChannels = [];
    private readonly Instance?[] _instances = new Instance?[2];

    private FaultRig(LocalServer postgres, LocalServer redis, string database)
    {
        Postgres = postgres;
        Redis = redis;
        Database = database;
        RedisAdmin = ConnectAdmin(redis);
    }

    public LocalServer Postgres { get; }

    /// <summary>The Redis the instances use now (a promoted replica after a failover).</summary>
    public LocalServer Redis { get; private set; }

    /// <summary>An admin connection to <see cref="Redis"/>, for faults and the checker.</summary>
    public ConnectionMultiplexer RedisAdmin { get; private set; }

    /// <summary>Npgsql connection string of the ledger database.</summary>
    public string Database { get; }

    public IServer RedisServer => RedisAdmin.GetServer(RedisAdmin.GetEndPoints().Single());

    /// <summary>Instance <paramref name="index"/> (0 or 1) as it is now; a killed one stays until restarted.</summary>
    public Instance this[int index] => _instances[index] ?? throw new InvalidOperationException($"instance {index} is not started");

    public static async Task<FaultRig> StartAsync(CancellationToken cancellationToken)
    {
        var postgres = await LocalServer.StartPostgresAsync(cancellationToken, "max_connections=100");
        var redis = await LocalServer.StartRedisAsync(cancellationToken);
        await using (var connection = new NpgsqlConnection(postgres.ConnectionString))
        {
            await connection.OpenAsync(cancellationToken);
            await using var create = new NpgsqlCommand("CREATE DATABASE metering_faults TEMPLATE template0", connection);
            await create.ExecuteNonQueryAsync(cancellationToken);
        }

        var database = new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { Database = "metering_faults" }.ConnectionString;
        var rig = new FaultRig(postgres, redis, database);

        // One after the other: the first one migrates the new database.
        await rig.StartInstanceAsync(0, TimeSpan.Zero, cancellationToken);
        await rig.StartInstanceAsync(1, TimeSpan.Zero, cancellationToken);
        return rig;
    }

    /// <summary>Both instances running with these clock offsets; restarts only those that are dead or differ.</summary>
    public async Task EnsureInstancesAsync(TimeSpan offset0, TimeSpan offset1, CancellationToken cancellationToken)
    {
        var wanted = new[] { offset0, offset1 };
        await Task.WhenAll(Enumerable.Range(0, 2).Select(async i =>
        {
            if (_instances[i] is not { Alive: true } instance || instance.ClockOffset != wanted[i])
            {
                await StartInstanceAsync(i, wanted[i], cancellationToken);
            }
        }));
    }

    /// <summary>Stops instance <paramref name="index"/> (if running) and starts it again against the current Redis.</summary>
    public async Task StartInstanceAsync(int index, TimeSpan clockOffset, CancellationToken cancellationToken)
    {
        await StopInstanceAsync(index);
        var environment = new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = Database,
            ["ConnectionStrings__Redis"] = $"127.0.0.1:{Redis.Port.ToString(CultureInfo.InvariantCulture)}",
            ["Auth__ApiKeys__local-dev__RequestsPerSecond"] = "1000000",
            ["Auth__ApiKeys__local-dev__Burst"] = "1000000",
            ["Logging__LogLevel__Default"] = "Error",
            ["Metering__Testing__ClockOffset"] = clockOffset.ToString("c", CultureInfo.InvariantCulture),
        };
        var process = await ServerProcess.StartAsync(ServerProcess.BuiltServerDll(), environment, cancellationToken);
        var channel = GrpcChannel.ForAddress(process.Address, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true, ConnectTimeout = TimeSpan.FromSeconds(2) },
        });
        var instance = new Instance(process, channel, clockOffset);
        await instance.WaitUntilServingAsync(cancellationToken);
        _instances[index] = instance;
    }

    /// <summary>SIGKILL of instance <paramref name="index"/> (its process tree, by process id).</summary>
    public async Task StopInstanceAsync(int index)
    {
        if (_instances[index] is { } old)
        {
            old.Alive = false;
            await old.Process.DisposeAsync();
            _retiredChannels.Add(old.Channel); // calls still on it end UNAVAILABLE; disposed with the rig
        }
    }

    /// <summary>Makes <paramref name="promoted"/> the Redis of the rig and restarts both instances on it.</summary>
    public async Task SwitchRedisAsync(LocalServer promoted, CancellationToken cancellationToken)
    {
        var old = Redis;
        var oldAdmin = RedisAdmin;
        Redis = promoted;
        RedisAdmin = ConnectAdmin(promoted);
        await Task.WhenAll(StartInstanceAsync(0, this[0].ClockOffset, cancellationToken), StartInstanceAsync(1, this[1].ClockOffset, cancellationToken));
        await oldAdmin.DisposeAsync();
        await old.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = 0; i < _instances.Length; i++)
        {
            await StopInstanceAsync(i);
        }

        foreach (var channel in _retiredChannels)
        {
            channel.Dispose();
        }

        await RedisAdmin.DisposeAsync();
        NpgsqlConnection.ClearAllPools();
        await Redis.DisposeAsync();
        await Postgres.DisposeAsync();
    }

    private static ConnectionMultiplexer ConnectAdmin(LocalServer redis)
    {
        var options = ConfigurationOptions.Parse(redis.ConnectionString);
        options.AbortOnConnectFail = false;
        options.ConnectTimeout = 2000;
        options.SyncTimeout = 5000;
        options.AsyncTimeout = 5000;
        return ConnectionMultiplexer.Connect(options);
    }
}

/// <summary>One Metering server process and a channel to it.</summary>
internal sealed class Instance(ServerProcess process, GrpcChannel channel, TimeSpan clockOffset)
{
    private static readonly Metadata Authorization = new() { { "authorization", $"Bearer {FaultRig.Key}" } };

    public ServerProcess Process { get; } = process;

    public GrpcChannel Channel { get; } = channel;

    public TimeSpan ClockOffset { get; } = clockOffset;

    public bool Alive { get; set; } = true;

    public MeteringService.MeteringServiceClient Metering { get; } = new(channel);

    public AdminService.AdminServiceClient Admin { get; } = new(channel);

    public static CallOptions Options(TimeSpan deadline, CancellationToken cancellationToken = default) =>
        new(Authorization, DateTime.UtcNow + deadline, cancellationToken);

    /// <summary>Waits (up to 60 s) until the instance answers a read.</summary>
    public async Task WaitUntilServingAsync(CancellationToken cancellationToken)
    {
        var until = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                await Metering.GetRemainingAsync(new GetRemainingRequest { SubjectId = "fault-probe" }, Options(TimeSpan.FromSeconds(5), cancellationToken));
                return;
            }
            catch (RpcException) when (DateTime.UtcNow < until && !Process.HasExited)
            {
                await Task.Delay(200, cancellationToken);
            }
            catch (RpcException e)
            {
                throw new InvalidOperationException($"The instance at {Process.Address} does not serve: {e.Status}. Output:\n{Process.Output}", e);
            }
        }
    }
}
