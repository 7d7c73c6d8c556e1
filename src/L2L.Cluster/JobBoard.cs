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

    /// <summary>The oldest queued job not in `skip`, now running on `silo` (null: none queued).</summary>
    Task<BoardEntry?> Claim(string silo, string[] skip);

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
    private static bool Final(string state) => state is "completed" or "failed" or "cancelled";

    /// <summary>
    /// Applies `change` to the board and stores it; when the store fails the board is as it was
    /// (the caller sees the failure), so no job is left claimed by a silo that never heard so.
    /// </summary>
    private async Task Commit(Action change)
    {
        var before = new Dictionary<string, BoardEntry>(board.State.Jobs, StringComparer.Ordinal);
        var next = board.State.Next;
        change();
        try
        {
            await board.WriteStateAsync();
        }
        catch
        {
            board.State.Jobs = before;
            board.State.Next = next;
            throw;
        }
    }

    public async Task<string?> Submit(string id, string spec, string origin)
    {
        if (board.State.Jobs.TryGetValue(id, out var e))
        {
            if (e.Origin != origin) return $"a job '{id}' was submitted on {e.Origin} already";
            // posted again after its silo restarted: the board keeps it as it is (under way, or done)
            if (e.Spec == spec) return null;
            if (!Final(e.State)) return $"a job '{id}' with another spec is still {e.State} on the cluster";
            // a new job under the id of an ended one: the old one's checkpoint and files go
            await GrainFactory.GetGrain<IJobFilesGrain>(id).Clear();
        }
        await Commit(() => board.State.Jobs[id] = new BoardEntry(id, spec, origin, null, "queued", 0, 0, null, board.State.Next++, 0, DateTimeOffset.UtcNow));
        return null;
    }

    public async Task<BoardEntry?> Claim(string silo, string[] skip)
    {
        await Requeue();
        var next = board.State.Jobs.Values
            .Where(e => e.State == "queued" && Array.IndexOf(skip, e.Id) < 0)
            .OrderBy(e => e.Order).FirstOrDefault();
        if (next is null) return null;
        var claimed = next with { Runner = silo, State = "running", Starts = next.Starts + 1, Reason = null, Updated = DateTimeOffset.UtcNow };
        await Commit(() => board.State.Jobs[next.Id] = claimed);
        return claimed;
    }

    public async Task<bool> Cancel(string id)
    {
        if (!board.State.Jobs.TryGetValue(id, out var e) || Final(e.State)) return false;
        await Commit(() => board.State.Jobs[id] = e.State == "queued"
            ? e with { State = "cancelled", Reason = "cancelled on request", Updated = DateTimeOffset.UtcNow }
            : e with { CancelRequested = true, Updated = DateTimeOffset.UtcNow });
        return true;
    }

    public async Task Report(string id, string silo, string state, int iteration, int metaIterations, double? bestValidation, string? reason)
    {
        if (!board.State.Jobs.TryGetValue(id, out var e) || e.Runner != silo) return; // no longer its job
        await Commit(() => board.State.Jobs[id] = e with
        {
            // a job its silo stops (shutdown) goes back to the queue, for any silo
            State = state == "queued" ? "queued" : state,
            Runner = state == "queued" ? null : silo,
            Iteration = iteration,
            MetaIterations = metaIterations,
            BestValidation = bestValidation,
            Reason = reason,
            Updated = DateTimeOffset.UtcNow,
        });
    }

    public async Task<BoardEntry[]> List()
    {
        await Requeue();
        return board.State.Jobs.Values.OrderBy(e => e.Order).ToArray();
    }

    /// <summary>
    /// Running jobs whose silo is dead go back to the queue: declared dead by the membership, or
    /// restarted (an active silo at the same endpoint, of a later generation). A silo the board's
    /// view does not know yet (still joining) keeps its jobs.
    /// </summary>
    private async Task Requeue()
    {
        var members = membership.CurrentSnapshot.Members.Values.ToList();
        bool Gone(string runner)
        {
            foreach (var m in members)
                if (m.SiloAddress.ToString() == runner)
                    return m.Status == SiloStatus.Dead;
            var (endpoint, generation) = SiloName.Parse(runner);
            return members.Any(m => m.Status == SiloStatus.Active
                && m.SiloAddress.Endpoint.ToString() == endpoint && m.SiloAddress.Generation > generation);
        }
        var lost = board.State.Jobs.Values.Where(e => e.State == "running" && e.Runner is not null && Gone(e.Runner)).ToList();
        if (lost.Count == 0) return;
        await Commit(() =>
        {
            foreach (var e in lost)
                board.State.Jobs[e.Id] = e with { State = "queued", Runner = null, Reason = $"its silo {e.Runner} left the cluster; queued again", Updated = DateTimeOffset.UtcNow };
        });
    }
}

/// <summary>How the board names silos: a runner by its address with its generation (S10.0.0.2:11111:155416381, new at every start); an origin by its endpoint (10.0.0.2:11111, the same across restarts).</summary>
public static class SiloName
{
    public static string Runner(SiloAddress silo) => silo.ToString();

    public static string Origin(SiloAddress silo) => silo.Endpoint.ToString();

    /// <summary>(endpoint, generation) of a runner's name ("", 0 for another form).</summary>
    public static (string Endpoint, int Generation) Parse(string runner)
    {
        var s = runner.StartsWith('S') ? runner[1..] : runner;
        var colon = s.LastIndexOf(':');
        return colon > 0 && int.TryParse(s.AsSpan(colon + 1), out var g) ? (s[..colon], g) : ("", 0);
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

    /// <summary>Forgets the job's checkpoint and files (its id is taken by a new job).</summary>
    Task Clear();
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

    public Task Clear() => files.ClearStateAsync();
}
