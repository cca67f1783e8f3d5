using Google.Protobuf.WellKnownTypes;
using Metering.Core.Errors;
using Metering.Core.Limits;
using Metering.Core.Subscriptions;
using Metering.Core.Usage;
using NodaTime;
using NodaTime.Text;
using Duration = NodaTime.Duration;
using Wire = Metering.Api.V1;

namespace Metering.Server.Grpc;

/// <summary>Maps between the wire contract (metering.v1) and the domain; no decisions here.</summary>
internal static class ProtoMapping
{
    public static IReadOnlyList<UsageRequest> ToDomain(this IEnumerable<Wire.UsageAmount> usage) =>
        [.. usage.Select(u => new UsageRequest(u.UsageType, u.Amount))];

    public static Wire.LimitStatus ToProto(this LimitStatus status) => new()
    {
        UsageType = status.UsageType,
        Limit = status.Limit,
        Used = status.Used,
        Reserved = status.Reserved,
        Remaining = status.Remaining,
        Decision = status.Decision switch
        {
            Decision.Allowed => Wire.Decision.Allowed,
            Decision.LimitExceeded => Wire.Decision.LimitExceeded,
            Decision.NotInPlan => Wire.Decision.NotInPlan,
            _ => Wire.Decision.Unspecified,
        },
        PeriodStart = status.Period.Start.ToTimestamp(),
        ResetsAt = status.Period.End.ToTimestamp(),
        PercentUsed = status.PercentUsed,
        Level = status.Level switch
        {
            UsageLevel.Ok => Wire.UsageLevel.Ok,
            UsageLevel.Warning => Wire.UsageLevel.Warning,
            UsageLevel.Critical => Wire.UsageLevel.Critical,
            UsageLevel.Exhausted => Wire.UsageLevel.Exhausted,
            _ => Wire.UsageLevel.Unspecified,
        },
    };

    public static Wire.UpgradeOption ToProto(this UpgradeOption option) => new()
    {
        PlanId = option.PlanId,
        DisplayName = option.DisplayName,
        Rank = option.Rank,
        Limits = { option.Limits.Select(l => new Wire.PlanLimit { UsageType = l.UsageType, Limit = l.Limit }) },
    };

    public static Wire.Subscription ToProto(this Subscription subscription) => new()
    {
        SubjectId = subscription.SubjectId,
        PlanId = subscription.PlanId,
        BillingAnchorDay = subscription.BillingAnchorDay,
        TimeZone = subscription.TimeZone,
        UpdatedAt = subscription.UpdatedAt.ToTimestamp(),
    };

    public static Wire.Plan ToProto(this Core.Catalog.Plan plan, IEnumerable<Core.Catalog.UsageType> usageTypes) => new()
    {
        PlanId = plan.Id,
        DisplayName = plan.DisplayName,
        Rank = plan.Rank,
        Limits = { usageTypes.Select(t => new Wire.PlanLimit { UsageType = t.Name, Limit = plan.LimitFor(t.Name) }) },
        Version = plan.Version,
    };

    public static Wire.UsageType ToProto(this Core.Catalog.UsageType usageType) => new()
    {
        Name = usageType.Name,
        Unit = usageType.Unit,
        ResetPeriod = usageType.ResetPeriod switch
        {
            Core.Periods.ResetPeriod.Day => Wire.ResetPeriod.Day,
            Core.Periods.ResetPeriod.Month => Wire.ResetPeriod.Month,
            _ => Wire.ResetPeriod.Unspecified,
        },
        DegradedPolicy = usageType.DegradedPolicy switch
        {
            Core.Catalog.DegradedPolicy.Ledger => Wire.DegradedPolicy.Ledger,
            Core.Catalog.DegradedPolicy.Allow => Wire.DegradedPolicy.Allow,
            Core.Catalog.DegradedPolicy.Deny => Wire.DegradedPolicy.Deny,
            _ => Wire.DegradedPolicy.Unspecified,
        },
    };

    public static Core.Catalog.DegradedPolicy? ToDomain(this Wire.DegradedPolicy policy) => policy switch
    {
        Wire.DegradedPolicy.Ledger => Core.Catalog.DegradedPolicy.Ledger,
        Wire.DegradedPolicy.Allow => Core.Catalog.DegradedPolicy.Allow,
        Wire.DegradedPolicy.Deny => Core.Catalog.DegradedPolicy.Deny,
        _ => null,
    };

    public static Core.Periods.ResetPeriod? ToDomain(this Wire.ResetPeriod period) => period switch
    {
        Wire.ResetPeriod.Day => Core.Periods.ResetPeriod.Day,
        Wire.ResetPeriod.Month => Core.Periods.ResetPeriod.Month,
        _ => null,
    };

    public static Wire.UsageEvent ToProto(this Core.History.LedgerEvent usageEvent) => new()
    {
        IdempotencyKey = usageEvent.IdempotencyKey,
        Kind = usageEvent.Kind switch
        {
            UsageEventKind.Usage => Wire.UsageEventKind.Usage,
            UsageEventKind.Adjustment => Wire.UsageEventKind.Adjustment,
            UsageEventKind.Reset => Wire.UsageEventKind.Reset,
            _ => Wire.UsageEventKind.Unspecified,
        },
        OccurredAt = usageEvent.OccurredAt.ToTimestamp(),
        RecordedAt = usageEvent.RecordedAt.ToTimestamp(),
        Lines = { usageEvent.Lines.Select(l => new Wire.UsageEventLine { UsageType = l.UsageType, Amount = l.Amount, PeriodStart = l.PeriodStart.ToTimestamp() }) },
        ReservationId = usageEvent.ReservationId ?? string.Empty,
        Reason = usageEvent.Reason ?? string.Empty,
        Attributes = { usageEvent.Attributes.ToDictionary() },
    };

    public static Wire.SubscriptionChange ToProto(this Core.History.SubscriptionChangeRecord change) => new()
    {
        Version = change.Version,
        ChangedAt = change.ChangedAt.ToTimestamp(),
        Kind = change.Kind == Core.History.SubscriptionChangeKind.Enrolled ? Wire.SubscriptionChangeKind.Enrolled : Wire.SubscriptionChangeKind.Changed,
        PlanId = change.PlanId,
        PreviousPlanId = change.PreviousPlanId ?? string.Empty,
        BillingAnchorDay = change.BillingAnchorDay,
        TimeZone = change.TimeZone,
        PreviousBillingAnchorDay = change.PreviousBillingAnchorDay ?? 0,
        PreviousTimeZone = change.PreviousTimeZone ?? string.Empty,
    };

    public static Wire.ExplainUsageResponse ToProto(this UsageExplanation explanation)
    {
        var response = new Wire.ExplainUsageResponse
        {
            Subscription = explanation.Subscription.ToProto(),
            SubscriptionVersion = explanation.Subscription.Version,
            PlanId = explanation.Plan.Id,
            PlanVersion = explanation.Plan.Version,
            CatalogVersion = explanation.CatalogVersion,
            Limit = explanation.StatusFromLedger.Limit,
            ResetPeriod = explanation.UsageType.ToProto().ResetPeriod,
            PeriodStart = explanation.Period.Start.ToTimestamp(),
            PeriodEnd = explanation.Period.End.ToTimestamp(),
            PeriodStartLocal = LocalDateTimePattern.ExtendedIso.Format(explanation.PeriodStartLocal),
            PeriodEndLocal = LocalDateTimePattern.ExtendedIso.Format(explanation.PeriodEndLocal),
            TimeZone = explanation.Subscription.TimeZone,
            LedgerTotal = explanation.Ledger.EventTotal,
            LedgerEvents = explanation.Ledger.EventCount,
            Holds = { explanation.Holds.Select(h => new Wire.Hold { ReservationId = h.ReservationId, Amount = h.Amount, ExpiresAt = h.ExpiresAt.ToTimestamp() }) },
            CacheState = explanation.CacheState.ToProto(),
            StatusFromLedger = explanation.StatusFromLedger.ToProto(),
        };
        if (explanation.Ledger.RowTotal is { } rowTotal)
        {
            response.LedgerTotalRow = rowTotal;
        }

        if (explanation.Ledger.RowVersion is { } rowVersion)
        {
            response.LedgerTotalVersion = rowVersion;
        }

        if (explanation.Counter.Total is { } counterTotal)
        {
            response.CounterValue = counterTotal;
        }

        if (explanation.Counter.Version is { } counterVersion)
        {
            response.CounterVersion = counterVersion;
        }

        return response;
    }

    public static Wire.CounterRepair ToProto(this CounterRepair repair)
    {
        var proto = new Wire.CounterRepair
        {
            SubjectId = repair.Key.SubjectId,
            UsageType = repair.Key.UsageType,
            PeriodStart = repair.Key.Period.Start.ToTimestamp(),
            Before = repair.Before.ToProto(),
            LedgerTotal = repair.LedgerTotal,
            LedgerTotalRowFixed = repair.LedgerRowFixed,
            CounterValueAfter = repair.CounterTotalAfter,
            CounterVersionAfter = repair.CounterVersionAfter,
            Evicted = repair.Evicted,
        };
        if (repair.CounterTotalBefore is { } before)
        {
            proto.CounterValueBefore = before;
        }

        return proto;
    }

    public static Wire.CacheState ToProto(this CacheState state) => state switch
    {
        CacheState.InSync => Wire.CacheState.InSync,
        CacheState.Mismatch => Wire.CacheState.Mismatch,
        CacheState.Missing => Wire.CacheState.Missing,
        _ => Wire.CacheState.Unspecified,
    };

    public static Timestamp ToTimestamp(this Instant instant) => Timestamp.FromDateTimeOffset(instant.ToDateTimeOffset());

    /// <summary>An optional timestamp; an out-of-range one is the caller's error, named by field.</summary>
    public static Instant? ToInstant(this Timestamp? timestamp, string field)
    {
        if (timestamp is null)
        {
            return null;
        }

        try
        {
            return Instant.FromDateTimeOffset(timestamp.ToDateTimeOffset());
        }
        catch (ArgumentException)
        {
            throw new InvalidRequestException([new FieldViolation(field, "is not a valid timestamp")]);
        }
        catch (InvalidOperationException)
        {
            throw new InvalidRequestException([new FieldViolation(field, "is not a valid timestamp")]);
        }
    }

    /// <summary>An optional duration; an out-of-range one is the caller's error, named by field.</summary>
    public static Duration? ToDuration(this Google.Protobuf.WellKnownTypes.Duration? duration, string field)
    {
        if (duration is null)
        {
            return null;
        }

        try
        {
            return Duration.FromTimeSpan(duration.ToTimeSpan());
        }
        catch (InvalidOperationException)
        {
            throw new InvalidRequestException([new FieldViolation(field, "is not a valid duration")]);
        }
    }
}
