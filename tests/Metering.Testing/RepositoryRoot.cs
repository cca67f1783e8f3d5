namespace Metering.Testing;

/// <summary>Finds the repository root: the nearest folder above the test binaries that holds Metering.sln (or Metering.slnx).</summary>
public static class RepositoryRoot
{
    /// <summary>The repository root, or null when the tests do not run from inside the repository.</summary>
    public static string? TryFind()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "Metering.sln")) || File.Exists(Path.Combine(directory.FullName, "Metering.slnx")))
            {
                return directory.FullName;
            }
        }

        return null;
    }

    /// <summary>The repository root; throws when it cannot be found.</summary>
    public static string Find() => TryFind()
        ?? throw new InvalidOperationException($"Could not find the repository root (a folder with Metering.sln) above {AppContext.BaseDirectory}.");
}
