/// Throughput and memory of meta-training and of the learned optimizer, measured as a user would
/// compare them: optimizee steps per second (the optimizee's forward and backward, m_φ, the backward
/// through the unroll and the meta-update), after a warm-up, median of several repetitions, and the
/// process's peak resident memory.
module L2L.Cli.Bench

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp
open L2L

/// Peak resident set size of this process (VmHWM), MiB; NaN where /proc is not available.
let peakRssMib () =
    try
        File.ReadAllLines "/proc/self/status"
        |> Array.tryFind (fun l -> l.StartsWith "VmHWM:")
        |> Option.map (fun l -> float (l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0)
        |> Option.defaultValue nan
    with _ -> nan

let median (xs: float list) =
    let a = xs |> List.sort |> Array.ofList
    if a.Length = 0 then nan
    elif a.Length % 2 = 1 then a[a.Length / 2]
    else (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2.0

/// The benchmark settings of a task: meta-training configuration, and the evaluation problem size.
let settings (task: string) =
    match task with
    | "quadratic" ->
        // 128 functions × 10 in meta-training (1280 coordinates), 1000 × 10 in evaluation
        { MetaConfig.quadratic with ValidateEvery = 0 }, 1000
    | "mnist" -> { MetaConfig.mnist (Mlp { Hidden = [ 20 ]; Activation = Sigmoid; Batch = 128 }) with ValidateEvery = 0 }, 1
    | other -> failwithf "unknown benchmark task '%s'" other

/// Measures one task in this process.
let measure (task: string) (reps: int) : JsonObject =
    let cfg, evalCount = settings task
    let perTrajectory = cfg.Horizon / cfg.Unroll.Unroll
    // meta-training: three trajectories of warm-up, then `reps` trajectories, each timed; the
    // meta-iterations run as in MetaTrain.run, without validation
    let mutable state = MetaTrain.init cfg
    let iteration () =
        let next, _ = Scope.run (fun (n: TrainState, _) -> TrainState.tensors n) (fun () -> MetaTrain.step cfg state)
        Scope.disposeReplaced (TrainState.tensors state) (TrainState.tensors next)
        state <- next
    for _ in 1 .. 3 * perTrajectory do
        iteration ()
    let train =
        [ for _ in 1..reps ->
              let sw = Stopwatch.StartNew()
              for _ in 1..perTrajectory do
                  iteration ()
              float cfg.Horizon / sw.Elapsed.TotalSeconds ]
    // evaluation of m_φ (under no_grad; ∇ from autograd), on fresh problems
    let problems = TaskSpec.heldOut cfg.Task EvalSplit 1000UL evalCount cfg.Horizon (DeviceChoice.resolve cfg.Device) cfg.DType
    let opt = Learned.optimizer state.Phi
    Evaluate.run opt problems 20 |> ignore
    let eval =
        [ for _ in 1..reps ->
              let r = Evaluate.run opt problems cfg.Horizon
              float r.Steps / r.Seconds ]
    List.iter Problem.dispose problems
    TrainState.dispose state
    let o = JsonObject()
    o["meta_train_steps_per_s"] <- JsonValue.Create(median train)
    o["eval_steps_per_s"] <- JsonValue.Create(median eval)
    o["peak_rss_mib"] <- JsonValue.Create(peakRssMib ())
    o["meta_train_coordinates"] <- JsonValue.Create(TaskSpec.coordinates cfg.Task * cfg.BatchFunctions)
    o["eval_coordinates"] <- JsonValue.Create(TaskSpec.coordinates cfg.Task * (match cfg.Task with Quadratic _ -> evalCount | Mlp _ -> 1))
    o["repetitions"] <- JsonValue.Create(reps)
    o["meta_train_samples"] <- JsonArray(train |> List.map (fun v -> JsonValue.Create(v) :> JsonNode) |> Array.ofList)
    o["eval_samples"] <- JsonArray(eval |> List.map (fun v -> JsonValue.Create(v) :> JsonNode) |> Array.ofList)
    o

let machine () =
    let o = JsonObject()
    let cpu =
        try File.ReadAllLines "/proc/cpuinfo" |> Array.tryFind (fun l -> l.StartsWith "model name") |> Option.map (fun l -> (l.Split(':')[1]).Trim())
        with _ -> None
    o["cpu"] <- JsonValue.Create(defaultArg cpu "unknown")
    o["cores"] <- JsonValue.Create(Environment.ProcessorCount)
    o["threads"] <- JsonValue.Create(torch.get_num_threads ())
    o["os"] <- JsonValue.Create(Runtime.InteropServices.RuntimeInformation.OSDescription)
    o["libtorch"] <- JsonValue.Create("2.10.0 (CPU), TorchSharp 0.107.0")
    o

/// Runs each task in a child process of its own (so each peak RSS is that task's), prints a table and
/// writes the JSON.
let run (tasks: string list) (reps: int) (out: string) =
    let self = Environment.ProcessPath
    let dll = Reflection.Assembly.GetEntryAssembly().Location
    let results = JsonObject()
    for task in tasks do
        let psi = ProcessStartInfo(self, RedirectStandardOutput = true, UseShellExecute = false)
        for a in [ dll; "bench"; "--task"; task; "--reps"; string reps; "--child" ] do
            psi.ArgumentList.Add a
        use p = Process.Start psi
        let text = p.StandardOutput.ReadToEnd()
        p.WaitForExit()
        if p.ExitCode <> 0 then failwithf "benchmark of %s failed (exit %d): %s" task p.ExitCode text
        let line = text.Split('\n') |> Array.findBack (fun l -> l.StartsWith "{")
        let ours = JsonObject()
        ours["ours"] <- JsonNode.Parse(line)
        results[task] <- ours
    let doc = JsonObject()
    doc["machine"] <- machine ()
    doc["tasks"] <- results
    File.WriteAllText(out, doc.ToJsonString(JsonSerializerOptions(WriteIndented = true)))
    printfn "%-10s %22s %18s %14s" "task" "meta-train steps/s" "eval steps/s" "peak RSS MiB"
    for task in tasks do
        let o = results[task]["ours"]
        let v (k: string) = (o[k]).GetValue<float>()
        printfn "%-10s %22.1f %18.1f %14.0f" task (v "meta_train_steps_per_s") (v "eval_steps_per_s") (v "peak_rss_mib")
    printfn "→ %s" out
