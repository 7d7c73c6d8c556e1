using L2L;
using L2L.Cluster;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.FSharp.Core;

namespace L2L.Host;

/// <summary>
/// Watches the jobs directory, queues jobs and runs at most MaxConcurrentJobs at a time, each on a
/// dedicated thread. On shutdown every running job checkpoints and stops; unfinished jobs resume on
/// the next start. On a cluster the queue is the cluster's board: the jobs dropped here are posted to
/// it, this worker takes the oldest queued job of the whole cluster whenever it has room, and the
/// status of a job submitted here but run elsewhere is kept up to date here, its output files copied
/// here when it completes.
/// </summary>
public sealed class Scheduler(IOptions<WorkerOptions> options, RuntimeSettings runtime, JobTasks tasks, WorkerExit exit, IHostApplicationLifetime lifetime, ClusterSettings clusterSettings, IServiceProvider services, ILogger<Scheduler> logger) : BackgroundService
{
    private readonly WorkerOptions _options = options.Value;
    private readonly Queue<string> _queue = new();
    private readonly HashSet<string> _known = new(StringComparer.Ordinal);
    private readonly List<(string Id, Thread Thread, TaskCompletionSource<JobOutcome> Done)> _running = [];
    // jobs submitted here that the cluster runs (on this silo or another): their status mirrors the board's
    private readonly HashSet<string> _posted = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (string State, string? Runner, int Iteration, string? Reason)> _mirrored = new(StringComparer.Ordinal);
    private readonly ClusterJobs? _cluster = clusterSettings.Enabled ? services.GetService(typeof(ClusterJobs)) as ClusterJobs : null;

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
            // a job this silo took from another's submission is the board's to hand out again
            if (_cluster is null || !File.Exists(Path.Combine(JobsDirectory.jobDirectory(jobsDir, id), ForeignMarker)))
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
                        // a spec taken in is a new job, even under the id of one that ended and was deleted
                        if (FSharpOption<string>.get_IsSome(id)) { _known.Remove(id.Value); Enqueue(id.Value); }
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
                if (_cluster is null)
                {
                    while (_running.Count < _options.MaxConcurrentJobs && _queue.Count > 0)
                        Start(jobsDir, _queue.Dequeue(), jobsStop.Token);
                }
                else
                {
                    await Cluster(jobsDir, _cluster, jobsStop.Token);
                }
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

    /// <summary>In the directory of a job submitted on another silo and run here: that silo's address.</summary>
    private const string ForeignMarker = "submitted-on";

    private void Enqueue(string id)
    {
        if (_known.Add(id))
        {
            _queue.Enqueue(id);
            Log.JobQueued(logger, id);
        }
    }

    /// <summary>One round on a cluster: post the jobs queued here, take jobs while there is room, mirror the jobs submitted here.</summary>
    private async Task Cluster(string jobsDir, ClusterJobs cluster, CancellationToken stop)
    {
        try
        {
            while (_queue.TryPeek(out var id))
            {
                var dir = JobsDirectory.jobDirectory(jobsDir, id);
                string spec;
                try { spec = File.ReadAllText(Path.Combine(dir, "spec.json")); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    _queue.Dequeue();
                    ClusterLog.NotPosted(logger, id, $"its spec cannot be read: {e.Message}");
                    continue;
                }
                var refused = await cluster.Submit(id, spec);
                _queue.Dequeue();
                if (refused is null)
                    _posted.Add(id);
                else
                {
                    ClusterLog.NotPosted(logger, id, refused);
                    TryIo(() => JobsDirectory.writeStatus(dir, id, JobState.Failed, FSharpOption<string>.Some(refused), FSharpOption<Tuple<int, int, FSharpOption<double>, FSharpOption<double>>>.None));
                }
            }
            while (_running.Count < _options.MaxConcurrentJobs)
            {
                var claimed = await cluster.Claim(_skip);
                if (claimed is null) break;
                if (TryIo(() => Prepare(jobsDir, cluster, claimed)) is true)
                {
                    if (claimed.Origin != cluster.Origin)
                        ClusterLog.Claimed(logger, claimed.Id, claimed.Origin);
                    Start(jobsDir, claimed.Id, stop);
                }
                else
                {
                    // not runnable here (another job of this id is here, or its task is unknown here): back to the queue, for another silo
                    _skip.Add(claimed.Id);
                    cluster.Report(claimed.Id, "queued", claimed.Iteration, claimed.MetaIterations, claimed.BestValidation, claimed.Reason);
                }
            }
            // every round: the board's view reconciled with this silo's (cancellations, lost claims, mirrors)
            {
                var board = (await cluster.List()).ToDictionary(e => e.Id, StringComparer.Ordinal);
                foreach (var e in board.Values)
                {
                    var runningHere = _running.Any(r => r.Id == e.Id && !r.Done.Task.IsCompleted);
                    // a cancellation asked for on the silo a job was submitted on reaches the silo running it
                    if (runningHere && e.CancelRequested && !JobsDirectory.cancelRequested(JobsDirectory.jobDirectory(jobsDir, e.Id)))
                        TryIo(() => { JobsDirectory.requestCancel(jobsDir, e.Id); return true; });
                    // the board says this silo runs a job it does not (a claim whose answer was lost): run it, or give it back
                    if (e.State == "running" && e.Runner == cluster.Silo && !runningHere && !_skip.Contains(e.Id))
                    {
                        if (_running.Count < _options.MaxConcurrentJobs && TryIo(() => Prepare(jobsDir, cluster, e)) is true)
                            Start(jobsDir, e.Id, stop);
                        else
                            cluster.Report(e.Id, "queued", e.Iteration, e.MetaIterations, e.BestValidation, e.Reason);
                    }
                }
                if (_posted.Count > 0)
                    await Mirror(jobsDir, cluster, board);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // the cluster is not reachable now (starting, or a silo going away): the next round tries again
            ClusterLog.CallFailed(logger, "use the job board", $"{e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>Jobs of the board this silo will not run (another job of the same id is here, or its spec names a task unknown here).</summary>
    private readonly HashSet<string> _skip = new(StringComparer.Ordinal);

    /// <summary>
    /// The local directory of a job taken from the board (false: a different job of that id is here,
    /// or this silo cannot read its spec, e.g. it lacks the task assembly the spec names).
    /// </summary>
    private bool Prepare(string jobsDir, ClusterJobs cluster, BoardEntry claimed)
    {
        if (JobSpecModule.parseWith(tasks.Catalog, claimed.Spec).IsError)
            return false;
        var dir = JobsDirectory.jobDirectory(jobsDir, claimed.Id);
        var specPath = Path.Combine(dir, "spec.json");
        if (File.Exists(specPath) && File.ReadAllText(specPath) != claimed.Spec)
            return false;
        Directory.CreateDirectory(dir);
        if (!File.Exists(specPath))
            AtomicFile.writeText(specPath, claimed.Spec);
        if (claimed.Origin != cluster.Origin)
            AtomicFile.writeText(Path.Combine(dir, ForeignMarker), claimed.Origin + "\n");
        return true;
    }

    /// <summary>f's result, or null (logged) when the jobs directory fails it.</summary>
    private bool? TryIo(Func<bool> f)
    {
        try { return f(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            ClusterLog.CallFailed(logger, "use the jobs directory", e.Message);
            return null;
        }
    }

    private void TryIo(Action f) => TryIo(() => { f(); return true; });

    /// <summary>The board's state of the jobs submitted here and run on other silos, written here; a completed one's output files copied here.</summary>
    private async Task Mirror(string jobsDir, ClusterJobs cluster, Dictionary<string, BoardEntry> board)
    {
        foreach (var id in _posted.ToList())
        {
            if (!board.TryGetValue(id, out var e) || e.Origin != cluster.Origin) continue;
            var dir = JobsDirectory.jobDirectory(jobsDir, id);
            var running = _running.Any(r => r.Id == id && !r.Done.Task.IsCompleted);
            if (!running && !e.CancelRequested && e.State is "queued" or "running" && JobsDirectory.cancelRequested(dir))
                await cluster.Cancel(id);
            var final = e.State is "completed" or "failed" or "cancelled";
            // the board's state, unless this silo runs (or ran) the job and wrote it itself: running
            // elsewhere, ended elsewhere, or back in the queue; written when it changes
            var seen = (e.State, e.Runner, e.Iteration, e.Reason);
            if (!running && e.Runner != cluster.Silo && (!_mirrored.TryGetValue(id, out var last) || last != seen))
            {
                _mirrored[id] = seen;
                if (e.State == "completed")
                    foreach (var (name, bytes) in await cluster.Outputs(id))
                        if (Array.IndexOf(JobRunner.OutputFiles, name) >= 0)
                            AtomicFile.write(Path.Combine(dir, name), bytes);
                var state = JobStateModule.parse(e.State);
                if (FSharpOption<JobState>.get_IsSome(state))
                    JobsDirectory.writeStatusOn(
                        e.Runner is null ? FSharpOption<string>.None : FSharpOption<string>.Some(e.Runner),
                        dir, id, state.Value,
                        e.Reason is null ? FSharpOption<string>.None : FSharpOption<string>.Some(e.Reason),
                        FSharpOption<Tuple<int, int, FSharpOption<double>, FSharpOption<double>>>.Some(Tuple.Create(e.Iteration, e.MetaIterations,
                            e.BestValidation is { } best ? FSharpOption<double>.Some(best) : FSharpOption<double>.None, FSharpOption<double>.None)));
            }
            if (final) _posted.Remove(id);
        }
    }

    private void Start(string jobsDir, string id, CancellationToken stop)
    {
        var done = new TaskCompletionSource<JobOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        var runner = new JobRunner(jobsDir, id, _options, runtime, tasks, logger, _cluster);
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
