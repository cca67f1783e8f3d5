using System.Text.Json;
using Metering.Storage.Postgres.Entities;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.ChangeTracking;

namespace Metering.Storage.Postgres;

/// <summary>The ledger's schema: catalog, subscriptions, usage events and period totals.</summary>
public sealed class MeteringDbContext(DbContextOptions<MeteringDbContext> options) : DbContext(options)
{
    /// <summary>The sequence every total's version is drawn from.</summary>
    public const string TotalVersionSequence = "usage_total_versions";

    public DbSet<UsageTypeRow> UsageTypes => Set<UsageTypeRow>();

    public DbSet<PlanRow> Plans => Set<PlanRow>();

    public DbSet<PlanLimitRow> PlanLimits => Set<PlanLimitRow>();

    public DbSet<CatalogStateRow> CatalogState => Set<CatalogStateRow>();

    public DbSet<CatalogChangeRow> CatalogChanges => Set<CatalogChangeRow>();

    public DbSet<SubscriptionRow> Subscriptions => Set<SubscriptionRow>();

    public DbSet<SubscriptionChangeRow> SubscriptionChanges => Set<SubscriptionChangeRow>();

    public DbSet<UsageEventRow> UsageEvents => Set<UsageEventRow>();

    public DbSet<UsageEventLineRow> UsageEventLines => Set<UsageEventLineRow>();

    public DbSet<UsageTotalRow> UsageTotals => Set<UsageTotalRow>();

    public DbSet<HoldRow> Holds => Set<HoldRow>();

    public DbSet<HoldLineRow> HoldLines => Set<HoldLineRow>();

    public DbSet<CounterOutboxRow> CounterOutbox => Set<CounterOutboxRow>();

    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        modelBuilder.HasSequence<long>(TotalVersionSequence);

        modelBuilder.Entity<UsageTypeRow>(e =>
        {
            e.ToTable("usage_types");
            e.HasKey(x => x.Name);
            e.Property(x => x.Name).HasColumnName("name").HasMaxLength(64);
            e.Property(x => x.Unit).HasColumnName("unit").HasMaxLength(32);
            e.Property(x => x.ResetPeriod).HasColumnName("reset_period").HasMaxLength(8);
            e.Property(x => x.DegradedPolicy).HasColumnName("degraded_policy").HasMaxLength(8).HasDefaultValue("ledger");
        });

        modelBuilder.Entity<PlanRow>(e =>
        {
            e.ToTable("plans");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).HasColumnName("id").HasMaxLength(64);
            e.Property(x => x.DisplayName).HasColumnName("display_name").HasMaxLength(128);
            e.Property(x => x.Rank).HasColumnName("rank");
            e.Property(x => x.Version).HasColumnName("version").HasDefaultValue(1L);
            e.HasMany(x => x.Limits).WithOne().HasForeignKey(x => x.PlanId).OnDelete(DeleteBehavior.Cascade);
        });

        modelBuilder.Entity<CatalogStateRow>(e =>
        {
            e.ToTable("catalog_state", t => t.HasCheckConstraint("CK_catalog_state_single_row", "id = 1"));
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).HasColumnName("id").ValueGeneratedNever();
            e.Property(x => x.CatalogId).HasColumnName("catalog_id");
            e.Property(x => x.Version).HasColumnName("version");
        });

        modelBuilder.Entity<CatalogChangeRow>(e =>
        {
            e.ToTable("catalog_changes");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).HasColumnName("id").UseIdentityAlwaysColumn();
            e.Property(x => x.Version).HasColumnName("version");
            e.Property(x => x.ChangedAt).HasColumnName("changed_at");
            e.Property(x => x.Kind).HasColumnName("kind").HasMaxLength(32);
            e.Property(x => x.Target).HasColumnName("target").HasMaxLength(64);
            e.Property(x => x.Payload).HasColumnName("payload").HasColumnType("jsonb");
        });

        modelBuilder.Entity<PlanLimitRow>(e =>
        {
            e.ToTable("plan_limits");
            e.HasKey(x => new { x.PlanId, x.UsageType });
            e.Property(x => x.PlanId).HasColumnName("plan_id");
            e.Property(x => x.UsageType).HasColumnName("usage_type");
            e.Property(x => x.Limit).HasColumnName("limit");
            e.HasOne<UsageTypeRow>().WithMany().HasForeignKey(x => x.UsageType).OnDelete(DeleteBehavior.Restrict);
        });

        modelBuilder.Entity<SubscriptionRow>(e =>
        {
            e.ToTable("subscriptions");
            e.HasKey(x => x.SubjectId);
            e.Property(x => x.SubjectId).HasColumnName("subject_id").HasMaxLength(128);
            e.Property(x => x.PlanId).HasColumnName("plan_id");
            e.Property(x => x.BillingAnchorDay).HasColumnName("billing_anchor_day");
            e.Property(x => x.TimeZone).HasColumnName("time_zone").HasMaxLength(64);
            e.Property(x => x.CreatedAt).HasColumnName("created_at");
            e.Property(x => x.UpdatedAt).HasColumnName("updated_at");
            e.Property(x => x.Version).HasColumnName("version");
            e.HasOne<PlanRow>().WithMany().HasForeignKey(x => x.PlanId).OnDelete(DeleteBehavior.Restrict);
        });

        modelBuilder.Entity<SubscriptionChangeRow>(e =>
        {
            e.ToTable("subscription_changes");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).HasColumnName("id").UseIdentityAlwaysColumn();
            e.Property(x => x.SubjectId).HasColumnName("subject_id").HasMaxLength(128);
            e.Property(x => x.Version).HasColumnName("version");
            e.Property(x => x.ChangedAt).HasColumnName("changed_at");
            e.Property(x => x.Kind).HasColumnName("kind").HasMaxLength(16);
            e.Property(x => x.PlanId).HasColumnName("plan_id").HasMaxLength(64);
            e.Property(x => x.PreviousPlanId).HasColumnName("previous_plan_id").HasMaxLength(64);
            e.Property(x => x.BillingAnchorDay).HasColumnName("billing_anchor_day");
            e.Property(x => x.TimeZone).HasColumnName("time_zone").HasMaxLength(64);
            e.Property(x => x.PreviousBillingAnchorDay).HasColumnName("previous_billing_anchor_day");
            e.Property(x => x.PreviousTimeZone).HasColumnName("previous_time_zone").HasMaxLength(64);
            e.HasIndex(x => new { x.SubjectId, x.Id });
        });

        modelBuilder.Entity<UsageEventRow>(e =>
        {
            e.ToTable("usage_events");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).HasColumnName("id").UseIdentityAlwaysColumn();
            e.Property(x => x.SubjectId).HasColumnName("subject_id").HasMaxLength(128);
            e.Property(x => x.IdempotencyKey).HasColumnName("idempotency_key").HasMaxLength(256);
            e.Property(x => x.Fingerprint).HasColumnName("fingerprint").HasMaxLength(64);
            e.Property(x => x.OccurredAt).HasColumnName("occurred_at");
            e.Property(x => x.RecordedAt).HasColumnName("recorded_at");
            e.Property(x => x.ReservationId).HasColumnName("reservation_id").HasMaxLength(64);
            e.Property(x => x.RecordedBy).HasColumnName("recorded_by").HasMaxLength(64);
            e.Property(x => x.Kind).HasColumnName("kind").HasMaxLength(16).HasDefaultValue("usage");
            e.Property(x => x.Reason).HasColumnName("reason").HasMaxLength(512);
            e.Property(x => x.Attributes)
                .HasColumnName("attributes")
                .HasColumnType("jsonb")
                .HasConversion(
                    v => JsonSerializer.Serialize(v, JsonSerializerOptions.Default),
                    v => JsonSerializer.Deserialize<Dictionary<string, string>>(v, JsonSerializerOptions.Default) ?? new Dictionary<string, string>(),
                    new ValueComparer<Dictionary<string, string>>(
                        (a, b) => a!.Count == b!.Count && !a.Except(b).Any(),
                        v => v.Count,
                        v => new Dictionary<string, string>(v)));
            e.HasIndex(x => new { x.SubjectId, x.IdempotencyKey }).IsUnique();
            e.HasIndex(x => new { x.SubjectId, x.OccurredAt });
            e.HasMany(x => x.Lines).WithOne().HasForeignKey(x => x.EventId).OnDelete(DeleteBehavior.Cascade);
        });

        modelBuilder.Entity<UsageEventLineRow>(e =>
        {
            e.ToTable("usage_event_lines");
            e.HasKey(x => new { x.EventId, x.UsageType });
            e.Property(x => x.EventId).HasColumnName("event_id");
            e.Property(x => x.UsageType).HasColumnName("usage_type");
            e.Property(x => x.Amount).HasColumnName("amount");
            e.Property(x => x.SubjectId).HasColumnName("subject_id").HasMaxLength(128);
            e.Property(x => x.OccurredAt).HasColumnName("occurred_at");
            e.Property(x => x.PeriodStart).HasColumnName("period_start");
            e.HasIndex(x => new { x.SubjectId, x.UsageType, x.OccurredAt });
            e.HasOne<UsageTypeRow>().WithMany().HasForeignKey(x => x.UsageType).OnDelete(DeleteBehavior.Restrict);
        });

        modelBuilder.Entity<UsageTotalRow>(e =>
        {
            e.ToTable("usage_totals");
            e.HasKey(x => new { x.SubjectId, x.UsageType, x.PeriodStart });
            e.Property(x => x.SubjectId).HasColumnName("subject_id").HasMaxLength(128);
            e.Property(x => x.UsageType).HasColumnName("usage_type");
            e.Property(x => x.PeriodStart).HasColumnName("period_start");
            e.Property(x => x.PeriodEnd).HasColumnName("period_end");
            e.Property(x => x.Total).HasColumnName("total");
            e.Property(x => x.Held).HasColumnName("held").HasDefaultValue(0L);
            e.Property(x => x.Version).HasColumnName("version");
        });

        modelBuilder.Entity<HoldRow>(e =>
        {
            e.ToTable("holds");
            e.HasKey(x => new { x.SubjectId, x.ReservationId });
            e.Property(x => x.SubjectId).HasColumnName("subject_id").HasMaxLength(128);
            e.Property(x => x.ReservationId).HasColumnName("reservation_id").HasMaxLength(64);
            e.Property(x => x.RequestId).HasColumnName("request_id").HasMaxLength(256);
            e.Property(x => x.PlacedAt).HasColumnName("placed_at");
            e.Property(x => x.ExpiresAt).HasColumnName("expires_at");
            e.Property(x => x.EndedAt).HasColumnName("ended_at");
            e.Property(x => x.EndReason).HasColumnName("end_reason").HasMaxLength(16);
            e.HasIndex(x => new { x.SubjectId, x.RequestId }).IsUnique().HasFilter("request_id IS NOT NULL");
            e.HasIndex(x => x.ExpiresAt).HasFilter("ended_at IS NULL").HasDatabaseName("IX_holds_live_expires_at");

            // A subject's live holds without reading the ended ones, which stay as a record: every grant sums them.
            e.HasIndex(x => x.SubjectId).HasFilter("ended_at IS NULL").HasDatabaseName("IX_holds_live_subject_id");
            e.HasMany(x => x.Lines).WithOne().HasForeignKey(x => new { x.SubjectId, x.ReservationId }).OnDelete(DeleteBehavior.Cascade);
        });

        modelBuilder.Entity<HoldLineRow>(e =>
        {
            e.ToTable("hold_lines");
            e.HasKey(x => new { x.SubjectId, x.ReservationId, x.UsageType });
            e.Property(x => x.SubjectId).HasColumnName("subject_id").HasMaxLength(128);
            e.Property(x => x.ReservationId).HasColumnName("reservation_id").HasMaxLength(64);
            e.Property(x => x.UsageType).HasColumnName("usage_type");
            e.Property(x => x.PeriodStart).HasColumnName("period_start");
            e.Property(x => x.PeriodEnd).HasColumnName("period_end");
            e.Property(x => x.Amount).HasColumnName("amount");
            e.HasIndex(x => new { x.SubjectId, x.UsageType });
        });

        modelBuilder.Entity<CounterOutboxRow>(e =>
        {
            e.ToTable("counter_outbox");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).HasColumnName("id").UseIdentityAlwaysColumn();
            e.Property(x => x.Kind).HasColumnName("kind").HasMaxLength(16);
            e.Property(x => x.SubjectId).HasColumnName("subject_id").HasMaxLength(128);
            e.Property(x => x.UsageType).HasColumnName("usage_type");
            e.Property(x => x.PeriodStart).HasColumnName("period_start");
            e.Property(x => x.CreatedAt).HasColumnName("created_at").HasDefaultValueSql("now()");
        });
    }
}
