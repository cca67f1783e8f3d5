using System.Security.Cryptography;

namespace Metering.Server.Security;

/// <summary>
/// <c>Metering.Server api-key &lt;name&gt; &lt;scope&gt;...</c> (<c>make api-key</c>): prints a new random API key once and
/// the configuration that makes the service accept it. Only the key's hash goes into the configuration.
/// </summary>
internal static class ApiKeyCommand
{
    public static int Run(IReadOnlyList<string> arguments, TextWriter output, TextWriter error)
    {
        if (arguments.Count < 2 || !CallerRegistry.IsValidName(arguments[0]))
        {
            error.WriteLine($"usage: api-key <name> <scope>... (name: 1 to 64 of A-Z a-z 0-9 . _ -; scopes: {string.Join(" ", Scopes.All)})");
            return 2;
        }

        IReadOnlyList<string> scopes;
        try
        {
            scopes = Scopes.Parse(string.Join(' ', arguments.Skip(1)), "scopes");
        }
        catch (InvalidOperationException ex)
        {
            error.WriteLine(ex.Message);
            return 2;
        }

        var name = arguments[0];
        var key = CallerRegistry.KeyPrefix + System.Buffers.Text.Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));
        var hash = CallerRegistry.HashOf(key);
        var scopeText = string.Join(' ', scopes);
        output.WriteLine($"API key for '{name}' (shown only now; give it to the caller through a secret store):");
        output.WriteLine();
        output.WriteLine($"  {key}");
        output.WriteLine();
        output.WriteLine("Configure the service with these environment variables:");
        output.WriteLine();
        output.WriteLine($"  Auth__ApiKeys__{name}__Hash={hash}");
        output.WriteLine($"  Auth__ApiKeys__{name}__Scopes={scopeText}");
        if (name.Contains('-', StringComparison.Ordinal) || name.Contains('.', StringComparison.Ordinal))
        {
            output.WriteLine("  (a POSIX shell cannot export a name with '-' or '.': set them through your orchestrator, env -, or the JSON form)");
        }
        output.WriteLine();
        output.WriteLine("or in appsettings.json:");
        output.WriteLine();
        output.WriteLine($"  \"Auth\": {{ \"ApiKeys\": {{ \"{name}\": {{ \"Hash\": \"{hash}\", \"Scopes\": \"{scopeText}\" }} }} }}");
        output.WriteLine();
        output.WriteLine("or as an entry of the JSON file named by Auth:ApiKeysFile:");
        output.WriteLine();
        output.WriteLine($"  {{ \"{name}\": {{ \"Hash\": \"{hash}\", \"Scopes\": \"{scopeText}\" }} }}");
        output.WriteLine();
        output.WriteLine($"Callers send it as the metadata  authorization: Bearer {key}");
        return 0;
    }
}
