using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;

namespace Metering.Client.Spool;

/// <summary>What a spooled record asks the service to do.</summary>
internal enum SpoolKind
{
    /// <summary>A TrackUsageRequest.</summary>
    Track = 1,

    /// <summary>A ReleaseReservationRequest.</summary>
    Release = 2,
}

/// <summary>A record waiting in the spool: the request's protobuf bytes, sent as they are on every attempt.</summary>
internal sealed record SpoolRecord(long Id, SpoolKind Kind, string SubjectId, string Key, byte[] Payload, long CreatedAtMs, int Attempts);

/// <summary>
/// The durable local queue of requests to deliver: one SQLite database in <see cref="MeteringClientOptions.SpoolDirectory"/>
/// (WAL, synchronous=FULL: a record is on disk when <see cref="TryAdd"/> returns). A record leaves only when the service
/// acknowledged it, or into the dead letters (kept in the same database) when it can never be delivered.
/// </summary>
internal sealed class UsageSpool : IDisposable
{
    public const string FileName = "metering-spool.db";

    private readonly SqliteConnection _connection;
    private readonly Lock _gate = new();
    private readonly int _maxRecords;
    private readonly SemaphoreSlim _added = new(0, 1);

    public UsageSpool(IOptions<MeteringClientOptions> options)
    {
        var settings = options.Value;
        _maxRecords = settings.SpoolMaxRecords;
        Directory.CreateDirectory(settings.SpoolDirectory);
        Path = System.IO.Path.Combine(settings.SpoolDirectory, FileName);
        _connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = Path,
            Pooling = false,
            DefaultTimeout = 30,
        }.ToString());
        _connection.Open();
        Execute("""
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = FULL;
            PRAGMA busy_timeout = 5000;
            CREATE TABLE IF NOT EXISTS spool (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                kind INTEGER NOT NULL,
                subject_id TEXT NOT NULL,
                key TEXT NOT NULL,
                payload BLOB NOT NULL,
                created_at_ms INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT
            );
            CREATE TABLE IF NOT EXISTS dead_letters (
                id INTEGER PRIMARY KEY,
                kind INTEGER NOT NULL,
                subject_id TEXT NOT NULL,
                key TEXT NOT NULL,
                payload BLOB NOT NULL,
                created_at_ms INTEGER NOT NULL,
                attempts INTEGER NOT NULL,
                reason TEXT NOT NULL,
                dead_at_ms INTEGER NOT NULL
            );
            """);
    }

    /// <summary>The database file.</summary>
    public string Path { get; }

    /// <summary>Completes when a record was added since the last wait (or at once if one was).</summary>
    public Task WaitForRecordAsync(TimeSpan timeout, CancellationToken cancellationToken) => _added.WaitAsync(timeout, cancellationToken);

    /// <summary>Stores a record durably; false when the spool is full.</summary>
    public bool TryAdd(SpoolKind kind, string subjectId, string key, byte[] payload, long nowMs)
    {
        lock (_gate)
        {
            if (CountLocked() >= _maxRecords)
            {
                return false;
            }

            using var command = _connection.CreateCommand();
            command.CommandText = "INSERT INTO spool (kind, subject_id, key, payload, created_at_ms) VALUES ($kind, $subject, $key, $payload, $now)";
            command.Parameters.AddWithValue("$kind", (int)kind);
            command.Parameters.AddWithValue("$subject", subjectId);
            command.Parameters.AddWithValue("$key", key);
            command.Parameters.AddWithValue("$payload", payload);
            command.Parameters.AddWithValue("$now", nowMs);
            command.ExecuteNonQuery();
        }

        try
        {
            _added.Release();
        }
        catch (SemaphoreFullException)
        {
            // The delivery worker is already told.
        }

        return true;
    }

    /// <summary>The oldest records, in the order they were added.</summary>
    public IReadOnlyList<SpoolRecord> Oldest(int max)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT id, kind, subject_id, key, payload, created_at_ms, attempts FROM spool ORDER BY id LIMIT $max";
            command.Parameters.AddWithValue("$max", max);
            using var reader = command.ExecuteReader();
            var records = new List<SpoolRecord>();
            while (reader.Read())
            {
                records.Add(new SpoolRecord(
                    reader.GetInt64(0),
                    (SpoolKind)reader.GetInt32(1),
                    reader.GetString(2),
                    reader.GetString(3),
                    (byte[])reader.GetValue(4),
                    reader.GetInt64(5),
                    reader.GetInt32(6)));
            }

            return records;
        }
    }

    /// <summary>Removes an acknowledged record.</summary>
    public void Remove(long id)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "DELETE FROM spool WHERE id = $id";
            command.Parameters.AddWithValue("$id", id);
            command.ExecuteNonQuery();
        }
    }

    /// <summary>Counts a failed attempt.</summary>
    public void RecordFailure(long id, string error)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "UPDATE spool SET attempts = attempts + 1, last_error = $error WHERE id = $id";
            command.Parameters.AddWithValue("$id", id);
            command.Parameters.AddWithValue("$error", error);
            command.ExecuteNonQuery();
        }
    }

    /// <summary>Moves a record that can never be delivered to the dead letters, with the reason.</summary>
    public void DeadLetter(long id, string reason, long nowMs)
    {
        lock (_gate)
        {
            using var transaction = _connection.BeginTransaction();
            using (var copy = _connection.CreateCommand())
            {
                copy.Transaction = transaction;
                copy.CommandText = """
                    INSERT OR REPLACE INTO dead_letters (id, kind, subject_id, key, payload, created_at_ms, attempts, reason, dead_at_ms)
                    SELECT id, kind, subject_id, key, payload, created_at_ms, attempts, $reason, $now FROM spool WHERE id = $id
                    """;
                copy.Parameters.AddWithValue("$id", id);
                copy.Parameters.AddWithValue("$reason", reason);
                copy.Parameters.AddWithValue("$now", nowMs);
                copy.ExecuteNonQuery();
            }

            using (var delete = _connection.CreateCommand())
            {
                delete.Transaction = transaction;
                delete.CommandText = "DELETE FROM spool WHERE id = $id";
                delete.Parameters.AddWithValue("$id", id);
                delete.ExecuteNonQuery();
            }

            transaction.Commit();
        }
    }

    /// <summary>Records waiting to be delivered.</summary>
    public long Count()
    {
        lock (_gate)
        {
            return CountLocked();
        }
    }

    /// <summary>Records given up on.</summary>
    public long DeadLetterCount()
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT COUNT(*) FROM dead_letters";
            return (long)command.ExecuteScalar()!;
        }
    }

    /// <summary>When the oldest waiting record was added (Unix ms), or null when the spool is empty.</summary>
    public long? OldestCreatedAtMs()
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT MIN(created_at_ms) FROM spool";
            return command.ExecuteScalar() is long value ? value : null;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _connection.Dispose();
        }

        _added.Dispose();
    }

    private long CountLocked()
    {
        using var command = _connection.CreateCommand();
        command.CommandText = "SELECT COUNT(*) FROM spool";
        return (long)command.ExecuteScalar()!;
    }

    private void Execute(string sql)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
