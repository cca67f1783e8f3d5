using Metering.Core.Errors;
using Metering.Core.Ports;
using Metering.Core.Validation;
using Microsoft.Extensions.Logging;

namespace Metering.Core.Catalog;

/// <summary>
/// The catalog every use case decides with, kept in process and checked against the version shared by every instance
/// on each call: when another instance changed the catalog, the next call here reloads it (one reload at a time) before
/// deciding. Also the use cases that change the catalog.
/// </summary>
public sealed partial class CatalogDirectory(
    ICatalogStore store,
    ICatalogVersionCache cache,
    MeteringSettings settings,
    TimeProvider time,
    ILogger<CatalogDirectory> logger) : ICatalogProvider, IDisposable
{
    private readonly SemaphoreSlim _reload = new(1, 1);
    private StoredCatalog? _stored;

    public PlanCatalog Current => Stored.Catalog;

    public string CatalogId => Stored.CatalogId;

    private StoredCatalog Stored => Volatile.Read(ref _stored) ?? throw new InvalidOperationException("The catalog has not been loaded yet.");

    /// <summary>Loads the catalog at start-up and publishes its version.</summary>
    public async Task InitializeAsync(CancellationToken cancellationToken)
    {
        var loaded = await store.LoadAsync(cancellationToken);
        Volatile.Write(ref _stored, loaded);
        await PublishQuietlyAsync(loaded.CatalogId, loaded.Catalog.Version, cancellationToken);
    }

    public async Task<PlanCatalog> RefreshAsync(CancellationToken cancellationToken)
    {
        var stored = Stored;
        long? shared;
        try
        {
            shared = await cache.GetAsync(stored.CatalogId, cancellationToken);
        }
        catch (StoreUnavailableException ex)
        {
            LogVersionCacheUnavailable(ex.Message);
            shared = null;
        }

        if (shared is null)
        {
            try
            {
                shared = await store.GetVersionAsync(cancellationToken);
            }
            catch (StoreUnavailableException ex)
            {
                // No change can commit while the store of record is unreachable, and a change that committed
                // before would have left its version in the shared cache: deciding with what is loaded is safe.
                LogStoreUnavailable(ex.Message);
                return stored.Catalog;
            }

            await PublishQuietlyAsync(stored.CatalogId, shared.Value, cancellationToken);
        }

        return shared > stored.Catalog.Version ? await ReloadAsync(shared.Value, cancellationToken) : stored.Catalog;
    }

    /// <summary>A plan by id, as of the shared catalog version.</summary>
    public async Task<Plan> GetPlanAsync(string planId, CancellationToken cancellationToken)
    {
        var catalog = await RefreshAsync(cancellationToken);
        new RequestValidator(catalog).CatalogName("plan_id", planId).ThrowIfInvalid();
        return catalog.TryGetPlan(planId, out var plan) ? plan : throw new NotFoundException("plan", planId);
    }

    /// <summary>Creates or replaces a plan; every instance decides with it from its next call on.</summary>
    public async Task<(Plan Plan, long Version)> UpsertPlanAsync(UpsertPlanCommand command, CancellationToken cancellationToken)
    {
        var catalog = await RefreshAsync(cancellationToken);
        new RequestValidator(catalog)
            .CatalogName("plan_id", command.PlanId)
            .Text("display_name", command.DisplayName, RequestValidator.MaxDisplayNameLength)
            .PlanLimits("limits", command.Limits)
            .ThrowIfInvalid();

        var plan = new Plan(
            command.PlanId,
            command.DisplayName,
            command.Rank,
            command.Limits.ToDictionary(l => l.UsageType, l => l.Limit, StringComparer.Ordinal));
        var version = await store.SavePlanAsync(plan, Now(), cancellationToken);
        var updated = await PublishAsync(version, cancellationToken);
        return (updated.GetPlan(command.PlanId), version);
    }

    /// <summary>Deletes a plan that no subscription uses and that is not the default plan.</summary>
    public async Task<long> DeletePlanAsync(string planId, CancellationToken cancellationToken)
    {
        var catalog = await RefreshAsync(cancellationToken);
        new RequestValidator(catalog).CatalogName("plan_id", planId).ThrowIfInvalid();
        if (planId == settings.DefaultPlanId)
        {
            throw new PreconditionFailedException(
                "DEFAULT_PLAN",
                $"Plan '{planId}' is the default plan of new subjects and cannot be deleted.",
                new Dictionary<string, string> { ["plan_id"] = planId });
        }

        var version = await store.DeletePlanAsync(planId, Now(), cancellationToken);
        await PublishAsync(version, cancellationToken);
        return version;
    }

    /// <summary>Creates a usage type or changes its unit and degraded policy; its reset period is fixed once created.</summary>
    public async Task<(UsageType UsageType, long Version)> UpsertUsageTypeAsync(UpsertUsageTypeCommand command, CancellationToken cancellationToken)
    {
        var catalog = await RefreshAsync(cancellationToken);
        var validator = new RequestValidator(catalog)
            .CatalogName("name", command.Name)
            .Text("unit", command.Unit, RequestValidator.MaxUnitLength);
        if (command.ResetPeriod is null)
        {
            validator.Add("reset_period", "must be RESET_PERIOD_DAY or RESET_PERIOD_MONTH");
        }
        else if (catalog.TryGetUsageType(command.Name ?? "", out var existing) && existing.ResetPeriod != command.ResetPeriod)
        {
            // Period bounds key the ledger totals and the counters: a usage type keeps its period for life.
            validator.Add("reset_period", $"cannot change for an existing usage type (it is {existing.ResetPeriod.ToString().ToUpperInvariant()}); create a new usage type instead");
        }

        validator.ThrowIfInvalid();
        var policy = command.DegradedPolicy
            ?? (catalog.TryGetUsageType(command.Name!, out var current) ? current.DegradedPolicy : DegradedPolicy.Ledger);
        var usageType = new UsageType(command.Name!, command.Unit, command.ResetPeriod!.Value, policy);
        var version = await store.SaveUsageTypeAsync(usageType, Now(), cancellationToken);
        var updated = await PublishAsync(version, cancellationToken);
        return (updated.GetUsageType(usageType.Name), version);
    }

    /// <summary>Shares the stored catalog version with every instance; fails when the shared cache does (the outbox drain retries).</summary>
    public async Task RepublishAsync(CancellationToken cancellationToken) =>
        await cache.PutAsync(Stored.CatalogId, await store.GetVersionAsync(cancellationToken), cancellationToken);

    public void Dispose() => _reload.Dispose();

    /// <summary>
    /// Shares a committed change's version with every instance, then loads it here. If the shared cache cannot take it,
    /// the call fails so that the caller retries: other instances would otherwise keep the old catalog until the
    /// shared version expires.
    /// </summary>
    private async Task<PlanCatalog> PublishAsync(long version, CancellationToken cancellationToken)
    {
        await cache.PutAsync(Stored.CatalogId, version, cancellationToken);
        return await ReloadAsync(version, cancellationToken);
    }

    private async Task PublishQuietlyAsync(string catalogId, long version, CancellationToken cancellationToken)
    {
        try
        {
            await cache.PutAsync(catalogId, version, cancellationToken);
        }
        catch (StoreUnavailableException ex)
        {
            LogVersionCacheUnavailable(ex.Message);
        }
    }

    /// <summary>Loads the catalog unless a concurrent reload already brought it to <paramref name="atLeast"/>.</summary>
    private async Task<PlanCatalog> ReloadAsync(long atLeast, CancellationToken cancellationToken)
    {
        await _reload.WaitAsync(cancellationToken);
        try
        {
            var stored = Stored;
            if (stored.Catalog.Version >= atLeast)
            {
                return stored.Catalog;
            }

            var loaded = await store.LoadAsync(cancellationToken);
            if (loaded.Catalog.Version > stored.Catalog.Version)
            {
                Volatile.Write(ref _stored, loaded);
                LogReloaded(stored.Catalog.Version, loaded.Catalog.Version);
            }

            return Stored.Catalog;
        }
        finally
        {
            _reload.Release();
        }
    }

    private NodaTime.Instant Now() => time.GetUtcNow().ToInstant();

    /// <summary>Per call, so Debug: the outage itself is logged once by the cache's adapter (a line per call would flood the log just when the service is under stress).</summary>
    [LoggerMessage(Level = LogLevel.Debug, Message = "Shared catalog version unavailable, asking the store of record: {Reason}")]
    private partial void LogVersionCacheUnavailable(string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Catalog store unavailable, deciding with the loaded catalog: {Reason}")]
    private partial void LogStoreUnavailable(string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Catalog reloaded: version {From} -> {To}")]
    private partial void LogReloaded(long from, long to);
}
