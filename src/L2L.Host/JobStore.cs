using L2L;
using Microsoft.FSharp.Core;

namespace L2L.Host;

/// <summary>The jobs directory: dropped specs (DIR/*.json) and one folder per job (DIR/&lt;id&gt;/).</summary>
public static class JobStore
{
    public static void WriteStatus(string jobDir, string id, JobState state, string? reason, JobSession? session)
    {
        var previous = JobStatusModule.read(jobDir);
        var (iteration, total) = session is not null
            ? (session.Iteration, session.MetaIterations)
            : previous.IsOk ? (previous.ResultValue.Iteration, previous.ResultValue.MetaIterations) : (0, 0);
        var status = new JobStatus(
            id,
            state,
            reason is null ? FSharpOption<string>.None : FSharpOption<string>.Some(reason),
            iteration,
            total,
            session is not null && double.IsFinite(session.BestLoss) ? FSharpOption<double>.Some(session.BestLoss) : FSharpOption<double>.None,
            session is not null ? FSharpOption<double>.Some(session.MetaLr) : FSharpOption<double>.None,
            DateTimeOffset.UtcNow);
        JobStatusModule.write(jobDir, status);
    }

    /// <summary>Jobs left queued or running by an earlier worker (they resume).</summary>
    public static IEnumerable<string> Unfinished(string jobsDir)
    {
        foreach (var dir in Directory.GetDirectories(jobsDir).OrderBy(d => d, StringComparer.Ordinal))
        {
            var status = JobStatusModule.read(dir);
            if (status.IsOk && !JobStateModule.isFinal(status.ResultValue.State))
                yield return Path.GetFileName(dir);
        }
    }

    /// <summary>
    /// Takes a dropped spec file in: DIR/x.json becomes DIR/&lt;id&gt;/spec.json with a queued status.
    /// A spec that cannot be parsed still becomes a job (named after the file) marked failed with the
    /// reason, so `l2l status` shows it. Returns the job id to run, or null.
    /// </summary>
    public static string? Accept(string jobsDir, string file, Action<string, string> rejected)
    {
        string text;
        try { text = File.ReadAllText(file); }
        catch (IOException) { return null; } // still being written: next scan
        var stem = Path.GetFileNameWithoutExtension(file);
        var parsed = JobSpecModule.parse(text);
        string id = parsed.IsOk ? parsed.ResultValue.Id : (JobSpecModule.validId(stem) ? stem : "spec-" + Guid.NewGuid().ToString("N")[..8]);
        var dir = Path.Combine(jobsDir, id);
        if (Directory.Exists(dir) && File.Exists(Path.Combine(dir, "spec.json")))
        {
            var target = file + ".rejected";
            File.Move(file, target, overwrite: true);
            rejected(Path.GetFileName(file), $"a job '{id}' already exists; the spec was moved to {Path.GetFileName(target)}");
            return null;
        }
        Directory.CreateDirectory(dir);
        File.Move(file, Path.Combine(dir, "spec.json"), overwrite: true);
        if (parsed.IsError)
        {
            var reason = "invalid spec: " + string.Join("; ", parsed.ErrorValue);
            WriteStatus(dir, id, JobState.Failed, reason, null);
            rejected(Path.GetFileName(file), reason);
            return null;
        }
        WriteStatus(dir, id, JobState.Queued, null, null);
        return id;
    }
}
