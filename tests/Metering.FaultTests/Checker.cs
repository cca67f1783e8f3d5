using Npgsql;

namespace Metering.FaultTests;

/// <summary>One row of the reliability table.</summary>
internal sealed record FaultRow(
    string Scenario,
    int Acknowledged,
    int InLedger,
    long DuplicatesCounted,
    int CountersOffLedger,
    long GrantedOverLimit,
    int UnknownOrInternal,
    int InterviewPeriods,
    string Details);

/// <summary>
/// Reads PostgreSQL and Redis directly after a scenario and compares them with what the clients were told.
/// </summary>
internal static class Checker
{
    /// <summary>interviews_per_day of the starter plan, which the reserves and enforced calls compete for.</summary>
    public const long StarterInterviewsPerDay = 3;

    public static async Task<FaultRow> CheckAsync(string scenario, FaultRig rig, string prefix, LoadResult load, CancellationToken cancellationToken)
    {
        // Counters must equal the ledger (or be absent) within 1 s of the last acknowledged write.
        await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken);

        var builder = new NpgsqlConnectionStringBuilder(rig.Database) { Pooling = false };
        await using var connection = new NpgsqlConnection(builder.ConnectionString);
        await connection.OpenAsync(cancellationToken);
        var like = prefix + "-%";

        // Every event of the scenario's subjects, with its lines.
        var events = new Dictionary<(string, string), (int Count, Dictionary<string, long> Amounts)>();
        await using (var command = new NpgsqlCommand(
            """
            SELECT e.subject_id, e.idempotency_key, e.id, e.reservation_id, l.usage_type, l.amount
            FROM usage_events e JOIN usage_event_lines l ON l.event_id = e.id
            WHERE e.subject_id LIKE @p
            """, connection))
        {
            command.Parameters.AddWithValue("p", like);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            var seenIds = new Dictionary<(string, string), HashSet<long>>();
            while (await reader.ReadAsync(cancellationToken))
            {
                var key = (reader.GetString(0), reader.GetString(1));
                var ids = seenIds.TryGetValue(key, out var s) ? s : seenIds[key] = [];
                ids.Add(reader.GetInt64(2));
                var amounts = events.TryGetValue(key, out var e) ? e.Amounts : new Dictionary<string, long>(StringComparer.Ordinal);
                amounts[reader.GetString(4)] = amounts.GetValueOrDefault(reader.GetString(4)) + reader.GetInt64(5);
                events[key] = (ids.Count, amounts);
            }
        }

        // Acknowledged calls found in the ledger with the amounts sent (once: a second event would double them).
        var inLedger = load.Acknowledged.Count(a =>
            events.TryGetValue(a.Key, out var recorded) && recorded.Count == 1
            && a.Value.Count == recorded.Amounts.Count && a.Value.All(l => recorded.Amounts.GetValueOrDefault(l.Key) == l.Value));
        long duplicates = events.Values.Sum(e => e.Count - 1);

        // Running totals against the events they sum, per (subject, usage type, period).
        var totals = new Dictionary<(string Subject, string UsageType, long Period), (long Total, long Events)>();
        await using (var command = new NpgsqlCommand(
            """
            SELECT k.subject_id, k.usage_type, extract(epoch FROM k.period_start)::bigint,
                   COALESCE(t.total, 0), COALESCE((SELECT SUM(l.amount) FROM usage_event_lines l
                       WHERE l.subject_id = k.subject_id AND l.usage_type = k.usage_type AND l.period_start = k.period_start), 0)
            FROM (SELECT subject_id, usage_type, period_start FROM usage_totals WHERE subject_id LIKE @p
                  UNION SELECT subject_id, usage_type, period_start FROM usage_event_lines WHERE subject_id LIKE @p) k
            LEFT JOIN usage_totals t USING (subject_id, usage_type, period_start)
            """, connection))
        {
            command.Parameters.AddWithValue("p", like);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                totals[(reader.GetString(0), reader.GetString(1), reader.GetInt64(2))] = (reader.GetInt64(3), reader.GetInt64(4));
            }
        }

        duplicates += totals.Values.Sum(t => Math.Abs(t.Total - t.Events));

        // A counter that is present must hold the ledger's total (a missing one is rebuilt on use).
        var counters = await RedisState.CountersAsync(rig.RedisAdmin, prefix);
        var countersOff = counters.Count(c => c.Value != (totals.TryGetValue(c.Key, out var t) ? t.Total : 0));

        // Granted = ledger total + live holds (the ledger's: not ended, not expired by its clock), per subject and day,
        // for the starter subjects whose interviews go through reserves and enforced tracking only.
        var granted = totals
            .Where(t => t.Key.Subject.StartsWith(prefix + "-l", StringComparison.Ordinal) && t.Key.UsageType == Load.Interviews)
            .ToDictionary(t => (t.Key.Subject, t.Key.Period), t => t.Value.Events);
        await using (var command = new NpgsqlCommand(
            """
            SELECT l.subject_id, extract(epoch FROM l.period_start)::bigint, SUM(l.amount)
            FROM hold_lines l JOIN holds h ON h.subject_id = l.subject_id AND h.reservation_id = l.reservation_id
            WHERE l.subject_id LIKE @p AND l.usage_type = @t AND h.ended_at IS NULL AND h.expires_at > now()
            GROUP BY 1, 2
            """, connection))
        {
            command.Parameters.AddWithValue("p", prefix + "-l%");
            command.Parameters.AddWithValue("t", Load.Interviews);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                var key = (reader.GetString(0), reader.GetInt64(1));
                granted[key] = granted.GetValueOrDefault(key) + reader.GetInt64(2);
            }
        }

        var overLimit = granted.Values.Sum(g => Math.Max(0, g - StarterInterviewsPerDay));
        var overSubjects = granted.Count(g => g.Value > StarterInterviewsPerDay);
        var periods = totals.Keys.Where(k => k.UsageType == Load.Interviews).Select(k => k.Period).Distinct().Count();
        var details = $"{load.Describe()}; over the limit on {overSubjects} subject-days; {counters.Count} counters present, {totals.Count} totals, {periods} interview day(s)";
        return new FaultRow(scenario, load.Acknowledged.Count, inLedger, duplicates, countersOff, overLimit, load.UnknownOrInternal, periods, details);
    }
}
