using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>
/// A Lua script shipped as an embedded resource. Runs by digest (EVALSHA) and sends the source only when
/// the server does not have it yet (after a restart or a flush).
/// </summary>
internal sealed class RedisScript
{
    private readonly string _source;
    private readonly byte[] _digest;

    private RedisScript(string name, string source)
    {
        Name = name;
        _source = source;
        _digest = SHA1.HashData(Encoding.UTF8.GetBytes(source));
    }

    public string Name { get; }

    public static RedisScript Load(string name)
    {
        var resource = $"Metering.Storage.Redis.Scripts.{name}.lua";
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"Embedded script '{resource}' is missing.");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return new RedisScript(name, reader.ReadToEnd());
    }

    public async Task<RedisResult> EvaluateAsync(IDatabaseAsync database, RedisKey[] keys, RedisValue[] values)
    {
        try
        {
            return await database.ScriptEvaluateAsync(_digest, keys, values);
        }
        catch (RedisServerException ex) when (ex.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal))
        {
            return await database.ScriptEvaluateAsync(_source, keys, values);
        }
    }
}
