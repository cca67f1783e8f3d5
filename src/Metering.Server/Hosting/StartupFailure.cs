namespace Metering.Server.Hosting;

/// <summary>A reason not to start that the operator must fix (a setting, the schema, the catalog): one line, exit code 2.</summary>
internal sealed class StartupException(string message) : Exception(message);

internal static class StartupFailure
{
    /// <summary>The exit code of every configuration error.</summary>
    public const int ExitCode = 2;

    public static int ConfigurationError(string line)
    {
        Console.Error.WriteLine(line);
        return ExitCode;
    }
}
