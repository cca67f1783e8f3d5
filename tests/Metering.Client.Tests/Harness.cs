using System.Collections.Concurrent;
using System.Globalization;
using Grpc.Core;
using Grpc.Net.Client;
using Metering.Api.V1;
using Metering.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Metering.Client.Tests;

/// <summary>The real server process on a fixed loopback port, which a test can kill and start again at the same address.</summary>
public sealed class MeteringServer : IAsyncDisposable
{
    /// <summary>The documented local key of appsettings.Development.json.</summary>
    public const string DevKey = "mtr_dev_local_key_not_secret";

    private ServerProcess? _process;

    private MeteringServer(int port) => Port = port;

    public int Port { get; }

    public Uri Address => new($"http://127.0.0.1:{Port.ToString(CultureInfo.InvariantCulture)}");

    public string Output => _process?.Output ?? string.Empty;

    public static async Task<MeteringServer> StartAsync()
    {
        var server = new MeteringServer(TcpPorts.GetFreeLoopbackPort());
        await server.RestartAsync();
        return server;
    }

    /// <summary>Kills the process (SIGKILL of the process tree), as a crash would.</summary>
    public async Task KillAsync()
    {
        if (Interlocked.Exchange(ref _process, null) is { } running)
        {
            await running.DisposeAsync();
        }
    }

    /// <summary>Starts the server (again) on the same port.</summary>
    public async Task RestartAsync()
    {
        await KillAsync();
        _process = await ServerProcess.StartOnPortAsync(ServerProcess.BuiltServerDll(), Port, new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = ClientTestServers.Ledger,
            ["ConnectionStrings__Redis"] = ClientTestServers.Instance.RedisConnectionString,
            ["Auth__ApiKeys__local-dev__RequestsPerSecond"] = "100000",
            ["Auth__ApiKeys__local-dev__Burst"] = "100000",
            ["Logging__LogLevel__Default"] = "Warning",
        });

        // The first call of a new process pays for JIT and connection pools: take it here, not within a test's deadline.
        using var channel = GrpcChannel.ForAddress(Address);
        await new MeteringService.MeteringServiceClient(channel).GetRemainingAsync(
            new GetRemainingRequest { SubjectId = "warm-up" },
            new Metadata { { "authorization", $"Bearer {DevKey}" } },
            deadline: DateTime.UtcNow.AddSeconds(30));
    }

    public ValueTask DisposeAsync() => new(KillAsync());

    /// <summary>Moves a subject to a plan through the AdminService.</summary>
    public async Task SubscribeAsync(string subject, string plan)
    {
        using var channel = GrpcChannel.ForAddress(Address);
        await new AdminService.AdminServiceClient(channel).SetSubscriptionAsync(
            new SetSubscriptionRequest { SubjectId = subject, PlanId = plan },
            new Metadata { { "authorization", $"Bearer {DevKey}" } });
    }
}

/// <summary>A host that uses the client the way a service does: AddMeteringClient, its hosted spool delivery, and logs kept for the test.</summary>
public sealed class ClientHost : IAsyncDisposable
{
    private readonly IHost _host;

    private ClientHost(IHost host, string spoolDirectory, LogCapture logs)
    {
        _host = host;
        SpoolDirectory = spoolDirectory;
        Logs = logs;
    }

    public IMeteringClient Client => _host.Services.GetRequiredService<IMeteringClient>();

    public string SpoolDirectory { get; }

    public LogCapture Logs { get; }

    public static async Task<ClientHost> StartAsync(Uri address, string? spoolDirectory = null, Action<MeteringClientOptions>? configure = null)
    {
        spoolDirectory ??= NewSpoolDirectory();
        var logs = new LogCapture();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { EnvironmentName = "Testing", DisableDefaults = true });
        builder.Logging.ClearProviders().AddProvider(logs).SetMinimumLevel(LogLevel.Information);
        builder.Services.AddMeteringClient(options =>
        {
            options.Address = address;
            options.ApiKey = MeteringServer.DevKey;
            options.SpoolDirectory = spoolDirectory;
            options.RetryInitialBackoff = TimeSpan.FromMilliseconds(100);
            options.RetryMaxBackoff = TimeSpan.FromSeconds(1);

            // Answers, not deadlines, are under test (on a busy machine a first call can take longer than 300 ms);
            // the deadline test sets its own.
            options.CheckTimeout = TimeSpan.FromSeconds(5);
            configure?.Invoke(options);
        });
        var _host = builder.Build();
        await _host.StartAsync();
        return new ClientHost(_host, spoolDirectory, logs);
    }

    public static string NewSpoolDirectory() => Path.Combine(Path.GetTempPath(), $"metering-client-test-{Guid.NewGuid():N}");

    /// <summary>Records waiting in the spool, read from its SQLite file.</summary>
    public long SpoolRecords() => SpoolScalar(SpoolDirectory, "SELECT COUNT(*) FROM spool");

    public long DeadLetters() => SpoolScalar(SpoolDirectory, "SELECT COUNT(*) FROM dead_letters");

    public static long SpoolScalar(string directory, string sql)
    {
        using var connection = new SqliteConnection($"Data Source={Path.Combine(directory, "metering-spool.db")};Pooling=False;Mode=ReadOnly");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return (long)command.ExecuteScalar()!;
    }

    /// <summary>Waits until the spool is empty (or fails after <paramref name="timeout"/>).</summary>
    public async Task WaitUntilDeliveredAsync(TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        while (SpoolRecords() > 0)
        {
            Assert.That(DateTime.UtcNow, Is.LessThan(until), $"the spool still holds {SpoolRecords()} records; logs:\n{Logs}");
            await Task.Delay(100);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync();
        _host.Dispose();
    }
}

/// <summary>Keeps every log line of a host.</summary>
public sealed class LogCapture : ILoggerProvider
{
    private readonly ConcurrentQueue<(LogLevel Level, string Category, string Message)> _lines = new();

    public IReadOnlyList<(LogLevel Level, string Category, string Message)> Lines => [.. _lines];

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    public override string ToString() => string.Join('\n', _lines.Select(l => $"{l.Level} {l.Category}: {l.Message}"));

    private sealed class Logger(LogCapture owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner._lines.Enqueue((logLevel, category, formatter(state, exception)));
    }
}

/// <summary>The ledger, read behind the service's back.</summary>
public static class Ledger
{
    /// <summary>Number of events, distinct keys and the sum of one usage type's amounts of the subjects.</summary>
    public static async Task<(long Events, long DistinctKeys, long Sum)> TotalsAsync(IReadOnlyCollection<string> subjects, string usageType)
    {
        await using var connection = new NpgsqlConnection(ClientTestServers.Ledger);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            """
            SELECT COUNT(*),
                   COUNT(DISTINCT (e.subject_id, e.idempotency_key)),
                   COALESCE(SUM((SELECT SUM(l.amount) FROM usage_event_lines l WHERE l.event_id = e.id AND l.usage_type = @t)), 0)
            FROM usage_events e WHERE e.subject_id = ANY(@s)
            """,
            connection);
        command.Parameters.AddWithValue("s", subjects.ToArray());
        command.Parameters.AddWithValue("t", usageType);
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return (reader.GetInt64(0), reader.GetInt64(1), Convert.ToInt64(reader.GetValue(2), CultureInfo.InvariantCulture));
    }
}
