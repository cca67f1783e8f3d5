using System.Text.Json;
using System.Text.RegularExpressions;
using Metering.Core.Limits;
using Metering.Core.Telemetry;
using Metering.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using NodaTime;

namespace Metering.IntegrationTests;

/// <summary>
/// deploy/grafana/metering.json is a Grafana dashboard whose every panel query names only metrics that the service
/// exports, as read from its own /metrics after every instrument has recorded once.
/// </summary>
public sealed partial class DashboardTests
{
    private static readonly HashSet<string> PromQlWords = new(StringComparer.Ordinal)
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless", "inf", "nan",
    };

    [Test]
    public async Task Dashboard_IsGrafanaJson_AndQueriesOnlyExportedMetrics()
    {
        var exported = await ExportedMetricNamesAsync();
        using var dashboard = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(RepositoryRoot.Find(), "deploy", "grafana", "metering.json")));
        var root = dashboard.RootElement;
        var panels = Panels(root.GetProperty("panels")).ToList();
        var queries = panels.Where(p => p.TryGetProperty("targets", out _))
            .SelectMany(p => p.GetProperty("targets").EnumerateArray().Select(t => (Panel: p.GetProperty("title").GetString()!, Expr: t.GetProperty("expr").GetString()!)))
            .ToList();

        Assert.Multiple(() =>
        {
            Assert.That(root.GetProperty("uid").GetString(), Is.Not.Empty);
            Assert.That(root.GetProperty("title").GetString(), Is.EqualTo("Metering"));
            Assert.That(root.GetProperty("schemaVersion").GetInt32(), Is.GreaterThan(30));
            Assert.That(panels.Select(p => p.GetProperty("id").GetInt32()), Is.Unique, "panel ids");
            foreach (var panel in panels)
            {
                Assert.That(panel.GetProperty("type").GetString(), Is.Not.Empty);
                Assert.That(panel.GetProperty("gridPos").GetProperty("w").GetInt32(), Is.InRange(1, 24));
            }

            Assert.That(queries, Has.Count.GreaterThan(15));
            foreach (var (panel, expr) in queries)
            {
                var names = MetricNames(expr).ToList();
                Assert.That(names, Is.Not.Empty, $"'{panel}': {expr}");
                Assert.That(names, Is.SubsetOf(exported), $"'{panel}' queries a metric the service does not export: {expr}");
            }
        });
    }

    [Test]
    public void MetricNames_FindsTheMetricsOfAnExpression()
    {
        var names = MetricNames("""histogram_quantile(0.99, sum by (le, rpc_method) (rate(rpc_server_duration_seconds_bucket{job=~"$job", x!="a b"}[$__rate_interval]))) / on (instance) metering_degraded""");

        Assert.That(names, Is.EquivalentTo(new[] { "rpc_server_duration_seconds_bucket", "metering_degraded" }));
    }

    /// <summary>Every metric name in a PromQL expression: identifiers that are not functions, keywords, labels or variables.</summary>
    internal static IEnumerable<string> MetricNames(string expr)
    {
        var text = Matchers().Replace(expr, " ");                 // {label matchers}
        text = Grouping().Replace(text, " ");                    // by (...), on (...), without (...)
        text = RangeOrVariable().Replace(text, " ");             // [5m], $var
        return Identifier().Matches(text)
            .Where(m => !text[(m.Index + m.Length)..].TrimStart().StartsWith('('))
            .Select(m => m.Value)
            .Where(n => !PromQlWords.Contains(n))
            .Distinct();
    }

    private static IEnumerable<JsonElement> Panels(JsonElement panels)
    {
        foreach (var panel in panels.EnumerateArray())
        {
            yield return panel;
            if (panel.TryGetProperty("panels", out var nested))
            {
                foreach (var inner in Panels(nested))
                {
                    yield return inner;
                }
            }
        }
    }

    /// <summary>Every sample name on the service's /metrics after each instrument has recorded once.</summary>
    private static async Task<IReadOnlySet<string>> ExportedMetricNamesAsync()
    {
        await using var host = await MeteringHost.StartAsync(ServiceTest.DefaultStartForTests);
        var metrics = host.Services.GetRequiredService<MeteringMetrics>();
        var period = new Metering.Core.Periods.Period(Instant.FromUtc(2026, 11, 1, 0, 0), Instant.FromUtc(2026, 12, 1, 0, 0));
        metrics.RecordRpc("metering.v1.MeteringService", "CheckLimit", 0, TimeSpan.FromMilliseconds(1));
        metrics.RecordDecisions([new LimitStatus("minutes_per_month", 30, 0, 0, 30, Decision.Allowed, period)]);
        metrics.RecordUsage([("minutes_per_month", 1)]);
        metrics.HoldPlaced();
        metrics.HoldSettled();
        metrics.HoldReleased();
        metrics.HoldsExpired(1);
        metrics.SetLiveHolds(1);
        metrics.CountersRebuilt(1, "missing");
        metrics.ReconcileRepaired(1);
        metrics.RecordRedisCall("evalsha", TimeSpan.FromMilliseconds(1));
        metrics.RecordPostgresCall("commit", TimeSpan.FromMilliseconds(1), "timeout");
        metrics.RecordLedgerCommit(TimeSpan.FromMilliseconds(2), 3);
        metrics.SetOutboxBacklog(0);
        metrics.SetDegraded(false);
        metrics.CallRateLimited("caller");
        metrics.CallUnauthenticated("no_credentials");

        using var client = host.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        request.Headers.Host = "localhost:9464"; // the metrics endpoint answers on its own port only
        using var response = await client.SendAsync(request);
        response.EnsureSuccessStatusCode();
        return PrometheusScrape.Parse(await response.Content.ReadAsStringAsync()).Names;
    }

    [GeneratedRegex(@"\{[^}]*\}")]
    private static partial Regex Matchers();

    [GeneratedRegex(@"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")]
    private static partial Regex Grouping();

    [GeneratedRegex(@"\[[^\]]*\]|\$\{?[A-Za-z_]+\}?")]
    private static partial Regex RangeOrVariable();

    [GeneratedRegex(@"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")]
    private static partial Regex Identifier();
}
