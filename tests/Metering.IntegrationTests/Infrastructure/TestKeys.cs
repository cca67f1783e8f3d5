using System.Security.Cryptography;
using System.Text;

namespace Metering.IntegrationTests.Infrastructure;

/// <summary>
/// The API keys every in-process host is configured with: one with every scope (used by <see cref="ServiceTest"/>'s
/// clients) and one per scope. Only their hashes reach the host's configuration.
/// </summary>
public static class TestKeys
{
    public const string All = "mtr_test_all_scopes";

    /// <summary>Scope → the key that has only that scope.</summary>
    public static readonly IReadOnlyDictionary<string, string> ByScope = new Dictionary<string, string>
    {
        ["metering.check"] = "mtr_test_check_only",
        ["metering.track"] = "mtr_test_track_only",
        ["metering.read"] = "mtr_test_read_only",
        ["metering.admin"] = "mtr_test_admin_only",
    };

    /// <summary>The configuration lines of these keys.</summary>
    public static IEnumerable<KeyValuePair<string, string?>> Settings
    {
        get
        {
            yield return new("Auth:ApiKeys:test-all:Hash", Hash(All));
            yield return new("Auth:ApiKeys:test-all:Scopes", string.Join(' ', ByScope.Keys));
            yield return new("Auth:ApiKeys:test-all:RequestsPerSecond", "100000");
            foreach (var (scope, key) in ByScope)
            {
                var name = $"test-{scope.Replace("metering.", string.Empty, StringComparison.Ordinal)}";
                yield return new($"Auth:ApiKeys:{name}:Hash", Hash(key));
                yield return new($"Auth:ApiKeys:{name}:Scopes", scope);
                yield return new($"Auth:ApiKeys:{name}:RequestsPerSecond", "100000");
            }
        }
    }

    public static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));
}
