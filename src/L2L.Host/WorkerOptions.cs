using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;

namespace L2L.Host;

/// <summary>The worker's settings: section "Worker" of the configuration.</summary>
public sealed class WorkerOptions
{
    public const string Section = "Worker";

    /// <summary>Directory of the jobs: specs are dropped here, each job keeps its files in a subdirectory.</summary>
    [Required(AllowEmptyStrings = false, ErrorMessage = "must name the jobs directory (--jobs DIR)")]
    public string JobsDirectory { get; set; } = "";

    /// <summary>MNIST data directory (empty: $L2L_DATA_DIR or ~/.cache/l2l-functional/mnist; fetched on first use).</summary>
    public string DataDirectory { get; set; } = "";

    /// <summary>Jobs run at the same time, each on its own thread.</summary>
    [Range(1, 64)]
    public int MaxConcurrentJobs { get; set; } = 1;

    /// <summary>How often the jobs directory is scanned for new specs and cancellations.</summary>
    [Range(50, 60_000)]
    public int PollIntervalMs { get; set; } = 500;

    /// <summary>Checkpoints kept per job (the newest ones).</summary>
    [Range(1, 1000)]
    public int KeepCheckpoints { get; set; } = 3;

    /// <summary>Threads of the fused LSTM kernel and of libtorch (whose count $L2L_TORCH_THREADS sets apart); 0 = the number of cores.</summary>
    [Range(0, 1024)]
    public int Threads { get; set; }

    /// <summary>Console log format: plain or json.</summary>
    [RegularExpression("^(plain|json)$", ErrorMessage = "must be 'plain' or 'json'")]
    public string LogFormat { get; set; } = "plain";

    /// <summary>Log a job's progress every this many meta-iterations (and at every validation).</summary>
    [Range(1, 1_000_000)]
    public int LogEvery { get; set; } = 50;

    /// <summary>Write TensorBoard event files per job (DIR/&lt;id&gt;/events).</summary>
    public bool TensorBoard { get; set; } = true;

    /// <summary>Assemblies with tasks of one's own (public ITaskProvider classes), which job specs then name
    /// like the built-in tasks.</summary>
    public string[] TaskAssemblies { get; set; } = [];

    /// <summary>Time the host gives running jobs to checkpoint and stop.</summary>
    [Range(1, 3600)]
    public int ShutdownTimeoutSeconds { get; set; } = 30;
}

[OptionsValidator]
public sealed partial class WorkerOptionsValidator : IValidateOptions<WorkerOptions>
{
}

/// <summary>The tasks of one's own the worker knows by name (loaded from Worker:TaskAssemblies at start).</summary>
public sealed record JobTasks(Microsoft.FSharp.Collections.FSharpList<L2L.TaskSpec> Catalog);

/// <summary>The worker's exit code: set by a service that finds the worker cannot run at all.</summary>
public sealed class WorkerExit
{
    public int Code { get; set; }
}
