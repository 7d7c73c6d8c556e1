using System.Text;
using L2L;
using L2L.Cluster;
using Orleans;
using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Core;
using static TorchSharp.torch.utils.tensorboard;

namespace L2L.Host;

/// <summary>How a job's run ended.</summary>
public enum JobOutcome { Completed, Failed, Cancelled, Suspended }

/// <summary>
/// Runs one job on the calling thread (a dedicated thread: TorchSharp's dispose scopes are per
/// thread): resumes from its newest usable checkpoint, meta-trains with checkpoints every K
/// meta-iterations, and on completion writes optimizer.json and results.json. On a cluster it also
/// reports its state to the cluster's board, keeps its checkpoints and output files in the cluster
/// (so any silo can resume it), and sends a distributed job's shards to the silos.
/// </summary>
public sealed class JobRunner(string jobsDirectory, string id, WorkerOptions options, RuntimeSettings runtime, JobTasks tasks, ILogger logger, ClusterJobs? cluster = null)
{
    private readonly string _dir = JobsDirectory.jobDirectory(jobsDirectory, id);

    private bool CancelRequested => JobsDirectory.cancelRequested(_dir);

    public JobOutcome Run(CancellationToken shutdown)
    {
        using var jobLog = new StreamWriter(Path.Combine(_dir, "job.log"), append: true, Encoding.UTF8) { AutoFlush = true };
        void Note(string line) => jobLog.WriteLine($"{DateTimeOffset.UtcNow:O} {line}");

        JobSpec spec;
        string specText;
        try
        {
            specText = File.ReadAllText(Path.Combine(_dir, "spec.json"));
            spec = JobSession.ParseSpec(specText, tasks.Catalog);
        }
        catch (Exception e) when (e is ArgumentException or IOException)
        {
            return Fail(null, $"invalid spec: {e.Message}", Note);
        }
        if (spec.Id != id)
            return Fail(null, $"invalid spec: its id '{spec.Id}' does not match the job directory '{id}'", Note);
        if (CancelRequested)
            return Cancel(null, 0, Note);

        var store = new CheckpointStore(_dir, options.KeepCheckpoints);
        JobSession? session = null;
        try
        {
            session = OpenSession(spec, store, Note);
            ClusterShards? shards = null;
            if (cluster is { } c && session.Shards > 1)
            {
                shards = new ClusterShards(c.Grains, c.Settings, id, specText, logger);
                session.UseShards(shards.Run);
                Note($"distributed: {session.Shards} shards per meta-iteration, computed on the cluster's silos");
            }
            Log.JobStarted(logger, id, session.Iteration, session.MetaIterations);
            Note($"running from meta-iteration {session.Iteration} of {session.MetaIterations}");
            WriteStatus(session, JobState.Running, null);
            var events = options.TensorBoard ? SummaryWriter(Path.Combine(_dir, "events")) : null;
            var checkpointEvery = spec.CheckpointEvery;
            // the remaining time is estimated from this run's pace (a resumed job from where it resumed)
            var startIteration = session.Iteration;
            var clock = System.Diagnostics.Stopwatch.StartNew();

            while (!session.IsDone)
            {
                if (shutdown.IsCancellationRequested)
                {
                    Checkpoint(session, store, Note);
                    WriteStatus(session, JobState.Queued, "worker stopped; the job resumes from its checkpoint on the next start");
                    Log.JobSuspended(logger, id, session.Iteration);
                    Note($"suspended at meta-iteration {session.Iteration}");
                    return JobOutcome.Suspended;
                }
                if (CancelRequested)
                {
                    Checkpoint(session, store, Note);
                    return Cancel(session, session.Iteration, Note);
                }

                var info = session.Step();
                if (!info.Finite)
                {
                    Log.Fault(logger, id, info.Iteration, info.MetaLr);
                    Note($"meta-iteration {info.Iteration}: non-finite loss or meta-gradient; update discarded, meta-lr reduced to {info.MetaLr:G4}");
                }
                var validated = !double.IsNaN(info.Validation);
                if (validated || info.Iteration % options.LogEvery == 0)
                {
                    var status = new ProgressStatus("meta-training", info.Iteration - startIteration, session.MetaIterations - startIteration, "it", clock.Elapsed);
                    var remaining = ProgressStatusModule.remaining(status);
                    var eta = remaining is null ? "-" : remaining.Value.ToString(@"h\:mm\:ss");
                    Log.Progress(logger, id, info.Iteration, session.MetaIterations, info.MetaLoss, info.TrainLoss, info.Validation, info.StepsPerSecond, eta);
                    Note($"iter {info.Iteration}/{session.MetaIterations} meta-loss {info.MetaLoss:G6} train {info.TrainLoss:G6} validation {info.Validation:G6} {info.StepsPerSecond:F0} steps/s remaining {eta}");
                    if (shards?.Last is { } round)
                    {
                        var silos = string.Join(" ", round.Silos);
                        ClusterLog.Round(logger, id, info.Iteration, round.Shards, silos, round.ShardSeconds.Max() * 1000, round.RoundSeconds * 1000);
                        Note($"iter {info.Iteration}: shards on {silos}; each {string.Join(" ", round.ShardSeconds.Select(x => $"{x * 1000:F0}"))} ms, the round {round.RoundSeconds * 1000:F0} ms");
                    }
                }
                if (events is not null)
                {
                    if (double.IsFinite(info.MetaLoss)) events.add_scalar("meta_loss", (float)info.MetaLoss, info.Iteration);
                    if (validated && double.IsFinite(info.Validation)) events.add_scalar("validation_loss", (float)info.Validation, info.Iteration);
                    events.add_scalar("meta_lr", (float)info.MetaLr, info.Iteration);
                    if (double.IsFinite(info.StepsPerSecond)) events.add_scalar("steps_per_s", (float)info.StepsPerSecond, info.Iteration);
                }
                if (info.Iteration % checkpointEvery == 0)
                {
                    Checkpoint(session, store, Note);
                    WriteStatus(session, JobState.Running, null);
                }
            }

            Checkpoint(session, store, Note);
            if (session.HasFailed)
                return Fail(session, session.FailureReason, Note);

            session.SaveOptimizer(Path.Combine(_dir, "optimizer.json"));
            AtomicFile.writeText(Path.Combine(_dir, "phi.sha256"), session.PhiSha256() + "\n");
            session.Evaluate(Path.Combine(_dir, "results.json"), new Action<string>(line =>
            {
                Log.Evaluation(logger, id, line);
                Note(line);
            }));
            // the silo it was submitted on takes these from the cluster
            var stored = cluster?.PutOutputs(id, OutputFiles.Where(f => File.Exists(Path.Combine(_dir, f))).ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(_dir, f)))) ?? true;
            WriteStatus(session, JobState.Completed, stored ? null : $"its output files could not be stored in the cluster; they are in {_dir} on silo {cluster!.Silo}");
            Log.JobCompleted(logger, id, session.BestLoss, session.BestIteration);
            Note("completed");
            return JobOutcome.Completed;
        }
        catch (CheckpointWriteException e)
        {
            return Fail(session, e.Message, Note);
        }
        catch (CheckpointFormatException e)
        {
            return Fail(session, e.Message, Note);
        }
        catch (ShardFailedException e)
        {
            return Fail(session, e.Message, Note);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return Fail(session, $"{e.GetType().Name}: {e.Message}", Note);
        }
        finally
        {
            (session as IDisposable)?.Dispose();
        }
    }

    /// <summary>The files a completed job leaves, which the cluster keeps for the silo it was submitted on.</summary>
    public static readonly string[] OutputFiles = ["optimizer.json", "phi.sha256", "results.json"];

    private JobSession OpenSession(JobSpec spec, CheckpointStore store, Action<string> note)
    {
        store.RemoveTemporaries();
        if (cluster is not null)
        {
            // the job may have run on another silo: its newest checkpoint is in the cluster
            var (iteration, bytes) = cluster.Checkpoint(id);
            var newestHere = store.List().Select(CheckpointIteration).DefaultIfEmpty(-1).Max();
            if (bytes is not null && iteration > newestHere)
            {
                store.Write(iteration, bytes);
                ClusterLog.CheckpointFetched(logger, id, iteration);
                note($"took the cluster's checkpoint of meta-iteration {iteration}");
            }
        }
        foreach (var path in store.List())
        {
            var name = Path.GetFileName(path);
            byte[] bytes;
            try { bytes = File.ReadAllBytes(path); }
            catch (IOException e)
            {
                Log.CheckpointUnusable(logger, id, name, e.Message);
                continue;
            }
            var version = JobSession.OtherFormatVersion(bytes);
            if (version != 0)
                // not damaged: kept, and the job is not silently restarted from scratch
                throw new CheckpointFormatException(
                    $"checkpoint {name} is of format version {version}, which this version does not read (it reads version {L2L.Checkpoint.Version}); " +
                    $"resume the job with the version that wrote it, or delete {store.Directory} to start it over");
            var problem = JobSession.Verify(bytes);
            if (problem is null)
            {
                try
                {
                    var session = JobSession.Resume(spec, runtime, bytes);
                    Log.JobResumed(logger, id, name, session.Iteration);
                    note($"resumed from {name} (meta-iteration {session.Iteration})");
                    return session;
                }
                catch (CheckpointRejected e)
                {
                    problem = JobSession.Describe(e.Data0);
                }
            }
            Log.CheckpointUnusable(logger, id, name, problem);
            note($"checkpoint {name} is unusable ({problem}); trying the one before");
            store.Quarantine(path);
        }
        return JobSession.Start(spec, runtime);
    }

    private int _lastCheckpoint = -1;

    /// <summary>Attempts at writing a checkpoint before the job fails (with backoff between them).</summary>
    private const int CheckpointAttempts = 3;

    /// <summary>
    /// Writes the session's checkpoint (atomically: a failed write leaves the previous checkpoints
    /// as they were), retrying a failed write; after the last attempt the job fails with the reason.
    /// </summary>
    private void Checkpoint(JobSession session, CheckpointStore store, Action<string> note)
    {
        if (session.Iteration == _lastCheckpoint) return;
        var bytes = session.Checkpoint();
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                var path = store.Write(session.Iteration, bytes);
                _lastCheckpoint = session.Iteration;
                cluster?.PutCheckpoint(id, session.Iteration, bytes);
                Log.CheckpointWritten(logger, id, Path.GetFileName(path), session.Iteration);
                note($"checkpoint {Path.GetFileName(path)}");
                return;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Log.CheckpointWriteFailed(logger, id, session.Iteration, attempt, CheckpointAttempts, e.Message);
                note($"checkpoint of meta-iteration {session.Iteration} not written (attempt {attempt} of {CheckpointAttempts}): {e.Message}");
                if (attempt == CheckpointAttempts)
                    throw new CheckpointWriteException(
                        $"the checkpoint of meta-iteration {session.Iteration} could not be written after {CheckpointAttempts} attempts ({e.Message}); the last good checkpoint is kept", e);
                Thread.Sleep(TimeSpan.FromMilliseconds(250 << (attempt - 1)));
            }
        }
    }

    private JobOutcome Fail(JobSession? session, string reason, Action<string> note)
    {
        WriteStatus(session, JobState.Failed, reason);
        Log.JobFailed(logger, id, reason);
        note($"failed: {reason}");
        return JobOutcome.Failed;
    }

    private JobOutcome Cancel(JobSession? session, int iteration, Action<string> note)
    {
        WriteStatus(session, JobState.Cancelled, "cancelled on request");
        Log.JobCancelled(logger, id, iteration);
        note("cancelled");
        return JobOutcome.Cancelled;
    }

    /// <summary>ckpt-00000123.bin → 123 (−1 for another name).</summary>
    private static int CheckpointIteration(string path)
    {
        var name = Path.GetFileNameWithoutExtension(path);
        return name.StartsWith("ckpt-", StringComparison.Ordinal) && int.TryParse(name.AsSpan(5), out var i) ? i : -1;
    }

    private void WriteStatus(JobSession? session, JobState state, string? reason)
    {
        cluster?.Report(id, JobStateModule.name(state), session?.Iteration ?? 0, session?.MetaIterations ?? 0,
            session is not null && double.IsFinite(session.BestLoss) ? session.BestLoss : null, reason);
        JobsDirectory.writeStatusOn(
            cluster is null ? FSharpOption<string>.None : FSharpOption<string>.Some(cluster.Silo),
            _dir, id, state,
            reason is null ? FSharpOption<string>.None : FSharpOption<string>.Some(reason),
            session is null
                ? FSharpOption<Tuple<int, int, FSharpOption<double>, FSharpOption<double>>>.None
                : FSharpOption<Tuple<int, int, FSharpOption<double>, FSharpOption<double>>>.Some(Tuple.Create(
                    session.Iteration,
                    session.MetaIterations,
                    double.IsFinite(session.BestLoss) ? FSharpOption<double>.Some(session.BestLoss) : FSharpOption<double>.None,
                    FSharpOption<double>.Some(session.MetaLr))));
    }
}

/// <summary>A checkpoint that could not be written after every attempt.</summary>
public sealed class CheckpointWriteException(string message, Exception inner) : Exception(message, inner);

/// <summary>A checkpoint of a format this version does not read.</summary>
public sealed class CheckpointFormatException(string message) : Exception(message);
