using Metering.Core.Catalog;
using NodaTime;

namespace Metering.Core.Ports;

/// <summary>The catalog as stored, with the id that names it in shared caches.</summary>
public sealed record StoredCatalog(string CatalogId, PlanCatalog Catalog);

/// <summary>
/// The catalog of record (PostgreSQL). Every change bumps the catalog version in its own transaction and returns it.
/// </summary>
public interface ICatalogStore
{
    Task<StoredCatalog> LoadAsync(CancellationToken cancellationToken);

    /// <summary>The current catalog version, without loading the catalog.</summary>
    Task<long> GetVersionAsync(CancellationToken cancellationToken);

    /// <summary>Creates or replaces a plan (display name, rank and the whole set of limits); returns the new catalog version.</summary>
    Task<long> SavePlanAsync(Plan plan, Instant now, CancellationToken cancellationToken);

    /// <summary>
    /// Deletes a plan; throws <see cref="Errors.NotFoundException"/> when there is none and
    /// <see cref="Errors.PreconditionFailedException"/> while a subscription uses it. Returns the new catalog version.
    /// </summary>
    Task<long> DeletePlanAsync(string planId, Instant now, CancellationToken cancellationToken);

    /// <summary>Creates or changes a usage type; returns the new catalog version.</summary>
    Task<long> SaveUsageTypeAsync(UsageType usageType, Instant now, CancellationToken cancellationToken);
}

/// <summary>
/// The catalog version shared by every instance (Redis). It only ever moves to a higher version; a missing value
/// means "ask the store of record".
/// </summary>
public interface ICatalogVersionCache
{
    Task<long?> GetAsync(string catalogId, CancellationToken cancellationToken);

    Task PutAsync(string catalogId, long version, CancellationToken cancellationToken);
}
