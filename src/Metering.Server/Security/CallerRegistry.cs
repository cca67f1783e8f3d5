using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.RegularExpressions;

namespace Metering.Server.Security;

/// <summary>A known caller: an API key (by the SHA-256 of the key) or a client certificate (by its SHA-256 thumbprint).</summary>
public sealed record Caller(string Name, IReadOnlyList<string> Scopes, int RequestsPerSecond, int Burst);

/// <summary>
/// The callers the service knows, read once at start-up from configuration (<c>Auth:ApiKeys:&lt;name&gt;</c>,
/// <c>Auth:ClientCertificates:&lt;name&gt;</c>) and from the optional JSON file <c>Auth:ApiKeysFile</c>.
/// Only hashes are kept: a presented key is hashed and compared with every known hash in constant time.
/// </summary>
public sealed partial class CallerRegistry
{
    /// <summary>Prefix of generated keys, so that a leaked one is easy to recognise.</summary>
    public const string KeyPrefix = "mtr_";

    private readonly List<(byte[] Hash, Caller Caller)> _keys = [];
    private readonly Dictionary<string, Caller> _certificates = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, Caller> _byName = new(StringComparer.Ordinal);

    public CallerRegistry(IConfiguration configuration)
    {
        var auth = configuration.GetSection("Auth");
        var defaults = new RateDefaults(
            auth.GetValue("DefaultRequestsPerSecond", 100),
            auth.GetValue("DefaultBurst", 200));
        foreach (var entry in auth.GetSection("ApiKeys").GetChildren())
        {
            AddKey(entry, "Auth:ApiKeys", defaults);
        }

        if (auth["ApiKeysFile"] is { Length: > 0 } file)
        {
            if (!File.Exists(file))
            {
                throw new InvalidOperationException($"Auth:ApiKeysFile names '{file}', which does not exist.");
            }

            var fromFile = new ConfigurationBuilder().AddJsonFile(Path.GetFullPath(file), optional: false).Build();
            foreach (var entry in fromFile.GetChildren())
            {
                AddKey(entry, file, defaults);
            }
        }

        foreach (var entry in auth.GetSection("ClientCertificates").GetChildren())
        {
            var source = $"Auth:ClientCertificates:{entry.Key}";
            var thumbprint = entry["Thumbprint"]?.Replace(":", string.Empty, StringComparison.Ordinal) ?? string.Empty;
            if (!Sha256Hex().IsMatch(thumbprint))
            {
                throw new InvalidOperationException($"{source}:Thumbprint must be the certificate's SHA-256 thumbprint (64 hex digits).");
            }

            var caller = NewCaller(entry, source, defaults);
            _certificates[thumbprint] = caller;
        }
    }

    /// <summary>True when at least one API key or client certificate is configured.</summary>
    public bool HasCallers => _byName.Count > 0;

    /// <summary>True when client certificates are mapped to callers (Kestrel then asks TLS clients for one).</summary>
    public bool HasClientCertificates => _certificates.Count > 0;

    /// <summary>The caller of this API key, or null. Takes the same time whichever key matches, or none.</summary>
    public Caller? FindByKey(string presentedKey)
    {
        Span<byte> presented = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(presentedKey), presented);
        Caller? found = null;
        foreach (var (hash, caller) in _keys)
        {
            if (CryptographicOperations.FixedTimeEquals(hash, presented))
            {
                found = caller;
            }
        }

        return found;
    }

    /// <summary>The caller mapped to this client certificate's SHA-256 thumbprint, or null.</summary>
    public Caller? FindByCertificate(X509Certificate2 certificate) =>
        _certificates.GetValueOrDefault(certificate.GetCertHashString(HashAlgorithmName.SHA256));

    /// <summary>The caller of this name (for its rate limit), or null.</summary>
    public Caller? FindByName(string name) => _byName.GetValueOrDefault(name);

    /// <summary>The hash to configure for <paramref name="key"/>: lower-case hex SHA-256 of its UTF-8 bytes.</summary>
    public static string HashOf(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    /// <summary>Whether <paramref name="name"/> can name a caller: 1 to 64 of a-z, A-Z, 0-9, '.', '_', '-'.</summary>
    public static bool IsValidName(string name) => CallerName().IsMatch(name);

    private void AddKey(IConfigurationSection entry, string origin, RateDefaults defaults)
    {
        var source = $"{origin}:{entry.Key}";
        var hash = entry["Hash"] ?? string.Empty;
        if (!Sha256Hex().IsMatch(hash))
        {
            throw new InvalidOperationException($"{source}:Hash must be the SHA-256 of the key (64 hex digits, as printed by 'make api-key').");
        }

        _keys.Add((Convert.FromHexString(hash), NewCaller(entry, source, defaults)));
    }

    private Caller NewCaller(IConfigurationSection entry, string source, RateDefaults defaults)
    {
        if (!IsValidName(entry.Key))
        {
            throw new InvalidOperationException($"{source}: a caller name has 1 to 64 letters, digits, '.', '_' or '-'.");
        }

        if (_byName.ContainsKey(entry.Key))
        {
            throw new InvalidOperationException($"{source}: the caller name '{entry.Key}' is configured twice.");
        }

        var scopes = Scopes.Parse(entry["Scopes"], $"{source}:Scopes");
        var perSecond = entry.GetValue("RequestsPerSecond", defaults.RequestsPerSecond);
        var burst = entry.GetValue("Burst", Math.Max(defaults.Burst, perSecond));
        if (perSecond < 1 || burst < 1)
        {
            throw new InvalidOperationException($"{source}: RequestsPerSecond and Burst must be at least 1.");
        }

        var caller = new Caller(entry.Key, scopes, perSecond, burst);
        _byName.Add(entry.Key, caller);
        return caller;
    }

    private sealed record RateDefaults(int RequestsPerSecond, int Burst);

    [GeneratedRegex("^[0-9a-fA-F]{64}$", RegexOptions.CultureInvariant)]
    private static partial Regex Sha256Hex();

    [GeneratedRegex(@"^[A-Za-z0-9._\-]{1,64}$", RegexOptions.CultureInvariant)]
    private static partial Regex CallerName();
}
