using Orleans;
using L2L;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.FSharp.Core;

namespace L2L.Host;

/// <summary>
/// Watches the jobs directory, queues jobs and runs at most MaxConcurrentJobs at a time, each on a
/// dedicated thread. On shutdown every running job checkpoints and stops; unfinished jobs resume on
/// the next start.
/// </summary>
public sealed class Scheduler(IOptions<WorkerOptions> options, RuntimeSettings runtime, JobTasks tasks, WorkerExit exit, IHostApplicationLifetime lifetime, L2L.Cluster.ClusterSettings cluster, IServiceProvider services, ILogger<Scheduler> logger) : BackgroundService
{
    private readonly WorkerOptions _options = options.Value;
    private readonly Queue<string> _queue = new();
    private readonly HashSet<string> _known = new(StringComparer.Ordinal);
    private readonly List<(string Id, Thread Thread, TaskCompletionSource<JobOutcome> Done)> _running = [];

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var jobsDir = Path.GetFullPath(_options.JobsDirectory);
        try
        {
            Directory.CreateDirectory(jobsDir);
            JobsDirectory.unfinished(jobsDir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // the worker cannot run at all: one line, a non-zero exit
            Console.Error.WriteLine($"l2l-worker: the jobs directory {jobsDir} cannot be used: {e.Message}");
            exit.Code = 1;
            lifetime.StopApplication();
            return;
        }
        Log.WorkerStarted(logger, jobsDir, _options.MaxConcurrentJobs);
        foreach (var id in JobsDirectory.unfinished(jobsDir))
            Enqueue(id);

        using var jobsStop = new CancellationTokenSource();
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                try
                {
                    foreach (var file in JobsDirectory.submitted(jobsDir))
                    {
                        var id = JobsDirectory.acceptWith(tasks.Catalog, jobsDir, file, FuncConvert.FromAction<string, string>((f, reason) => Log.SpecRejected(logger, f, reason)));
                        if (FSharpOption<string>.get_IsSome(id)) Enqueue(id.Value);
                    }
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // the jobs directory went away or became unreadable: running jobs checkpoint
                    // and stop, and the worker exits non-zero
                    Console.Error.WriteLine($"l2l-worker: the jobs directory {jobsDir} cannot be read any more: {e.Message}");
                    exit.Code = 1;
                    lifetime.StopApplication();
                    break;
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
        // a distributed job's shards go to the cluster's silos when the worker is one of them
        var grains = cluster.Enabled ? services.GetService(typeof(IGrainFactory)) as IGrainFactory : null;
        var runner = new JobRunner(jobsDir, id, _options, runtime, tasks, logger, grains is null ? null : (grains, cluster));
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
