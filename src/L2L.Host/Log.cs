using Microsoft.Extensions.Logging;

namespace L2L.Host;

/// <summary>The worker's log messages (source-generated).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Worker watching {JobsDirectory} (max {MaxConcurrentJobs} concurrent jobs)")]
    public static partial void WorkerStarted(ILogger logger, string jobsDirectory, int maxConcurrentJobs);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Job {JobId} queued")]
    public static partial void JobQueued(ILogger logger, string jobId);

    [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "Job {JobId} started at meta-iteration {Iteration} of {MetaIterations}")]
    public static partial void JobStarted(ILogger logger, string jobId, int iteration, int metaIterations);

    [LoggerMessage(EventId = 4, Level = LogLevel.Information, Message = "Job {JobId} resumed from checkpoint {Checkpoint} (meta-iteration {Iteration})")]
    public static partial void JobResumed(ILogger logger, string jobId, string checkpoint, int iteration);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "Job {JobId} iter {Iteration}/{MetaIterations} meta-loss {MetaLoss:G4} train f {TrainLoss:G4} validation {Validation:G4} {StepsPerSecond:F0} steps/s remaining {Remaining}")]
    public static partial void Progress(ILogger logger, string jobId, int iteration, int metaIterations, double metaLoss, double trainLoss, double validation, double stepsPerSecond, string remaining);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "Job {JobId} meta-iteration {Iteration}: non-finite loss or meta-gradient; update discarded (φ and Adam rolled back to the last good state), meta-lr reduced to {MetaLr:G4}")]
    public static partial void Fault(ILogger logger, string jobId, int iteration, double metaLr);

    [LoggerMessage(EventId = 7, Level = LogLevel.Information, Message = "Job {JobId} checkpoint {Checkpoint} written (meta-iteration {Iteration})")]
    public static partial void CheckpointWritten(ILogger logger, string jobId, string checkpoint, int iteration);

    [LoggerMessage(EventId = 8, Level = LogLevel.Error, Message = "Job {JobId} checkpoint {Checkpoint} is unusable ({Problem}); trying the one before")]
    public static partial void CheckpointUnusable(ILogger logger, string jobId, string checkpoint, string problem);

    [LoggerMessage(EventId = 9, Level = LogLevel.Information, Message = "Job {JobId} completed: best validation loss {BestLoss:G4} at meta-iteration {BestIteration}")]
    public static partial void JobCompleted(ILogger logger, string jobId, double bestLoss, int bestIteration);

    [LoggerMessage(EventId = 10, Level = LogLevel.Error, Message = "Job {JobId} failed: {Reason}")]
    public static partial void JobFailed(ILogger logger, string jobId, string reason);

    [LoggerMessage(EventId = 11, Level = LogLevel.Information, Message = "Job {JobId} cancelled at meta-iteration {Iteration}")]
    public static partial void JobCancelled(ILogger logger, string jobId, int iteration);

    [LoggerMessage(EventId = 12, Level = LogLevel.Information, Message = "Job {JobId} stopped for shutdown at meta-iteration {Iteration}; it resumes on the next start")]
    public static partial void JobSuspended(ILogger logger, string jobId, int iteration);

    [LoggerMessage(EventId = 13, Level = LogLevel.Error, Message = "Spec {File} rejected: {Reason}")]
    public static partial void SpecRejected(ILogger logger, string file, string reason);

    [LoggerMessage(EventId = 14, Level = LogLevel.Information, Message = "Job {JobId} evaluation: {Line}")]
    public static partial void Evaluation(ILogger logger, string jobId, string line);

    [LoggerMessage(EventId = 15, Level = LogLevel.Information, Message = "Worker stopping: {Running} running job(s) checkpoint and stop")]
    public static partial void WorkerStopping(ILogger logger, int running);

    [LoggerMessage(EventId = 16, Level = LogLevel.Warning, Message = "Job {JobId} checkpoint of meta-iteration {Iteration} not written (attempt {Attempt} of {Attempts}): {Problem}")]
    public static partial void CheckpointWriteFailed(ILogger logger, string jobId, int iteration, int attempt, int attempts, string problem);
}
