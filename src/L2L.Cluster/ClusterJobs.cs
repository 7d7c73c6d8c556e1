using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace L2L.Cluster;

/// <summary>
/// A silo's side of the cluster's job board and job files, for the worker's scheduler and job runners
/// (synchronous: a job runs on a thread of its own). A call the cluster cannot answer is logged and
/// reported as such; it never loses what is on disk.
/// </summary>
public sealed class ClusterJobs(IGrainFactory grains, ILocalSiloDetails local, ClusterSettings settings, ILogger<ClusterJobs> logger)
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(30);

    public ClusterSettings Settings => settings;
    public IGrainFactory Grains => grains;

    /// <summary>This silo as the board names the silo running a job (its address and generation).</summary>
    public string Silo => SiloName.Runner(local.SiloAddress);

    /// <summary>This silo as the board names the silo a job was submitted on (its endpoint: the same after a restart).</summary>
    public string Origin => SiloName.Origin(local.SiloAddress);

    private IJobBoardGrain Board => grains.GetGrain<IJobBoardGrain>(JobBoard.Key);

    private IJobFilesGrain Files(string id) => grains.GetGrain<IJobFilesGrain>(id);

    public Task<string?> Submit(string id, string spec) => Board.Submit(id, spec, Origin).WaitAsync(CallTimeout);

    public Task<BoardEntry?> Claim(IEnumerable<string> skip) => Board.Claim(Silo, skip.ToArray()).WaitAsync(CallTimeout);

    public Task<BoardEntry[]> List() => Board.List().WaitAsync(CallTimeout);

    /// <summary>Tells the board a job's state (logged, not thrown, when the cluster cannot take it).</summary>
    public void Report(string id, string state, int iteration, int metaIterations, double? bestValidation, string? reason) =>
        Try($"report job {id}", () => Board.Report(id, Silo, state, iteration, metaIterations, bestValidation, reason));

    public Task<bool> Cancel(string id) => Board.Cancel(id).WaitAsync(CallTimeout);

    /// <summary>Keeps a job's checkpoint in the cluster, so any silo can resume the job.</summary>
    public void PutCheckpoint(string id, int iteration, byte[] bytes) =>
        Try($"store job {id}'s checkpoint of meta-iteration {iteration}", () => Files(id).PutCheckpoint(iteration, bytes));

    /// <summary>The job's newest checkpoint kept in the cluster (iteration −1: none, or the cluster did not answer).</summary>
    public (int Iteration, byte[]? Bytes) Checkpoint(string id)
    {
        try { return Files(id).Checkpoint().WaitAsync(CallTimeout).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            ClusterLog.CallFailed(logger, $"read job {id}'s checkpoint", $"{e.GetType().Name}: {e.Message}");
            return (-1, null);
        }
    }

    /// <summary>Keeps a completed job's output files in the cluster (three attempts; false: not kept).</summary>
    public bool PutOutputs(string id, Dictionary<string, byte[]> files)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                Files(id).PutOutputs(files).WaitAsync(CallTimeout).GetAwaiter().GetResult();
                return true;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                ClusterLog.CallFailed(logger, $"store job {id}'s output files (attempt {attempt} of 3)", $"{e.GetType().Name}: {e.Message}");
                if (attempt == 3) return false;
                Thread.Sleep(500 * attempt);
            }
        }
    }

    public Task<Dictionary<string, byte[]>> Outputs(string id) => Files(id).Outputs().WaitAsync(CallTimeout);

    private void Try(string what, Func<Task> call)
    {
        try { call().WaitAsync(CallTimeout).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            ClusterLog.CallFailed(logger, what, $"{e.GetType().Name}: {e.Message}");
        }
    }
}
