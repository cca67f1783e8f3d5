namespace Metering.Server.Security;

/// <summary>
/// What a caller may do. Each RPC requires exactly one scope (an authorization policy of the same name), named on the
/// service method with <c>[Authorize(Policy = ...)]</c>.
/// </summary>
public static class Scopes
{
    /// <summary>CheckLimit, ReleaseReservation.</summary>
    public const string Check = "metering.check";

    /// <summary>TrackUsage.</summary>
    public const string Track = "metering.track";

    /// <summary>GetRemaining and every admin read.</summary>
    public const string Read = "metering.read";

    /// <summary>Every admin write.</summary>
    public const string Admin = "metering.admin";

    /// <summary>The claim type that carries one scope of the caller.</summary>
    public const string ClaimType = "scope";

    public static IReadOnlyList<string> All { get; } = [Check, Track, Read, Admin];

    /// <summary>Parses "metering.check metering.track" (space or comma separated); throws on an unknown scope.</summary>
    public static IReadOnlyList<string> Parse(string? text, string source)
    {
        var scopes = (text ?? string.Empty).Split([' ', ',', ';'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var scope in scopes)
        {
            if (!All.Contains(scope, StringComparer.Ordinal))
            {
                throw new InvalidOperationException($"{source}: unknown scope '{scope}'; known: {string.Join(", ", All)}.");
            }
        }

        return [.. scopes.Distinct(StringComparer.Ordinal)];
    }
}
