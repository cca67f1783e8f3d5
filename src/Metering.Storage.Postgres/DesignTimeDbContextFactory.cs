using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;

namespace Metering.Storage.Postgres;

/// <summary>Lets <c>dotnet ef migrations add</c> build the model without a running server.</summary>
internal sealed class DesignTimeDbContextFactory : IDesignTimeDbContextFactory<MeteringDbContext>
{
    public MeteringDbContext CreateDbContext(string[] args) =>
        new(new DbContextOptionsBuilder<MeteringDbContext>()
            .UseNpgsql("Host=localhost;Database=metering_design")
            .Options);
}
