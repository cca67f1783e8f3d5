using Metering.Storage.Embedded.Entities;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;

namespace Metering.Storage.Embedded;

/// <summary>The embedded ledger's schema in SQLite: catalog, subscriptions, usage events, period totals, holds, outbox.</summary>
public sealed class EmbeddedDbContext(DbContextOptions<EmbeddedDbContext> options) : DbContext(options)
{
    public DbSet<UsageTypeRow> UsageTypes => Set<UsageTypeRow>();

    public DbSet<PlanRow> Plans => Set<PlanRow>();

    public DbSet<PlanLimitRow> PlanLimits => Set<PlanLimitRow>();

    public DbSet<CatalogStateRow> CatalogState => Set<CatalogStateRow>();

    public DbSet<CatalogChangeRow> CatalogChanges => Set<CatalogChangeRow>();

    public DbSet<VersionSequenceRow> VersionSequence => Set<VersionSequenceRow>();

    public DbSet<SubscriptionRow> Subscriptions => Set<SubscriptionRow>();

    public DbSet<SubscriptionChangeRow> SubscriptionChanges => Set<SubscriptionChangeRow>();

    public DbSet<UsageEventRow> UsageEvents => Set<UsageEventRow>();

    public DbSet<UsageEventLineRow> UsageEventLines => Set<UsageEventLineRow>();

    public DbSet<UsageTotalRow> UsageTotals => Set<UsageTotalRow>();

    public DbSet<HoldRow> Holds => Set<HoldRow>();

    public DbSet<HoldLineRow> HoldLines => Set<HoldLineRow>();

    public DbSet<OutboxRow> Outbox => Set<OutboxRow>();

    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        modelBuilder.Entity<UsageTypeRow>(e =>
        {
            e.ToTable("usage_types");
            e.HasKey(x => x.Name);
        });

        modelBuilder.Entity<PlanRow>(e =>
        {
            e.ToTable("plans");
            e.HasKey(x => x.Id);
            e.HasMany(x => x.Limits).WithOne().HasForeignKey(x => x.PlanId).OnDelete(DeleteBehavior.Cascade);
        });

        modelBuilder.Entity<PlanLimitRow>(e =>
        {
            e.ToTable("plan_limits");
            e.HasKey(x => new { x.PlanId, x.UsageType });
        });

        modelBuilder.Entity<CatalogStateRow>(e =>
        {
            e.ToTable("catalog_state");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).ValueGeneratedNever();
            e.HasData(new CatalogStateRow { Id = 1, CatalogId = "embedded", Version = 1 });
        });

        modelBuilder.Entity<CatalogChangeRow>(e =>
        {
            e.ToTable("catalog_changes");
            e.HasKey(x => x.Id);
        });

        modelBuilder.Entity<VersionSequenceRow>(e =>
        {
            e.ToTable("version_sequence");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).ValueGeneratedNever();
            e.HasData(new VersionSequenceRow { Id = 1, Value = 0 });
        });

        modelBuilder.Entity<SubscriptionRow>(e =>
        {
            e.ToTable("subscriptions");
            e.HasKey(x => x.SubjectId);
            e.HasIndex(x => x.PlanId);
        });

        modelBuilder.Entity<SubscriptionChangeRow>(e =>
        {
            e.ToTable("subscription_changes");
            e.HasKey(x => x.Id);
            e.HasIndex(x => new { x.SubjectId, x.Id });
        });

        modelBuilder.Entity<UsageEventRow>(e =>
        {
            e.ToTable("usage_events");
            e.HasKey(x => x.Id);
            e.HasIndex(x => new { x.SubjectId, x.IdempotencyKey }).IsUnique();
            e.HasIndex(x => new { x.SubjectId, x.OccurredAt });
            e.HasMany(x => x.Lines).WithOne().HasForeignKey(x => x.EventId).OnDelete(DeleteBehavior.Cascade);
        });

        modelBuilder.Entity<UsageEventLineRow>(e =>
        {
            e.ToTable("usage_event_lines");
            e.HasKey(x => new { x.EventId, x.UsageType });
            e.HasIndex(x => new { x.SubjectId, x.UsageType, x.OccurredAt });
        });

        modelBuilder.Entity<UsageTotalRow>(e =>
        {
            e.ToTable("usage_totals");
            e.HasKey(x => new { x.SubjectId, x.UsageType, x.PeriodStart });
            e.HasIndex(x => new { x.PeriodStart, x.PeriodEnd });
        });

        modelBuilder.Entity<HoldRow>(e =>
        {
            e.ToTable("holds");
            e.HasKey(x => new { x.SubjectId, x.ReservationId });
            e.HasIndex(x => new { x.SubjectId, x.RequestId }).IsUnique().HasFilter("RequestId IS NOT NULL");
            e.HasIndex(x => x.ExpiresAt).HasFilter("EndedAt IS NULL");
            e.HasMany(x => x.Lines).WithOne().HasForeignKey(x => new { x.SubjectId, x.ReservationId }).OnDelete(DeleteBehavior.Cascade);
        });

        modelBuilder.Entity<HoldLineRow>(e =>
        {
            e.ToTable("hold_lines");
            e.HasKey(x => new { x.SubjectId, x.ReservationId, x.UsageType });
            e.HasIndex(x => new { x.SubjectId, x.UsageType });
        });

        modelBuilder.Entity<OutboxRow>(e =>
        {
            e.ToTable("outbox");
            e.HasKey(x => x.Id);
        });
    }
}

/// <summary>Lets <c>dotnet ef migrations add</c> build the model without a database file.</summary>
internal sealed class DesignTimeEmbeddedDbContextFactory : IDesignTimeDbContextFactory<EmbeddedDbContext>
{
    public EmbeddedDbContext CreateDbContext(string[] args) =>
        new(new DbContextOptionsBuilder<EmbeddedDbContext>().UseSqlite("Data Source=design.db").Options);
}
