namespace Metering.Storage.Postgres;

/// <summary>
/// Collects writes for group commit. A write is queued, and while fewer than <c>lanes</c> batches run, a new lane
/// starts at once with whatever is queued at that moment (no waiting for more when idle); a lane that finishes its
/// batch takes the next one, up to <c>maxBatch</c> writes, from everything that queued up meanwhile. So under load
/// the batches grow by themselves and at most <c>lanes</c> transactions (and connections) are in use for writes.
/// </summary>
internal sealed class GroupCommitQueue<T>
{
    private readonly Func<IReadOnlyList<T>, Task> _run;
    private readonly int _lanes;
    private readonly int _maxBatch;
    private readonly Queue<T> _queue = new();
    private readonly Lock _gate = new();
    private int _running;

    /// <param name="run">Runs one batch; it must complete every write itself, success or failure, and not throw.</param>
    public GroupCommitQueue(Func<IReadOnlyList<T>, Task> run, int lanes, int maxBatch)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(lanes, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        _run = run;
        _lanes = lanes;
        _maxBatch = maxBatch;
    }

    public void Enqueue(T write)
    {
        bool start;
        lock (_gate)
        {
            _queue.Enqueue(write);
            start = _running < _lanes;
            if (start)
            {
                _running++;
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
            lock (_gate)
            {
                while (batch.Count < _maxBatch && _queue.TryDequeue(out var write))
                {
                    batch.Add(write);
                }

                if (batch.Count == 0)
                {
                    _running--;
                    return;
                }
            }

            await _run(batch).ConfigureAwait(false);
        }
    }
}
