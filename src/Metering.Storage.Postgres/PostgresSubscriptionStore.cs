using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Core.Telemetry;
using Metering.Storage.Postgres.Entities;
using Microsoft.EntityFrameworkCore;
using NodaTime;
using Npgsql;

namespace Metering.Storage.Postgres;

/// <summary>Subscriptions of record on PostgreSQL.</summary>
public sealed class PostgresSubscriptionStore(IDbContextFactory<MeteringDbContext> contexts, MeteringMetrics? metrics = null) : ISubscriptionStore
{
    private readonly LedgerGuard _guard = new(metrics);

    /// <summary>Totals of periods that ended longer ago than this are past any late event and are left as they are.</summary>
    private static readonly Duration LateEventWindow = Duration.FromDays(36);

    public Task<SubscriptionOfRecord> GetOrEnrollAsync(string subjectId, string defaultPlanId, Instant now, CancellationToken cancellationToken) =>
        _guard.RunAsync("get_or_enroll", token => GetOrEnrollOnceAsync(subjectId, defaultPlanId, now, token), cancellationToken);

    public Task<SubscriptionChange> SaveAsync(string subjectId, string planId, BillingCalendar calendar, Instant now, CancellationToken cancellationToken) =>
        _guard.RunAsync("save_subscription", token => SaveOnceAsync(subjectId, planId, calendar, now, token), cancellationToken);

    /// <summary>
    /// One round trip, known subject or new: the enrolment and its history entry in one statement
    /// (<c>ON CONFLICT DO NOTHING RETURNING</c>: a row only when this call enrolled the subject; for a known subject
    /// the conflict is found in the index, nothing is written and nothing waits for a disk flush), and beside it in the
    /// same batch a read that finds the existing row, or the one a concurrent enrolment committed (the insert waited
    /// for it, so the next statement sees it).
    /// </summary>
    private async Task<SubscriptionOfRecord> GetOrEnrollOnceAsync(string subjectId, string defaultPlanId, Instant now, CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        await db.Database.OpenConnectionAsync(cancellationToken);
        await using var batch = new NpgsqlBatch((NpgsqlConnection)db.Database.GetDbConnection());
        var enroll = new NpgsqlBatchCommand(
            """
            WITH enrolled AS (
                INSERT INTO subscriptions (subject_id, plan_id, billing_anchor_day, time_zone, created_at, updated_at, version)
                VALUES ($1, $2, $3, $4, $5, $5, 1)
                ON CONFLICT (subject_id) DO NOTHING
                RETURNING subject_id, plan_id, billing_anchor_day, time_zone, updated_at, version
            ), recorded AS (
                INSERT INTO subscription_changes (subject_id, version, changed_at, kind, plan_id, billing_anchor_day, time_zone)
                SELECT subject_id, 1, updated_at, 'enrolled', plan_id, billing_anchor_day, time_zone FROM enrolled
            )
            SELECT subject_id, plan_id, billing_anchor_day, time_zone, updated_at, version FROM enrolled
            """);
        enroll.Parameters.Add(new NpgsqlParameter { Value = subjectId });
        enroll.Parameters.Add(new NpgsqlParameter { Value = defaultPlanId });
        enroll.Parameters.Add(new NpgsqlParameter { Value = Subscription.DefaultBillingAnchorDay });
        enroll.Parameters.Add(new NpgsqlParameter { Value = Subscription.DefaultTimeZone });
        enroll.Parameters.Add(new NpgsqlParameter { Value = now.ToDateTimeUtc(), NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.TimestampTz });
        var read = new NpgsqlBatchCommand(
            "SELECT subject_id, plan_id, billing_anchor_day, time_zone, updated_at, version FROM subscriptions WHERE subject_id = $1");
        read.Parameters.Add(new NpgsqlParameter { Value = subjectId });
        batch.BatchCommands.Add(enroll);
        batch.BatchCommands.Add(read);

        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        var enrolled = true;
        do
        {
            if (await reader.ReadAsync(cancellationToken))
            {
                return new SubscriptionOfRecord(
                    new Subscription(
                        reader.GetString(0),
                        reader.GetString(1),
                        reader.GetInt32(2),
                        reader.GetString(3),
                        Instant.FromDateTimeUtc(DateTime.SpecifyKind(reader.GetDateTime(4), DateTimeKind.Utc)),
                        reader.GetInt64(5)),
                    enrolled);
            }

            enrolled = false;
        }
        while (await reader.NextResultAsync(cancellationToken));

        throw new InvalidOperationException($"The subscription of '{subjectId}' was neither enrolled nor found.");
    }

    private async Task<SubscriptionChange> SaveOnceAsync(string subjectId, string planId, BillingCalendar calendar, Instant now, CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        await using var transaction = await db.Database.BeginTransactionAsync(cancellationToken);
        var at = now.ToDateTimeUtc();
        var row = await db.Subscriptions
            .FromSql($"SELECT * FROM subscriptions WHERE subject_id = {subjectId} FOR UPDATE")
            .SingleOrDefaultAsync(cancellationToken);
        var calendarChanged = false;
        var change = new SubscriptionChangeRow
        {
            SubjectId = subjectId,
            ChangedAt = at,
            Kind = "changed",
            PlanId = planId,
            PreviousPlanId = row?.PlanId,
            BillingAnchorDay = calendar.BillingAnchorDay,
            TimeZone = calendar.TimeZone,
            PreviousBillingAnchorDay = row?.BillingAnchorDay,
            PreviousTimeZone = row?.TimeZone,
        };
        if (row is null)
        {
            row = new SubscriptionRow
            {
                SubjectId = subjectId,
                PlanId = planId,
                BillingAnchorDay = calendar.BillingAnchorDay,
                TimeZone = calendar.TimeZone,
                CreatedAt = at,
                UpdatedAt = at,
                Version = 1,
            };
            db.Subscriptions.Add(row);
        }
        else if (row.PlanId == planId && row.BillingAnchorDay == calendar.BillingAnchorDay && row.TimeZone == calendar.TimeZone)
        {
            // Nothing changes: no new version, no history entry. It may be the retry of a change whose cache write or
            // fence failed, so it still fences and queues the subscription for the cache.
            var again = await FenceAndQueueAsync(db, subjectId, cancellationToken);
            await transaction.CommitAsync(cancellationToken);
            return new SubscriptionChange(ToDomain(row), again);
        }
        else
        {
            calendarChanged = row.BillingAnchorDay != calendar.BillingAnchorDay || row.TimeZone != calendar.TimeZone;
            row.PlanId = planId;
            row.BillingAnchorDay = calendar.BillingAnchorDay;
            row.TimeZone = calendar.TimeZone;
            row.UpdatedAt = at;
            row.Version++;
        }

        change.Version = row.Version;
        db.SubscriptionChanges.Add(change);
        try
        {
            await db.SaveChangesAsync(cancellationToken);
        }
        catch (DbUpdateException ex) when (ex.InnerException is Npgsql.PostgresException { SqlState: Npgsql.PostgresErrorCodes.ForeignKeyViolation })
        {
            // The plan was deleted after the request was validated.
            throw new Core.Errors.InvalidRequestException([new Core.Errors.FieldViolation("plan_id", $"unknown plan '{planId}'")]);
        }

        if (calendarChanged)
        {
            // Period bounds moved: drop the recent totals; they are rebuilt from the events under the new calendar,
            // each with a version above the fence drawn below.
            var cutoff = (now - LateEventWindow).ToDateTimeUtc();
            await db.UsageTotals
                .Where(t => t.SubjectId == subjectId && t.PeriodEnd > cutoff)
                .ExecuteDeleteAsync(cancellationToken);
        }

        var fence = await FenceAndQueueAsync(db, subjectId, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return new SubscriptionChange(ToDomain(row), fence);
    }

    /// <summary>
    /// Draws the counter fence and queues the subscription for the shared cache. On every save, not only on a calendar
    /// change: a retry after a fence that failed to reach the cache sees an unchanged calendar, and must still fence.
    /// </summary>
    private static async Task<long> FenceAndQueueAsync(MeteringDbContext db, string subjectId, CancellationToken cancellationToken)
    {
        var fence = (await db.Database
            .SqlQuery<long>($"SELECT nextval('usage_total_versions') AS \"Value\"")
            .ToListAsync(cancellationToken))[0];
        await db.Database.ExecuteSqlAsync($"INSERT INTO counter_outbox (kind, subject_id) VALUES ('subscription', {subjectId})", cancellationToken);
        return fence;
    }

    private static Subscription ToDomain(SubscriptionRow row) => new(
        row.SubjectId,
        row.PlanId,
        row.BillingAnchorDay,
        row.TimeZone,
        Instant.FromDateTimeUtc(DateTime.SpecifyKind(row.UpdatedAt, DateTimeKind.Utc)),
        row.Version);
}
