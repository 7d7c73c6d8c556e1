/// The commands: user input turned into core calls, progress and tables on stdout.
module L2L.Cli.Commands

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open Argu
open TorchSharp
open L2L
open L2L.Cli.Args

/// A problem with the user's input: printed as one line, exit code 2.
exception UsageError of string

let fail fmt = Printf.kprintf (fun s -> raise (UsageError s)) fmt

let private orFail (r: Result<'T, string list>) =
    match r with
    | Ok v -> v
    | Error errs -> fail "%s" (String.concat "; " errs)

/// The task settings of `train` and `evaluate`, as given on the command line.
type TaskArgs =
    { Name: string
      Dim: int
      MlpHidden: string option
      Activation: string option
      ConvChannels: string option
      ConvDense: int option
      Batch: int option }

/// "20", "20,20" or "4,8,16" → positive counts; anything else names the option.
let private counts (option: string) (example: string) (text: string) =
    let parts = text.Split([| ','; 'x' |], StringSplitOptions.RemoveEmptyEntries)
    let counts =
        parts
        |> Array.choose (fun w ->
            match Int32.TryParse(w.Trim()) with
            | true, v when v >= 1 -> Some v
            | _ -> None)
    if counts.Length = 0 || counts.Length < parts.Length then
        fail "%s '%s' is not a list of positive counts (e.g. %s)" option text example
    List.ofArray counts

/// A task from its name and settings (the settings of other tasks are ignored), validated.
let parseTask (a: TaskArgs) =
    let task =
        match a.Name.Trim().ToLowerInvariant() with
        | "quadratic" -> Quadratic a.Dim
        | "mnist" ->
            let act =
                match a.Activation |> Option.map (fun a -> a.ToLowerInvariant()) with
                | None
                | Some "sigmoid" -> Sigmoid
                | Some "relu" -> Relu
                | Some other -> fail "unknown activation '%s' (expected sigmoid or relu)" other
            Mlp
                { Hidden = a.MlpHidden |> Option.map (counts "mlp-hidden" "20 or 20,20") |> Option.defaultValue [ 20 ]
                  Activation = act
                  Batch = defaultArg a.Batch 128 }
        | "mnist-conv" ->
            let d = TaskSpec.convDefault
            Conv
                { Channels = a.ConvChannels |> Option.map (counts "conv-channels" "4,8 or 4,8,16") |> Option.defaultValue d.Channels
                  Dense = defaultArg a.ConvDense d.Dense
                  Batch = defaultArg a.Batch d.Batch }
        | other -> fail "unknown task '%s' (known: quadratic, mnist, mnist-conv)" other
    TaskSpec.validate task |> orFail

/// Sets libtorch's intra-op threads: the given number, or one per core.
let setThreads (n: int option) =
    let n =
        match n with
        | Some n when n < 1 -> fail "threads must be ≥ 1"
        | Some n -> n
        | None -> Environment.ProcessorCount
    LstmKernel.setThreads n

let private parseDevice (s: string option) =
    match s with
    | None -> Cpu
    | Some s ->
        match DeviceChoice.parse s with
        | Ok d -> d
        | Error e -> fail "%s" e

let private fmt (v: float) = if Double.IsFinite v then sprintf "%.4g" v else "diverged"

/// Meta-trains and writes DIR/optimizer.json, DIR/train-log.csv and DIR/train.json.
let train (cfg: MetaConfig) (outDir: string) : Phi list * TrainState =
    let cfg = MetaConfig.validate cfg |> orFail
    Directory.CreateDirectory outDir |> ignore
    let logPath = Path.Combine(outDir, "train-log.csv")
    use log = new StreamWriter(logPath)
    log.WriteLine("iteration,trajectory,step,meta_loss,train_loss,validation_loss,seconds")
    let total = Stopwatch.StartNew()
    let mutable window = ResizeArray<float>()
    let mutable stepSeconds = 0.0
    let mutable skipped = 0
    printfn "meta-training m_φ (%d×%d LSTM, %s, out ×%g) on %s: %d meta-iterations = %d trajectories of %d steps, unroll %d, meta-lr %g, seed %d"
        cfg.Lstm.Layers cfg.Lstm.Hidden (Preprocess.describe cfg.Lstm.Preprocessing) cfg.Lstm.OutScale
        (TaskSpec.name cfg.Task) cfg.MetaIterations (cfg.MetaIterations * cfg.Unroll.Unroll / cfg.Horizon)
        cfg.Horizon cfg.Unroll.Unroll cfg.MetaLr cfg.Seed
    let state0 = MetaTrain.init cfg
    let report (r: IterationReport) =
        window.Add r.MetaLoss
        stepSeconds <- stepSeconds + r.Seconds
        if not r.Finite then skipped <- skipped + 1
        log.WriteLine(
            sprintf "%d,%d,%d,%s,%s,%s,%.6f" r.Iteration r.Trajectory r.Step (string r.MetaLoss) (string r.TrainLoss)
                (r.Validation |> Option.map string |> Option.defaultValue "") r.Seconds)
        match r.Validation with
        | Some v ->
            printfn "  iter %6d  traj %5d  meta-loss %9.4g  val f(θ_%d) %9.4g  %6.0f steps/s  %5.0fs"
                r.Iteration r.Trajectory (Seq.average window) cfg.Horizon v
                (float (window.Count * cfg.Unroll.Unroll) / stepSeconds) total.Elapsed.TotalSeconds
            window.Clear()
            stepSeconds <- 0.0
        | None -> ()
    let final = MetaTrain.run cfg report (fun () -> false) state0
    let seconds = total.Elapsed.TotalSeconds
    let best = final.Best
    let training: (string * JsonNode) list =
        [ "task", JsonValue.Create(TaskSpec.name cfg.Task)
          "coordinates", JsonValue.Create(TaskSpec.coordinates cfg.Task)
          "description", JsonValue.Create(TaskSpec.describe cfg.Task)
          "meta_iterations", JsonValue.Create(final.Iteration)
          "horizon", JsonValue.Create(cfg.Horizon)
          "unroll", JsonValue.Create(cfg.Unroll.Unroll)
          "second_order", JsonValue.Create(cfg.Unroll.SecondOrder)
          "log_loss", JsonValue.Create(cfg.Unroll.LogLoss)
          "validate_every", JsonValue.Create(cfg.ValidateEvery)
          "validation_functions", JsonValue.Create(cfg.ValidationFunctions)
          "meta_lr", JsonValue.Create(cfg.MetaLr)
          "batch_functions", JsonValue.Create(cfg.BatchFunctions)
          "seed", JsonValue.Create(cfg.Seed)
          "best_iteration", JsonValue.Create(final.BestIteration)
          "best_validation_loss", (if Double.IsFinite final.BestLoss then JsonValue.Create(final.BestLoss) :> JsonNode else null)
          "skipped_updates", JsonValue.Create(skipped)
          "seconds", JsonValue.Create(seconds) ]
    OptimizerFile.saveFor (Path.Combine(outDir, "optimizer.json")) cfg.Task best training
    let summary = JsonObject()
    for k, v in training do
        summary[k] <- (if isNull v then null else v.DeepClone())
    File.WriteAllText(Path.Combine(outDir, "train.json"), summary.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))
    printfn "done in %.0fs: best φ at iteration %d (validation f(θ_%d) %s), %d skipped updates → %s"
        seconds final.BestIteration cfg.Horizon (fmt final.BestLoss) skipped (Path.Combine(outDir, "optimizer.json"))
    best, final

/// Evaluates φ (and the tuned baselines) on fresh portable problems; prints a table; returns results.
let evaluate (s: EvalSettings) (phi: Phi list) : EvaluationResults =
    let s = EvalSettings.validate s |> orFail
    let results = Experiment.evaluate s phi (printfn "%s")
    printfn ""
    for line in Experiment.table results do
        printfn "%s" line
    results

let private metaConfigOf (a: ParseResults<TrainArgs>) =
    let d = MetaConfig.quadratic
    let pre =
        match a.TryGetResult TrainArgs.Preprocessing with
        | None
        | Some "logsign" -> LogSign(a.GetResult(TrainArgs.P, 10.0))
        | Some "none" -> Identity
        | Some other -> fail "unknown preprocessing '%s' (expected logsign or none)" other
    { d with
        Task =
            parseTask
                { Name = a.GetResult TrainArgs.Task
                  Dim = a.GetResult(TrainArgs.Dim, 10)
                  MlpHidden = a.TryGetResult TrainArgs.Mlp_Hidden
                  Activation = a.TryGetResult TrainArgs.Activation
                  ConvChannels = a.TryGetResult TrainArgs.Conv_Channels
                  ConvDense = a.TryGetResult TrainArgs.Conv_Dense
                  Batch = a.TryGetResult TrainArgs.Batch }
        Lstm =
            { d.Lstm with
                Layers = a.GetResult(TrainArgs.Layers, d.Lstm.Layers)
                Hidden = a.GetResult(TrainArgs.Hidden, d.Lstm.Hidden)
                Preprocessing = pre
                OutScale = a.GetResult(TrainArgs.Out_Scale, d.Lstm.OutScale) }
        Horizon = a.GetResult(TrainArgs.Steps, d.Horizon)
        Unroll =
            { d.Unroll with
                Unroll = a.GetResult(TrainArgs.Unroll, d.Unroll.Unroll)
                SecondOrder = a.Contains TrainArgs.Second_Order
                LogLoss = a.Contains TrainArgs.Log_Loss }
        BatchFunctions = a.GetResult(TrainArgs.Batch_Functions, d.BatchFunctions)
        MetaIterations = a.GetResult(TrainArgs.Meta_Iterations, d.MetaIterations)
        MetaLr = a.GetResult(TrainArgs.Meta_Lr, d.MetaLr)
        ValidateEvery = a.GetResult(TrainArgs.Validate_Every, d.ValidateEvery)
        ValidationFunctions = a.GetResult(TrainArgs.Validation_Functions, d.ValidationFunctions)
        Seed = a.GetResult(TrainArgs.Seed, d.Seed)
        Device = parseDevice (a.TryGetResult TrainArgs.Device) }

let runTrain (a: ParseResults<TrainArgs>) =
    setThreads (a.TryGetResult TrainArgs.Threads)
    Datasets.dataDir <- a.TryGetResult TrainArgs.Data_Dir
    let cfg = metaConfigOf a
    let cfg =
        match cfg.Task with
        | Mlp _
        | Conv _ ->
            // the MNIST defaults (see MetaConfig.mnist) where the command line is silent
            let m = MetaConfig.mnist cfg.Task
            { cfg with
                Lstm = { cfg.Lstm with OutScale = a.GetResult(TrainArgs.Out_Scale, m.Lstm.OutScale) }
                MetaIterations = a.GetResult(TrainArgs.Meta_Iterations, m.MetaIterations)
                MetaLr = a.GetResult(TrainArgs.Meta_Lr, m.MetaLr)
                Unroll = { cfg.Unroll with LogLoss = a.Contains TrainArgs.Log_Loss || (m.Unroll.LogLoss && not (a.Contains TrainArgs.Sum_Loss)) }
                BatchFunctions = 1
                ValidateEvery = a.GetResult(TrainArgs.Validate_Every, m.ValidateEvery)
                ValidationFunctions = a.GetResult(TrainArgs.Validation_Functions, m.ValidationFunctions) }
        | Quadratic _ -> cfg
    train cfg (a.GetResult TrainArgs.Out) |> ignore
    0

let private loadPhi (path: string) (task: TaskSpec) (device: DeviceChoice) =
    match OptimizerFile.loadFor path task (DeviceChoice.resolve device) torch.ScalarType.Float32 with
    | Ok phi -> phi
    | Error e -> fail "%s" e

let runEvaluate (a: ParseResults<EvaluateArgs>) =
    setThreads (a.TryGetResult EvaluateArgs.Threads)
    let device = parseDevice (a.TryGetResult EvaluateArgs.Device)
    Datasets.dataDir <- a.TryGetResult EvaluateArgs.Data_Dir
    let task =
        parseTask
            { Name = a.GetResult EvaluateArgs.Task
              Dim = a.GetResult(EvaluateArgs.Dim, 10)
              MlpHidden = a.TryGetResult EvaluateArgs.Mlp_Hidden
              Activation = a.TryGetResult EvaluateArgs.Activation
              ConvChannels = a.TryGetResult EvaluateArgs.Conv_Channels
              ConvDense = a.TryGetResult EvaluateArgs.Conv_Dense
              Batch = a.TryGetResult EvaluateArgs.Batch }
    let isMnist = match task with Quadratic _ -> false | Mlp _ | Conv _ -> true
    let settings =
        { Task = task
          Steps = a.GetResult(EvaluateArgs.Steps, 200)
          Runs = a.GetResult(EvaluateArgs.Runs, (if isMnist then 10 else 1000))
          Seed = a.GetResult(EvaluateArgs.Seed, 1000UL)
          Tune = a.Contains EvaluateArgs.Tune_Baselines
          TuneSeed = a.GetResult(EvaluateArgs.Tune_Seed, 2000UL)
          TuneRuns = a.GetResult(EvaluateArgs.Tune_Runs, (if isMnist then 3 else 1000))
          TuneSteps = a.GetResult(EvaluateArgs.Tune_Steps, 100)
          TuneRefine = (EvalSettings.defaults task 100).TuneRefine
          Device = device }
    // validate the cheap things before loading anything
    if settings.Steps < 1 then fail "steps must be ≥ 1 (got %d)" settings.Steps
    if settings.Runs < 1 then fail "runs must be ≥ 1 (got %d)" settings.Runs
    let phi = loadPhi (a.GetResult EvaluateArgs.Optimizer) task device
    let results = evaluate settings phi
    let out = a.GetResult EvaluateArgs.Out
    Results.save out results
    printfn "results → %s" out
    0

let runReproduce (a: ParseResults<ReproduceArgs>) =
    setThreads (a.TryGetResult ReproduceArgs.Threads)
    match a.GetResult ReproduceArgs.Experiment with
    | "quadratic" ->
        let outDir = a.GetResult(ReproduceArgs.Out, Path.Combine("runs", "quadratic"))
        let d = MetaConfig.quadratic
        let cfg =
            { d with
                MetaIterations = a.GetResult(ReproduceArgs.Meta_Iterations, d.MetaIterations)
                Seed = a.GetResult(ReproduceArgs.Seed, d.Seed) }
        let phi, final = train cfg outDir
        let results =
            evaluate { EvalSettings.defaults cfg.Task cfg.Horizon with Device = cfg.Device } phi
        let out = Path.Combine(outDir, "results.json")
        Results.save out results
        TrainState.dispose final
        printfn "results → %s" out
        0
    | other -> fail "unknown experiment '%s' (known: quadratic)" other

/// Validates a spec and drops it into the jobs directory (atomically: the worker never sees half a file).
let runSubmit (a: ParseResults<SubmitArgs>) =
    let file = a.GetResult SubmitArgs.Spec
    let jobs = a.GetResult SubmitArgs.Jobs
    if not (File.Exists file) then fail "spec file '%s' does not exist" file
    let text = File.ReadAllText file
    match JobSpec.parse text with
    | Error errs -> fail "spec '%s' is invalid: %s" file (String.concat "; " errs)
    | Ok spec ->
        Directory.CreateDirectory jobs |> ignore
        if Directory.Exists(Path.Combine(jobs, spec.Id)) || File.Exists(Path.Combine(jobs, spec.Id + ".json")) then
            fail "a job '%s' already exists in %s" spec.Id jobs
        let tmp = Path.Combine(jobs, "." + spec.Id + ".json.tmp")
        File.WriteAllText(tmp, text)
        File.Move(tmp, Path.Combine(jobs, spec.Id + ".json"))
        printfn "submitted job %s (%d meta-iterations) to %s" spec.Id spec.Meta.MetaIterations jobs
        0

let runStatus (a: ParseResults<StatusArgs>) =
    let jobs = a.GetResult StatusArgs.Jobs
    if not (Directory.Exists jobs) then fail "jobs directory '%s' does not exist" jobs
    let only = a.TryGetResult StatusArgs.Id
    let pending =
        Directory.GetFiles(jobs, "*.json")
        |> Array.map Path.GetFileNameWithoutExtension
        |> Array.filter (fun id -> only.IsNone || only = Some id)
    let dirs =
        Directory.GetDirectories jobs
        |> Array.sort
        |> Array.filter (fun d -> only.IsNone || only = Some(Path.GetFileName d))
    if only.IsSome && pending.Length = 0 && dirs.Length = 0 then fail "no job '%s' in %s" only.Value jobs
    printfn "%-20s %-10s %15s %12s  %s" "job" "state" "meta-iteration" "best val" "reason"
    for id in pending do
        printfn "%-20s %-10s %15s %12s  %s" id "submitted" "-" "-" "waiting for the worker"
    for d in dirs do
        match JobStatus.read d with
        | Ok s ->
            printfn "%-20s %-10s %15s %12s  %s" s.Id (JobState.name s.State) (sprintf "%d/%d" s.Iteration s.MetaIterations)
                (s.BestValidation |> Option.map (sprintf "%.4g") |> Option.defaultValue "-") (s.Reason |> Option.defaultValue "")
        | Error e -> printfn "%-20s %-10s %15s %12s  %s" (Path.GetFileName d) "?" "-" "-" e
    0

let runCancel (a: ParseResults<CancelArgs>) =
    let jobs = a.GetResult CancelArgs.Jobs
    let id = a.GetResult CancelArgs.Id
    if not (JobSpec.validId id) then fail "'%s' is not a job id" id
    let dir = Path.Combine(jobs, id)
    let pending = Path.Combine(jobs, id + ".json")
    if not (Directory.Exists dir) && not (File.Exists pending) then fail "no job '%s' in %s" id jobs
    match JobStatus.read dir with
    | Ok s when JobState.isFinal s.State -> fail "job '%s' is already %s" id (JobState.name s.State)
    | _ ->
        Directory.CreateDirectory dir |> ignore
        File.WriteAllText(Path.Combine(dir, "cancel"), DateTimeOffset.UtcNow.ToString("o"))
        printfn "cancellation of job %s requested" id
        0
