using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace L2L.Cluster;

/// <summary>The timing of one meta-iteration's round of shard calls.</summary>
public sealed record ShardRound(int Shards, string[] Silos, double[] ShardSeconds, double RoundSeconds, int Retries);

/// <summary>
/// The coordinator's side of a distributed job: computes a meta-iteration's shards on the cluster's
/// silos, all at once, and gives their results in shard order. Each shard keeps its grain from one
/// meta-iteration to the next; a failed or timed-out call is retried on a new one (placed anew, so
/// away from a silo that died) up to ShardAttempts times. The result does not depend on where a
/// shard ran. Every failure is retried on the next silo, a bad spec or missing data too: another
/// silo may have the task assembly or the data set that this one lacks.
/// </summary>
public sealed class ClusterShards(IGrainFactory grains, ClusterSettings settings, string jobId, string spec, ILogger logger)
{
    // each shard's grain generation: the next one after a failed call
    private readonly Dictionary<int, int> _generations = new();
    private readonly Guid _run = Guid.NewGuid();

    private string Key(int shard)
    {
        lock (_generations)
            return ShardKey.Of(jobId, _run, shard, _generations.GetValueOrDefault(shard));
    }

    private void Replace(int shard)
    {
        lock (_generations) _generations[shard] = _generations.GetValueOrDefault(shard) + 1;
    }

    /// <summary>The last round's timing.</summary>
    public ShardRound? Last { get; private set; }

    /// <summary>Each shard's result bytes, in shard order (blocks the calling thread: a job's own).</summary>
    public byte[][] Run(byte[][] works)
    {
        var clock = Stopwatch.StartNew();
        var retries = 0;
        var calls = works.Select((work, k) => CallAsync(k, work, () => Interlocked.Increment(ref retries))).ToArray();
        var replies = Task.WhenAll(calls).GetAwaiter().GetResult();
        Last = new ShardRound(works.Length, replies.Select(r => r.Silo).ToArray(), replies.Select(r => r.Seconds).ToArray(), clock.Elapsed.TotalSeconds, retries);
        return replies.Select(r => r.Result).ToArray();
    }

    private async Task<ShardReply> CallAsync(int shard, byte[] work, Action retried)
    {
        var timeout = TimeSpan.FromSeconds(settings.ShardTimeoutSeconds);
        for (var attempt = 1; ; attempt++)
        {
            var grain = grains.GetGrain<IShardGrain>(Key(shard));
            try
            {
                return await grain.Compute(spec, work).WaitAsync(timeout);
            }
            catch (Exception e) when (attempt < settings.ShardAttempts)
            {
                var delay = Math.Min(250 << Math.Min(attempt - 1, 5), 5000);
                ClusterLog.ShardRetry(logger, jobId, shard, attempt, settings.ShardAttempts, $"{e.GetType().Name}: {e.Message}", delay);
                retried();
                Replace(shard);
                await Task.Delay(delay);
            }
            catch (Exception e)
            {
                ClusterLog.ShardFailed(logger, jobId, shard, attempt, $"{e.GetType().Name}: {e.Message}");
                throw new ShardFailedException($"shard {shard} failed after {attempt} attempt(s): {e.GetType().Name}: {e.Message}", e);
            }
        }
    }
}

/// <summary>A shard that could not be computed after every attempt: the job fails (its last checkpoint is kept).</summary>
public sealed class ShardFailedException(string message, Exception inner) : Exception(message, inner);
