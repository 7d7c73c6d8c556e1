using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace L2L.Cluster;

/// <summary>What a shard's call gives back: the result bytes, the silo that computed them, and how long it took there.</summary>
[GenerateSerializer, Immutable]
public sealed record ShardReply([property: Id(0)] byte[] Result, [property: Id(1)] string Silo, [property: Id(2)] double Seconds);

/// <summary>Computes one shard of a meta-iteration. A job's shard keeps its activation (its key, ShardKey) from one meta-iteration to the next; a retried shard gets a new key, of the next generation, which places it on the next silo (ShardPlacement).</summary>
public interface IShardGrain : IGrainWithStringKey
{
    /// <summary>The result bytes of shard work bytes (ShardWire) for the job whose spec (JSON) is given.</summary>
    Task<ShardReply> Compute(string spec, byte[] work);
}

[ShardPlacement]
public sealed class ShardGrain(ShardService service, ILocalSiloDetails silo, ILogger<ShardGrain> logger) : Grain, IShardGrain
{
    public async Task<ShardReply> Compute(string spec, byte[] work)
    {
        var clock = Stopwatch.StartNew();
        // libtorch's dispose scopes are per thread, and the work is long: a thread of its own, off
        // the silo's scheduler. Nothing is kept between calls.
        var result = await Task.Factory.StartNew(
            () => service.Compute(spec, work),
            CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        ClusterLog.ShardComputed(logger, silo.SiloAddress.ToString(), work.Length, result.Length, clock.Elapsed.TotalMilliseconds);
        return new ShardReply(result, silo.SiloAddress.ToString(), clock.Elapsed.TotalSeconds);
    }
}
