using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Metering.Api.V1;

namespace Metering.FaultTests;

/// <summary>What one scenario's load consists of. Every loop is bounded in count and in time.</summary>
internal sealed record LoadSpec
{
    /// <summary>TrackUsage calls with unique keys (unenforced minutes, subjects without a limit in play).</summary>
    public int UniqueTracks { get; init; } = 160;

    /// <summary>CheckLimit reserves of 1 interview (starter: 3 a day), each settled by TrackUsage with its reservation id.</summary>
    public int Reserves { get; init; } = 120;

    /// <summary>Enforced TrackUsage calls of 1 interview on the same starter subjects.</summary>
    public int EnforcedTracks { get; init; }

    /// <summary>Starter subjects the reserves and enforced calls compete on.</summary>
    public int LimitedSubjects { get; init; } = 15;

    /// <summary>Calls in flight at once, over both instances.</summary>
    public int Concurrency { get; init; } = 32;

    /// <summary>The operations start evenly spread over this window (the fault is injected inside it).</summary>
    public TimeSpan Window { get; init; } = TimeSpan.FromSeconds(8);

    /// <summary>Deadline of each call.</summary>
    public TimeSpan CallDeadline { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a client keeps retrying one operation with the same key before it gives up.</summary>
    public TimeSpan RetryBudget { get; init; } = TimeSpan.FromSeconds(40);

    /// <summary>Longest time between a granted reserve and its settle (the session); each lasts a random part of it.</summary>
    public TimeSpan MaxSession { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Reservation lifetime asked by CheckLimit; null for the service's default (2 h).</summary>
    public TimeSpan? ReservationTtl { get; init; }

    /// <summary>The first attempt of every call is cancelled by the caller a few ms after it was sent.</summary>
    public bool CancelFirstAttempt { get; init; }
}

/// <summary>What the clients saw.</summary>
internal sealed class LoadResult
{
    /// <summary>(subject, idempotency key) → usage type → amount, for every TrackUsage answered OK.</summary>
    public ConcurrentDictionary<(string Subject, string Key), IReadOnlyDictionary<string, long>> Acknowledged { get; } = new();

    public ConcurrentDictionary<StatusCode, int> Statuses { get; } = new();

    public ConcurrentQueue<string> UnknownOrInternalSamples { get; } = new();

    public int UnknownOrInternal => Statuses.GetValueOrDefault(StatusCode.Unknown) + Statuses.GetValueOrDefault(StatusCode.Internal);

    public int GaveUp;
    public int Granted;
    public int Denied;
    public int DuplicateAnswers;

    public string Describe() =>
        $"statuses {{{string.Join(", ", Statuses.OrderBy(s => s.Key).Select(s => $"{s.Key}: {s.Value}"))}}}, reserves/enforced granted {Granted}, denied {Denied}, " +
        $"same-key resends answered duplicate {DuplicateAnswers}, operations given up {GaveUp}" +
        (UnknownOrInternalSamples.IsEmpty ? "" : $"; e.g. {string.Join(" | ", UnknownOrInternalSamples.Take(2))}");
}

/// <summary>
/// Clients as the interview platform runs them: the chat service tracks usage and retries with the same idempotency
/// key until it gets an answer; the interview backend reserves an interview before a session and settles it after.
/// Calls alternate between the two instances.
/// </summary>
internal sealed class Load(FaultRig rig, string prefix, LoadSpec spec)
{
    public const string Minutes = "minutes_per_month";
    public const string Interviews = "interviews_per_day";

    /// <summary>Parallel calls for one starter subject at once: one more than its daily limit of 3.</summary>
    public const int Burst = 4;

    private int _turn;

    public LoadResult Result { get; } = new();

    public string LimitedSubject(int i) => $"{prefix}-l{i}";

    /// <summary>Puts the limited subjects on the starter plan (before any fault).</summary>
    public async Task PrepareAsync(CancellationToken cancellationToken)
    {
        for (var i = 0; i < spec.LimitedSubjects; i++)
        {
            await rig[i % 2].Admin.SetSubscriptionAsync(
                new SetSubscriptionRequest { SubjectId = LimitedSubject(i), PlanId = "starter" },
                Instance.Options(TimeSpan.FromSeconds(10), cancellationToken));
        }
    }

    /// <summary>Runs every operation once (with its retries); returns when all are answered or given up.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var operations = Plan();
        var started = Stopwatch.StartNew();
        var next = -1;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        stop.CancelAfter(spec.Window + spec.RetryBudget + TimeSpan.FromSeconds(30));

        async Task WorkerAsync()
        {
            int index;
            while ((index = Interlocked.Increment(ref next)) < operations.Length)
            {
                var (kind, subject, due) = operations[index];
                var wait = due - started.Elapsed;
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, stop.Token);
                }

                switch (kind)
                {
                    case 't':
                        await TrackAsync(new TrackUsageRequest
                        {
                            SubjectId = subject,
                            IdempotencyKey = $"u{index}",
                            Usage = { new UsageAmount { UsageType = Minutes, Amount = 1 + (index % 5) } },
                        }, resendOnce: index % 4 == 0, stop.Token);
                        break;
                    case 'r':
                        await ReserveAndSettleAsync(index, subject, stop.Token);
                        break;
                    default:
                        var answer = await TrackAsync(new TrackUsageRequest
                        {
                            SubjectId = subject,
                            IdempotencyKey = $"e{index}",
                            Usage = { new UsageAmount { UsageType = Interviews, Amount = 1 } },
                            Enforce = true,
                        }, resendOnce: index % 4 == 0, stop.Token);
                        if (answer == Answer.Ok)
                        {
                            Interlocked.Increment(ref Result.Granted);
                        }
                        else if (answer == Answer.Refused)
                        {
                            Interlocked.Increment(ref Result.Denied);
                        }

                        break;
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, spec.Concurrency).Select(_ => Task.Run(WorkerAsync, CancellationToken.None)));
    }

    /// <summary>
    /// The operations in the order they start: unique tracks evenly over the window (10 subjects without a limit in
    /// play); reserves and enforced calls in bursts of <see cref="Burst"/> parallel calls for one starter subject (one more
    /// than its daily limit), the bursts evenly over the window and over the subjects.
    /// </summary>
    private (char Kind, string Subject, TimeSpan Due)[] Plan()
    {
        var operations = new List<(char, string, TimeSpan)>();
        for (var i = 0; i < spec.UniqueTracks; i++)
        {
            operations.Add(('t', $"{prefix}-t{i % 10}", spec.Window * i / spec.UniqueTracks));
        }

        void AddBursts(char kind, int count, int subjectShift)
        {
            var bursts = (count + Burst - 1) / Burst;
            for (var i = 0; i < count; i++)
            {
                var burst = i / Burst;
                operations.Add((kind, LimitedSubject((burst + subjectShift) % spec.LimitedSubjects), spec.Window * burst / bursts));
            }
        }

        AddBursts('r', spec.Reserves, 0);
        AddBursts('e', spec.EnforcedTracks, spec.LimitedSubjects / 2);
        return [.. operations.OrderBy(o => o.Item3)];
    }

    private enum Answer
    {
        Ok,
        Refused,
        GaveUp,
    }

    private async Task ReserveAndSettleAsync(int index, string subject, CancellationToken cancellationToken)
    {
        var check = new CheckLimitRequest
        {
            SubjectId = subject,
            Reserve = true,
            Usage = { new UsageAmount { UsageType = Interviews, Amount = 1 } },
        };
        if (spec.ReservationTtl is { } ttl)
        {
            check.ReservationTtl = Duration.FromTimeSpan(ttl);
        }

        var (answer, response) = await CallAsync(
            (instance, options) => instance.Metering.CheckLimitAsync(check, options).ResponseAsync, cancellationToken);
        if (answer != Answer.Ok)
        {
            return;
        }

        if (!response!.Allowed)
        {
            Interlocked.Increment(ref Result.Denied);
            return;
        }

        Interlocked.Increment(ref Result.Granted);
        await Task.Delay(TimeSpan.FromMilliseconds(new Random(index).Next((int)spec.MaxSession.TotalMilliseconds + 1)), cancellationToken);
        await TrackAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = $"s{index}",
            ReservationId = response.ReservationId,
            Usage = { new UsageAmount { UsageType = Interviews, Amount = 1 } },
        }, resendOnce: index % 4 == 0, cancellationToken);
    }

    /// <summary>TrackUsage until answered (same key, same payload); optionally sent once more, as after a lost answer.</summary>
    private async Task<Answer> TrackAsync(TrackUsageRequest request, bool resendOnce, CancellationToken cancellationToken)
    {
        var (answer, _) = await CallAsync((instance, options) => instance.Metering.TrackUsageAsync(request, options).ResponseAsync, cancellationToken);
        if (answer != Answer.Ok)
        {
            return answer;
        }

        Result.Acknowledged[(request.SubjectId, request.IdempotencyKey)] = request.Usage.ToDictionary(u => u.UsageType, u => u.Amount);
        if (resendOnce)
        {
            var (again, response) = await CallAsync((instance, options) => instance.Metering.TrackUsageAsync(request, options).ResponseAsync, cancellationToken);
            if (again == Answer.Ok && response!.Duplicate)
            {
                Interlocked.Increment(ref Result.DuplicateAnswers);
            }
        }

        return Answer.Ok;
    }

    /// <summary>
    /// One call, retried on the other instance and again until it is answered: OK, or a refusal the caller acts on
    /// (RESOURCE_EXHAUSTED, PERMISSION_DENIED, ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION). Everything else is
    /// retried after a short pause, within the retry budget.
    /// </summary>
    private async Task<(Answer Answer, T? Response)> CallAsync<T>(Func<Instance, CallOptions, Task<T>> call, CancellationToken cancellationToken)
        where T : class
    {
        var budget = Stopwatch.StartNew();
        for (var attempt = 0; ; attempt++)
        {
            var instance = rig[Interlocked.Increment(ref _turn) & 1];
            using var callCancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            if (attempt == 0 && spec.CancelFirstAttempt)
            {
                callCancel.CancelAfter(TimeSpan.FromMilliseconds(Random.Shared.Next(1, 15)));
            }

            try
            {
                var response = await call(instance, Instance.Options(spec.CallDeadline, callCancel.Token));
                Count(StatusCode.OK);
                return (Answer.Ok, response);
            }
            catch (RpcException e)
            {
                Count(e.StatusCode);
                if (e.StatusCode is StatusCode.Unknown or StatusCode.Internal && Result.UnknownOrInternalSamples.Count < 5)
                {
                    Result.UnknownOrInternalSamples.Enqueue($"{e.StatusCode}: {e.Status.Detail}");
                }

                if (e.StatusCode is StatusCode.ResourceExhausted or StatusCode.PermissionDenied or StatusCode.AlreadyExists
                    or StatusCode.InvalidArgument or StatusCode.FailedPrecondition)
                {
                    return (Answer.Refused, null);
                }
            }
            catch (ObjectDisposedException)
            {
                // The instance was replaced meanwhile: try the other one.
            }

            if (cancellationToken.IsCancellationRequested || budget.Elapsed > spec.RetryBudget)
            {
                Interlocked.Increment(ref Result.GaveUp);
                return (Answer.GaveUp, null);
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100 + Random.Shared.Next(150)), CancellationToken.None);
        }
    }

    private void Count(StatusCode code) => Result.Statuses.AddOrUpdate(code, 1, (_, n) => n + 1);
}
