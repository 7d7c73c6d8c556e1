using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace L2L.Cluster;

/// <summary>
/// Places a job's shards round-robin over the compatible silos (in the order of their addresses):
/// shard k's activation of generation g (its g-th grain, after g failed calls) goes to silo
/// (k + g) mod n. A job's K shards so spread over min(K, n) silos, and a retried shard moves on to the
/// next silo.
/// </summary>
[GenerateSerializer, Immutable]
public sealed class ShardPlacementStrategy : PlacementStrategy
{
    internal static readonly ShardPlacementStrategy Singleton = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class ShardPlacementAttribute() : PlacementAttribute(ShardPlacementStrategy.Singleton);

internal sealed class ShardPlacementDirector : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var silos = context.GetCompatibleSilos(target).OrderBy(s => s.ToString(), StringComparer.Ordinal).ToArray();
        var slot = ShardKey.Slot(target.GrainIdentity.Key.ToString() ?? "");
        return Task.FromResult(silos[(int)(slot % (uint)silos.Length)]);
    }
}

/// <summary>A shard grain's key: "job/run/shard/generation".</summary>
public static class ShardKey
{
    public static string Of(string jobId, Guid run, int shard, int generation) => $"{jobId}/{run:N}/{shard}/{generation}";

    /// <summary>shard + generation of a key (0 for a key of another form).</summary>
    public static uint Slot(string key)
    {
        var parts = key.Split('/');
        return parts.Length >= 4 && uint.TryParse(parts[^2], out var shard) && uint.TryParse(parts[^1], out var generation)
            ? shard + generation
            : 0;
    }
}
