using System.Globalization;
using Metering.Core.Usage;
using StackExchange.Redis;

namespace Metering.Storage.Redis;

/// <summary>
/// The one place that names keys. Every key of a subject carries the subject in a hash tag
/// (<c>mtr:{subject}:…</c>), so a script touching several of them runs on Redis Cluster too.
/// </summary>
internal static class RedisKeys
{
    public static RedisKey Subscription(string subjectId) => $"mtr:{{{subjectId}}}:sub";

    /// <summary>The catalog version of one ledger database (its catalog id), shared by every instance on it.</summary>
    public static RedisKey CatalogVersion(string catalogId) => $"mtr:catalog:{{{catalogId}}}:v";

    public static RedisKey Counter(CounterKey key) => $"mtr:{{{key.SubjectId}}}:c:{key.UsageType}:{Period(key)}";

    /// <summary>The period as counter keys name it: its start in Unix seconds.</summary>
    private static string Period(CounterKey key) =>
        key.Period.Start.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture);
}
