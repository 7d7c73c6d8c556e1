using L2L;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace L2L.Host;

/// <summary>
/// Watches the jobs directory, queues jobs and runs at most MaxConcurrentJobs at a time, each on a
/// dedicated thread. On shutdown every running job checkpoints and stops; unfinished jobs resume on
/// the next start.
/// </summary>
public sealed class Scheduler(IOptions<WorkerOptions> options, ILogger<Scheduler> logger) : BackgroundService
{
    private readonly WorkerOptions _options = options.Value;
    private readonly Queue<string> _queue = new();
    private readonly HashSet<string> _known = new(StringComparer.Ordinal);
    private readonly List<(string Id, Thread Thread, TaskCompletionSource<JobOutcome> Done)> _running = [];

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var jobsDir = Path.GetFullPath(_options.JobsDirectory);
        Directory.CreateDirectory(jobsDir);
        if (!string.IsNullOrWhiteSpace(_options.DataDirectory))
            Datasets.dataDir = Microsoft.FSharp.Core.FSharpOption<string>.Some(_options.DataDirectory);
        L2L.LstmKernel.setThreads(_options.Threads > 0 ? _options.Threads : Environment.ProcessorCount);
        Log.WorkerStarted(logger, jobsDir, _options.MaxConcurrentJobs);
        foreach (var id in JobStore.Unfinished(jobsDir))
            Enqueue(id);

        using var jobsStop = new CancellationTokenSource();
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                foreach (var file in Directory.GetFiles(jobsDir, "*.json").OrderBy(f => File.GetLastWriteTimeUtc(f)).ThenBy(f => f, StringComparer.Ordinal))
                {
                    var id = JobStore.Accept(jobsDir, file, (f, reason) => Log.SpecRejected(logger, f, reason));
                    if (id is not null) Enqueue(id);
                }
                _running.RemoveAll(r => r.Done.Task.IsCompleted);
                while (_running.Count < _options.MaxConcurrentJobs && _queue.Count > 0)
                    Start(jobsDir, _queue.Dequeue(), jobsStop.Token);
                try { await Task.Delay(_options.PollIntervalMs, stoppingToken); }
                catch (OperationCanceledException) { }
            }
        }
        finally
        {
            Log.WorkerStopping(logger, _running.Count(r => !r.Done.Task.IsCompleted));
            await jobsStop.CancelAsync();
            await Task.WhenAll(_running.Select(r => r.Done.Task));
        }
    }

    private void Enqueue(string id)
    {
        if (_known.Add(id))
        {
            _queue.Enqueue(id);
            Log.JobQueued(logger, id);
        }
    }

    private void Start(string jobsDir, string id, CancellationToken stop)
    {
        var done = new TaskCompletionSource<JobOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        var runner = new JobRunner(jobsDir, id, _options, logger);
        var thread = new Thread(() =>
        {
            try { done.SetResult(runner.Run(stop)); }
            catch (Exception e) { done.SetException(e); }
        })
        {
            IsBackground = true,
            Name = "job " + id,
        };
        _running.Add((id, thread, done));
        thread.Start();
    }
}
