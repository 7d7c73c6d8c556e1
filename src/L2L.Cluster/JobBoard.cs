using Orleans.Runtime;

namespace L2L.Cluster;

/// <summary>A job as the cluster's board knows it.</summary>
[GenerateSerializer, Immutable]
public sealed record BoardEntry(
    [property: Id(0)] string Id,
    [property: Id(1)] string Spec,
    [property: Id(2)] string Origin,
    [property: Id(3)] string? Runner,
    [property: Id(4)] string State,
    [property: Id(5)] int Iteration,
    [property: Id(6)] int MetaIterations,
    [property: Id(7)] string? Reason,
    [property: Id(8)] long Order,
    [property: Id(9)] int Starts,
    [property: Id(10)] DateTimeOffset Updated,
    [property: Id(11)] double? BestValidation = null,
    [property: Id(12)] bool CancelRequested = false);

[GenerateSerializer]
public sealed class BoardState
{
    [Id(0)] public Dictionary<string, BoardEntry> Jobs { get; set; } = new(StringComparer.Ordinal);
    [Id(1)] public long Next { get; set; }
}

/// <summary>
/// The cluster's job board (one grain, key "jobs", its state in the cluster's storage): every silo
/// posts the jobs dropped into its jobs directory, and every silo with room takes the oldest queued
/// one, wherever it was submitted. A job whose silo leaves the cluster is queued again; its next
/// silo resumes it from the last checkpoint the job stored (IJobFilesGrain).
/// </summary>
public interface IJobBoardGrain : IGrainWithStringKey
{
    /// <summary>Posts a job (null: posted, or already there from the same origin; else why not).</summary>
    Task<string?> Submit(string id, string spec, string origin);

    /// <summary>The oldest queued job, now running on `silo` (null: none queued).</summary>
    Task<BoardEntry?> Claim(string silo);

    /// <summary>A running job's state, as its silo reports it.</summary>
    Task Report(string id, string silo, string state, int iteration, int metaIterations, double? bestValidation, string? reason);

    /// <summary>Asks for a job's cancellation: a queued job is cancelled, a running one's silo is told (false: no such job, or it has ended).</summary>
    Task<bool> Cancel(string id);

    /// <summary>Every job, oldest first.</summary>
    Task<BoardEntry[]> List();
}

public static class JobBoard
{
    public const string Key = "jobs";
    public const string Storage = "l2l";
}

public sealed class JobBoardGrain(
    [PersistentState("board", JobBoard.Storage)] IPersistentState<BoardState> board,
    IClusterMembershipService membership) : Grain, IJobBoardGrain
{
    public async Task<string?> Submit(string id, string spec, string origin)
    {
        if (board.State.Jobs.TryGetValue(id, out var e))
            // posted again after its silo restarted (it is under way, or done: the board keeps it as it is)
            return e.Origin == origin ? null : $"a job '{id}' was submitted on {e.Origin} already";
        board.State.Jobs[id] = new BoardEntry(id, spec, origin, null, "queued", 0, 0, null, board.State.Next++, 0, DateTimeOffset.UtcNow);
        await board.WriteStateAsync();
        return null;
    }

    public async Task<BoardEntry?> Claim(string silo)
    {
        await Requeue();
        var next = board.State.Jobs.Values.Where(e => e.State == "queued").OrderBy(e => e.Order).FirstOrDefault();
        if (next is null) return null;
        var claimed = next with { Runner = silo, State = "running", Starts = next.Starts + 1, Reason = null, Updated = DateTimeOffset.UtcNow };
        board.State.Jobs[next.Id] = claimed;
        await board.WriteStateAsync();
        return claimed;
    }

    public async Task<bool> Cancel(string id)
    {
        if (!board.State.Jobs.TryGetValue(id, out var e) || e.State is "completed" or "failed" or "cancelled") return false;
        board.State.Jobs[id] = e.State == "queued"
            ? e with { State = "cancelled", Reason = "cancelled on request", Updated = DateTimeOffset.UtcNow }
            : e with { CancelRequested = true, Updated = DateTimeOffset.UtcNow };
        await board.WriteStateAsync();
        return true;
    }

    public async Task Report(string id, string silo, string state, int iteration, int metaIterations, double? bestValidation, string? reason)
    {
        if (!board.State.Jobs.TryGetValue(id, out var e) || e.Runner != silo) return; // no longer its job
        board.State.Jobs[id] = e with
        {
            // a job its silo stops (shutdown) goes back to the queue, for any silo
            State = state == "queued" ? "queued" : state,
            Runner = state == "queued" ? null : silo,
            Iteration = iteration,
            MetaIterations = metaIterations,
            BestValidation = bestValidation,
            Reason = reason,
            Updated = DateTimeOffset.UtcNow,
        };
        await board.WriteStateAsync();
    }

    public async Task<BoardEntry[]> List()
    {
        await Requeue();
        return board.State.Jobs.Values.OrderBy(e => e.Order).ToArray();
    }

    /// <summary>Running jobs whose silo is no longer active go back to the queue.</summary>
    private async Task Requeue()
    {
        var active = membership.CurrentSnapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active)
            .Select(m => m.SiloAddress.ToString())
            .ToHashSet(StringComparer.Ordinal);
        var lost = board.State.Jobs.Values.Where(e => e.State == "running" && e.Runner is not null && !active.Contains(e.Runner)).ToList();
        if (lost.Count == 0) return;
        foreach (var e in lost)
            board.State.Jobs[e.Id] = e with { State = "queued", Runner = null, Reason = $"its silo {e.Runner} left the cluster; queued again", Updated = DateTimeOffset.UtcNow };
        await board.WriteStateAsync();
    }
}

/// <summary>A job's files kept by the cluster (key: the job's id): its newest checkpoint, from which any silo resumes it, and its output files once it has completed.</summary>
public interface IJobFilesGrain : IGrainWithStringKey
{
    Task PutCheckpoint(int iteration, byte[] bytes);

    /// <summary>The newest checkpoint (iteration −1 and no bytes: none).</summary>
    Task<(int Iteration, byte[]? Bytes)> Checkpoint();

    Task PutOutputs(Dictionary<string, byte[]> files);

    Task<Dictionary<string, byte[]>> Outputs();
}

[GenerateSerializer]
public sealed class JobFilesState
{
    [Id(0)] public int Iteration { get; set; } = -1;
    [Id(1)] public byte[]? Checkpoint { get; set; }
    [Id(2)] public Dictionary<string, byte[]> Outputs { get; set; } = new(StringComparer.Ordinal);
}

public sealed class JobFilesGrain([PersistentState("files", JobBoard.Storage)] IPersistentState<JobFilesState> files) : Grain, IJobFilesGrain
{
    public async Task PutCheckpoint(int iteration, byte[] bytes)
    {
        if (iteration < files.State.Iteration) return;
        files.State.Iteration = iteration;
        files.State.Checkpoint = bytes;
        await files.WriteStateAsync();
    }

    public Task<(int Iteration, byte[]? Bytes)> Checkpoint() => Task.FromResult((files.State.Iteration, files.State.Checkpoint));

    public async Task PutOutputs(Dictionary<string, byte[]> outputs)
    {
        files.State.Outputs = new Dictionary<string, byte[]>(outputs, StringComparer.Ordinal);
        await files.WriteStateAsync();
    }

    public Task<Dictionary<string, byte[]>> Outputs() => Task.FromResult(files.State.Outputs);
}
