using Npgsql;
using NpgsqlTypes;

namespace Metering.LoadBench;

/// <summary>
/// The floor for a tracked event: the durable write alone, through Npgsql, on a scratch database of the same server.
/// Each call inserts one event row under a unique key (ON CONFLICT DO NOTHING) and upserts the running total of its
/// subject, usage type and period, in one transaction: one NpgsqlBatch, which PostgreSQL runs as one implicit
/// transaction and Npgsql sends in one round trip. The commit waits for the WAL flush as the server is configured to.
/// </summary>
internal sealed class DurableWrite(NpgsqlDataSource dataSource)
{
    public const string Schema = """
        CREATE TABLE events (
            subject_id text NOT NULL,
            idempotency_key text NOT NULL,
            usage_type text NOT NULL,
            amount bigint NOT NULL,
            occurred_at timestamptz NOT NULL,
            PRIMARY KEY (subject_id, idempotency_key));
        CREATE TABLE totals (
            subject_id text NOT NULL,
            usage_type text NOT NULL,
            period_start timestamptz NOT NULL,
            total bigint NOT NULL,
            PRIMARY KEY (subject_id, usage_type, period_start));
        """;

    private static readonly DateTime PeriodStart = new(DateTime.UtcNow.Year, DateTime.UtcNow.Month, 1, 0, 0, 0, DateTimeKind.Utc);

    public async Task WriteAsync(string subject, string key, long amount)
    {
        await using var connection = await dataSource.OpenConnectionAsync().ConfigureAwait(false);
        await using var batch = new NpgsqlBatch(connection)
        {
            BatchCommands =
            {
                new NpgsqlBatchCommand("INSERT INTO events (subject_id, idempotency_key, usage_type, amount, occurred_at) VALUES ($1, $2, $3, $4, now()) ON CONFLICT DO NOTHING")
                {
                    Parameters =
                    {
                        new() { Value = subject, NpgsqlDbType = NpgsqlDbType.Text },
                        new() { Value = key, NpgsqlDbType = NpgsqlDbType.Text },
                        new() { Value = "minutes_per_month", NpgsqlDbType = NpgsqlDbType.Text },
                        new() { Value = amount, NpgsqlDbType = NpgsqlDbType.Bigint },
                    },
                },
                new NpgsqlBatchCommand("INSERT INTO totals (subject_id, usage_type, period_start, total) VALUES ($1, $2, $3, $4) ON CONFLICT (subject_id, usage_type, period_start) DO UPDATE SET total = totals.total + EXCLUDED.total")
                {
                    Parameters =
                    {
                        new() { Value = subject, NpgsqlDbType = NpgsqlDbType.Text },
                        new() { Value = "minutes_per_month", NpgsqlDbType = NpgsqlDbType.Text },
                        new() { Value = PeriodStart, NpgsqlDbType = NpgsqlDbType.TimestampTz },
                        new() { Value = amount, NpgsqlDbType = NpgsqlDbType.Bigint },
                    },
                },
            },
        };
        await batch.ExecuteNonQueryAsync().ConfigureAwait(false);
    }
}
