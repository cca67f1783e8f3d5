using Metering.Core.Errors;
using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Microsoft.Extensions.Logging;

namespace Metering.Storage.Embedded;

/// <summary>Settings of the embedded backend (section <c>Storage:Embedded</c>).</summary>
public sealed class EmbeddedStorageOptions
{
    public const string DefaultPath = ".local/metering.db";

    /// <summary>The SQLite database file; a relative path is taken from the working directory.</summary>
    public string Path { get; set; } = DefaultPath;
}

/// <summary>Another process has the database file open: the embedded backend serves one process only.</summary>
public sealed class DatabaseInUseException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// The embedded ledger's SQLite file, owned by this process alone. Opening it takes an exclusive lock on
/// <c>&lt;file&gt;.lock</c> (held until the process ends), applies the migrations and seeds the catalog. Every unit of
/// work runs in one transaction under one process-wide lock, so each sees a state no one else changes meanwhile: the
/// per-subject lock of the PostgreSQL ledger, made coarse, which one process can afford. A failure of the file (disk
/// full, I/O error) surfaces as <see cref="StoreUnavailableException"/>.
/// </summary>
public sealed partial class EmbeddedDatabase(EmbeddedStorageOptions options, CatalogSeedSource seed, ILogger<EmbeddedDatabase> logger) : IDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly string _path = System.IO.Path.GetFullPath(options.Path);
    private DbContextOptions<EmbeddedDbContext>? _contextOptions;
    private FileStream? _lock;
    private bool _disposed;

    /// <summary>The database file's full path.</summary>
    public string Path => _path;

    /// <summary>Takes the file's lock, migrates and seeds; later calls return at once. Throws <see cref="DatabaseInUseException"/>.</summary>
    public async Task OpenAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _contextOptions) is not null)
        {
            return;
        }

        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_contextOptions is not null)
            {
                return;
            }

            ObjectDisposedException.ThrowIf(_disposed, this);
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(_path)!);
            _lock = TakeLock(_path);
            var contextOptions = new DbContextOptionsBuilder<EmbeddedDbContext>()
                .UseSqlite(new SqliteConnectionStringBuilder { DataSource = _path, Pooling = true, DefaultTimeout = 5 }.ToString())
                .Options;
            await using (var db = new EmbeddedDbContext(contextOptions))
            {
                var pending = (await db.Database.GetPendingMigrationsAsync(cancellationToken)).ToList();
                if (pending.Count > 0)
                {
                    await db.Database.MigrateAsync(cancellationToken);
                    LogMigrated(_path, pending.Count);
                }

                await EmbeddedCatalogStore.SeedAsync(db, seed.Seed, cancellationToken);
            }

            Volatile.Write(ref _contextOptions, contextOptions);
            LogOpened(_path);
        }
        catch
        {
            _lock?.Dispose();
            _lock = null;
            throw;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Runs <paramref name="work"/> in one transaction under the process-wide lock, committing when it returns.</summary>
    public Task<T> WriteAsync<T>(Func<EmbeddedDbContext, CancellationToken, Task<T>> work, CancellationToken cancellationToken) =>
        RunAsync(work, transactional: true, cancellationToken);

    /// <summary>Runs <paramref name="work"/> under the process-wide lock, without a transaction of its own.</summary>
    public Task<T> ReadAsync<T>(Func<EmbeddedDbContext, CancellationToken, Task<T>> work, CancellationToken cancellationToken) =>
        RunAsync(work, transactional: false, cancellationToken);

    /// <summary>Whether the database file answers a query (the health check); does not wait for the write lock.</summary>
    public async Task<bool> CanConnectAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _contextOptions) is not { } contextOptions || !File.Exists(_path))
        {
            return false;
        }

        await using var db = new EmbeddedDbContext(contextOptions);
        return await db.Database.CanConnectAsync(cancellationToken);
    }

    private async Task<T> RunAsync<T>(Func<EmbeddedDbContext, CancellationToken, Task<T>> work, bool transactional, CancellationToken cancellationToken)
    {
        await OpenAsync(cancellationToken);
        await _gate.WaitAsync(cancellationToken);
        try
        {
            await using var db = new EmbeddedDbContext(_contextOptions!);
            if (!transactional)
            {
                return await work(db, cancellationToken);
            }

            // Once begun, a transaction runs to its commit or rollback: the caller's deadline does not cut a write in half.
            await using var transaction = await db.Database.BeginTransactionAsync(CancellationToken.None);
            var result = await work(db, cancellationToken);
            if (db.Database.CurrentTransaction is IDbContextTransaction current)
            {
                await current.CommitAsync(CancellationToken.None);
            }

            return result;
        }
        catch (Exception ex) when (IsUnavailable(ex))
        {
            throw new StoreUnavailableException(StoreUnavailableException.Ledger, ex);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>The database file failed (cannot be opened, is busy, full or unreadable), as opposed to a constraint or a bug.</summary>
    private static bool IsUnavailable(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is SqliteException sqlite)
            {
                return sqlite.SqliteErrorCode is SQLitePCL.raw.SQLITE_BUSY or SQLitePCL.raw.SQLITE_LOCKED or SQLitePCL.raw.SQLITE_IOERR
                    or SQLitePCL.raw.SQLITE_FULL or SQLitePCL.raw.SQLITE_CANTOPEN or SQLitePCL.raw.SQLITE_READONLY
                    or SQLitePCL.raw.SQLITE_CORRUPT or SQLitePCL.raw.SQLITE_NOTADB or SQLitePCL.raw.SQLITE_PROTOCOL;
            }

            if (e is IOException)
            {
                return true;
            }
        }

        return false;
    }

    private static FileStream TakeLock(string path)
    {
        var lockPath = path + ".lock";
        try
        {
            var stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
            stream.SetLength(0);
            var pid = System.Text.Encoding.ASCII.GetBytes(Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
            stream.Write(pid);
            stream.Flush();
            return stream;
        }
        catch (IOException ex)
        {
            throw new DatabaseInUseException(
                $"the embedded database {path} is in use by another process (it holds {lockPath}); the embedded backend serves one process only. Stop the other process, or set Storage:Embedded:Path to another file.",
                ex);
        }
    }

    public void Dispose()
    {
        _disposed = true;
        _lock?.Dispose();
        _lock = null;
        _gate.Dispose();
        SqliteConnection.ClearAllPools();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded storage: applied {Count} migration(s) to {Path}")]
    private partial void LogMigrated(string path, int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded storage: {Path} (one process only; counters and caches in this process)")]
    private partial void LogOpened(string path);
}
