using Metering.Core.Errors;
using Metering.Core.Ports;
using Metering.Core.Subscriptions;
using Metering.Storage.Embedded.Entities;
using Microsoft.EntityFrameworkCore;
using NodaTime;

namespace Metering.Storage.Embedded;

/// <summary>Subscriptions of record in the embedded database, with the same audit, fence and outbox as on PostgreSQL.</summary>
public sealed class EmbeddedSubscriptionStore(EmbeddedDatabase database, TimeProvider time) : ISubscriptionStore
{
    /// <summary>Totals of periods that ended longer ago than this are past any late event and are left as they are.</summary>
    private static readonly Duration LateEventWindow = Duration.FromDays(36);

    public Task<SubscriptionOfRecord> GetOrEnrollAsync(string subjectId, string defaultPlanId, Instant now, CancellationToken cancellationToken) =>
        database.WriteAsync(
            async (db, token) =>
            {
                var row = await db.Subscriptions.AsNoTracking().SingleOrDefaultAsync(s => s.SubjectId == subjectId, token);
                if (row is not null)
                {
                    return new SubscriptionOfRecord(ToDomain(row), Enrolled: false);
                }

                row = new SubscriptionRow
                {
                    SubjectId = subjectId,
                    PlanId = defaultPlanId,
                    BillingAnchorDay = Subscription.DefaultBillingAnchorDay,
                    TimeZone = Subscription.DefaultTimeZone,
                    CreatedAt = now.ToUnixTimeTicks(),
                    UpdatedAt = now.ToUnixTimeTicks(),
                    Version = 1,
                };
                db.Subscriptions.Add(row);
                db.SubscriptionChanges.Add(new SubscriptionChangeRow
                {
                    SubjectId = subjectId,
                    Version = 1,
                    ChangedAt = now.ToUnixTimeTicks(),
                    Kind = "enrolled",
                    PlanId = defaultPlanId,
                    BillingAnchorDay = Subscription.DefaultBillingAnchorDay,
                    TimeZone = Subscription.DefaultTimeZone,
                });
                await db.SaveChangesAsync(token);
                return new SubscriptionOfRecord(ToDomain(row), Enrolled: true);
            },
            cancellationToken);

    public Task<SubscriptionChange> SaveAsync(string subjectId, string planId, BillingCalendar calendar, Instant now, CancellationToken cancellationToken) =>
        database.WriteAsync(
            async (db, token) =>
            {
                var row = await db.Subscriptions.SingleOrDefaultAsync(s => s.SubjectId == subjectId, token);
                if (row is not null && row.PlanId == planId && row.BillingAnchorDay == calendar.BillingAnchorDay && row.TimeZone == calendar.TimeZone)
                {
                    // Nothing changes: no new version, no history entry; it may be the retry of a change whose cache
                    // write or fence failed, so it still fences and queues the subscription.
                    return new SubscriptionChange(ToDomain(row), await FenceAndQueueAsync(db, subjectId, token));
                }

                if (!await db.Plans.AnyAsync(p => p.Id == planId, token))
                {
                    // The plan was deleted after the request was validated.
                    throw new InvalidRequestException([new FieldViolation("plan_id", $"unknown plan '{planId}'")]);
                }

                var change = new SubscriptionChangeRow
                {
                    SubjectId = subjectId,
                    ChangedAt = now.ToUnixTimeTicks(),
                    Kind = "changed",
                    PlanId = planId,
                    PreviousPlanId = row?.PlanId,
                    BillingAnchorDay = calendar.BillingAnchorDay,
                    TimeZone = calendar.TimeZone,
                    PreviousBillingAnchorDay = row?.BillingAnchorDay,
                    PreviousTimeZone = row?.TimeZone,
                };
                var calendarChanged = false;
                if (row is null)
                {
                    row = new SubscriptionRow
                    {
                        SubjectId = subjectId,
                        PlanId = planId,
                        BillingAnchorDay = calendar.BillingAnchorDay,
                        TimeZone = calendar.TimeZone,
                        CreatedAt = now.ToUnixTimeTicks(),
                        UpdatedAt = now.ToUnixTimeTicks(),
                        Version = 1,
                    };
                    db.Subscriptions.Add(row);
                }
                else
                {
                    calendarChanged = row.BillingAnchorDay != calendar.BillingAnchorDay || row.TimeZone != calendar.TimeZone;
                    row.PlanId = planId;
                    row.BillingAnchorDay = calendar.BillingAnchorDay;
                    row.TimeZone = calendar.TimeZone;
                    row.UpdatedAt = now.ToUnixTimeTicks();
                    row.Version++;
                }

                change.Version = row.Version;
                db.SubscriptionChanges.Add(change);
                await db.SaveChangesAsync(token);
                if (calendarChanged)
                {
                    // Period bounds moved: drop the recent totals; they are rebuilt from the events under the new
                    // calendar, each with a version above the fence drawn below.
                    var cutoff = (now - LateEventWindow).ToUnixTimeTicks();
                    await db.UsageTotals.Where(t => t.SubjectId == subjectId && t.PeriodEnd > cutoff).ExecuteDeleteAsync(token);
                }

                return new SubscriptionChange(ToDomain(row), await FenceAndQueueAsync(db, subjectId, token));
            },
            cancellationToken);

    /// <summary>Draws the counter fence and queues the subscription for the cache, on every save.</summary>
    private async Task<long> FenceAndQueueAsync(EmbeddedDbContext db, string subjectId, CancellationToken cancellationToken)
    {
        var fence = await EmbeddedUsageLedger.NextVersionAsync(db, cancellationToken);
        db.Outbox.Add(new OutboxRow
        {
            Kind = OutboxRow.SubscriptionKind,
            SubjectId = subjectId,
            CreatedAt = Instant.FromDateTimeOffset(time.GetUtcNow()).ToUnixTimeTicks(),
        });
        await db.SaveChangesAsync(cancellationToken);
        return fence;
    }

    private static Subscription ToDomain(SubscriptionRow row) => new(
        row.SubjectId,
        row.PlanId,
        row.BillingAnchorDay,
        row.TimeZone,
        Instant.FromUnixTimeTicks(row.UpdatedAt),
        row.Version);
}
