using Microsoft.Extensions.Logging;

namespace L2L.Cluster;

/// <summary>The cluster's log events.</summary>
public static partial class ClusterLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "cluster {ClusterId}: silo {Silo} active ({Provider} clustering)")]
    public static partial void SiloActive(ILogger logger, string clusterId, string silo, string provider);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "cluster: {Active} active silo(s): {Silos}")]
    public static partial void Membership(ILogger logger, int active, string silos);

    [LoggerMessage(EventId = 102, Level = LogLevel.Debug, Message = "shard computed on {Silo}: {WorkBytes} bytes in, {ResultBytes} out, {Milliseconds:F1} ms")]
    public static partial void ShardComputed(ILogger logger, string silo, int workBytes, int resultBytes, double milliseconds);

    [LoggerMessage(EventId = 103, Level = LogLevel.Warning, Message = "job {JobId}: shard {Shard}, attempt {Attempt} of {Attempts} failed ({Reason}); retrying on a fresh activation in {DelayMs} ms")]
    public static partial void ShardRetry(ILogger logger, string jobId, int shard, int attempt, int attempts, string reason, int delayMs);

    [LoggerMessage(EventId = 104, Level = LogLevel.Error, Message = "job {JobId}: shard {Shard} failed after {Attempts} attempt(s): {Reason}")]
    public static partial void ShardFailed(ILogger logger, string jobId, int shard, int attempts, string reason);

    [LoggerMessage(EventId = 105, Level = LogLevel.Information, Message = "job {JobId}: meta-iteration {Iteration}: {Shards} shards on {Silos}; slowest shard {SlowestMs:F0} ms, the call round {RoundMs:F0} ms")]
    public static partial void Round(ILogger logger, string jobId, int iteration, int shards, string silos, double slowestMs, double roundMs);

    [LoggerMessage(EventId = 106, Level = LogLevel.Warning, Message = "cluster: could not {What}: {Reason}")]
    public static partial void CallFailed(ILogger logger, string what, string reason);

    [LoggerMessage(EventId = 107, Level = LogLevel.Information, Message = "job {JobId}: taken from the cluster's board (submitted on {Origin})")]
    public static partial void Claimed(ILogger logger, string jobId, string origin);

    [LoggerMessage(EventId = 108, Level = LogLevel.Information, Message = "job {JobId}: resuming from the cluster's checkpoint of meta-iteration {Iteration}")]
    public static partial void CheckpointFetched(ILogger logger, string jobId, int iteration);

    [LoggerMessage(EventId = 109, Level = LogLevel.Warning, Message = "job {JobId}: not posted to the cluster's board: {Reason}")]
    public static partial void NotPosted(ILogger logger, string jobId, string reason);
}
