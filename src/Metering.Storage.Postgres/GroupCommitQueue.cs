namespace Metering.Storage.Postgres;

/// <summary>
/// Collects writes for group commit. A write is queued, and while fewer than <c>lanes</c> batches run, a new lane
/// starts at once with whatever is queued at that moment (no waiting for more when idle); a lane that finishes its
/// batch takes the next one, up to <c>maxBatch</c> writes, from everything that queued up meanwhile. So under load
/// the batches grow by themselves and at most <c>lanes</c> transactions (and connections) are in use for writes.
/// </summary>
internal sealed class GroupCommitQueue<T>
{
    private readonly Func<IReadOnlyList<T>, Task> run;
    private readonly int lanes;
    private readonly int maxBatch;
    private readonly Queue<T> queue = new();
    private readonly Lock gate = new();
    private int running;

    /// <param name="run">Runs one batch; it must complete every write itself, success or failure, and not throw.</param>
    public GroupCommitQueue(Func<IReadOnlyList<T>, Task> run, int lanes, int maxBatch)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(lanes, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        this.run = run;
        this.lanes = lanes;
        this.maxBatch = maxBatch;
    }

    public void Enqueue(T write)
    {
        bool start;
        lock (gate)
        {
            queue.Enqueue(write);
            start = running < lanes;
            if (start)
            {
                running++;
            }
        }

        if (start)
        {
            _ = Task.Run(LaneAsync);
        }
    }

    private async Task LaneAsync()
    {
        while (true)
        {
            var batch = new List<T>();
            lock (gate)
            {
                while (batch.Count < maxBatch && queue.TryDequeue(out var write))
                {
                    batch.Add(write);
                }

                if (batch.Count == 0)
                {
                    running--;
                    return;
                }
            }

            await run(batch).ConfigureAwait(false);
        }
    }
}
