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

/// An optimizer file's text: an existing file, else a pretrained optimizer's name.
let optimizerText (spec: string) : string =
    if File.Exists spec then
        try
            File.ReadAllText spec
        with e -> raise (IOException(sprintf "%s: %s" spec ((e.Message.Split('\n')[0]).Trim())))
    elif List.contains spec Pretrained.names then
        Pretrained.optimizerText spec
    else
        fail "no optimizer file '%s', nor a pretrained optimizer of that name (known: %s)" spec (String.Join(", ", Pretrained.names))

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

/// The process's set-up (Runtime.configure), called by Program for the commands that compute:
/// threads (default one per core) and the MNIST directory; a bad value is a usage error.
let configure (threads: int option) (dataDir: string option) : RuntimeSettings =
    match Runtime.configure threads dataDir with
    | Ok s -> s
    | Error e -> fail "%s" e

/// The data sets of task t (MNIST fetched on first use); a problem with them is a usage error.
let dataFor (settings: RuntimeSettings) (t: TaskSpec) (device: DeviceChoice) : TaskData =
    match Datasets.forTask t settings.DataDirectory device (eprintfn "%s") with
    | Ok d -> d
    | Error e -> fail "%s" e

let private parseDevice (s: string option) =
    match s with
    | None -> Cpu
    | Some s ->
        match DeviceChoice.parse s with
        | Ok d -> d
        | Error e -> fail "%s" e

let private fmt (v: float) = if Double.IsFinite v then sprintf "%.4g" v else "diverged"

/// The progress of this process's long work, on its console (in place on a terminal, else plain
/// lines every 10 s); other output of the commands goes through `say` so it prints above it.
let progress = lazy (ProgressReporter.ForConsole())

/// A line of output (above the progress line when there is one).
let say (text: string) = progress.Value.Line text

/// The training record's settings that came after the first optimizer files (null where unused):
/// random scaling, the curriculum and imitation.
let laterSettings (cfg: MetaConfig) : (string * JsonNode) list =
    let imitation () =
        let o = JsonObject()
        o["probability"] <- JsonValue.Create(cfg.Imitation.Probability)
        o["lr"] <- JsonValue.Create(cfg.Imitation.Lr)
        o :> JsonNode
    let curriculum = not cfg.Curriculum.Horizons.IsEmpty
    [ "random_scaling", JsonValue.Create(cfg.RandomScaling) :> JsonNode
      "curriculum", (if curriculum then JsonArray(cfg.Curriculum.Horizons |> List.map (fun h -> JsonValue.Create h :> JsonNode) |> Array.ofList) :> JsonNode else null)
      "curriculum_patience", (if curriculum then JsonValue.Create(cfg.Curriculum.Patience) :> JsonNode else null)
      "curriculum_validate_all", (if curriculum && cfg.Curriculum.ValidateAll then JsonValue.Create(true) :> JsonNode else null)
      "imitation", (if cfg.Imitation.Probability > 0.0 then imitation () else null) ]

/// The TensorBoard scalars of a meta-training run, the same tags as a worker job's.
let private tensorboardTags = [ "meta_loss"; "validation_loss"; "meta_lr"; "steps_per_s" ]

/// Meta-trains and writes DIR/optimizer.json, DIR/train-log.csv and DIR/train.json (the log
/// rewritten at every validation and at the end), TensorBoard event files in DIR/events
/// (meta_loss, validation_loss, meta_lr, steps_per_s) and DIR/train-curves.png and .svg.
/// `init`: the optimizer the run starts from (its name or file, and its φ; None: a fresh draw).
let trainFrom (cfg: MetaConfig) (data: TaskData) (outDir: string) (init: (string * Phi list) option) : Phi list * TrainState =
    let cfg = MetaConfig.validate cfg |> orFail
    let state0 =
        match init with
        | None -> MetaTrain.init cfg
        | Some(name, phis) ->
            match MetaTrain.initFrom cfg data phis with
            | Ok s -> s
            | Error e -> fail "--init %s: %s" name e
    Directory.CreateDirectory outDir |> ignore
    let logPath = Path.Combine(outDir, "train-log.csv")
    let log = Text.StringBuilder()
    log.AppendLine("iteration,trajectory,step,meta_loss,train_loss,validation_loss,seconds") |> ignore
    let total = Stopwatch.StartNew()
    let mutable window = ResizeArray<float>()
    let mutable stepSeconds = 0.0
    let mutable skipped = 0
    say (sprintf "meta-training m_φ (%d×%d %s, %s, out ×%g) on %s: %d meta-iterations = %d trajectories of %d steps, unroll %d, meta-lr %g, seed %d"
            cfg.Lstm.Layers cfg.Lstm.Hidden (Architecture.name cfg.Lstm.Architecture) (Preprocess.describe cfg.Lstm.Preprocessing) cfg.Lstm.OutScale
            (TaskSpec.name cfg.Task) cfg.MetaIterations (cfg.MetaIterations * cfg.Unroll.Unroll / cfg.Horizon)
            cfg.Horizon cfg.Unroll.Unroll cfg.MetaLr cfg.Seed)
    init |> Option.iter (fun (name, _) -> say (sprintf "starting from the optimizer %s" name))
    let events = torch.utils.tensorboard.SummaryWriter(Path.Combine(outDir, "events"))
    let metaLosses = ResizeArray<float * float>()
    let validations = ResizeArray<float * float>()
    progress.Value.Phase("meta-training", float cfg.MetaIterations, "it")
    let report (s: TrainState) (r: IterationReport) =
        progress.Value.Update(float r.Iteration)
        if Double.IsFinite r.MetaLoss then
            events.add_scalar("meta_loss", float32 r.MetaLoss, r.Iteration)
            metaLosses.Add((float r.Iteration, r.MetaLoss))
        events.add_scalar("meta_lr", float32 s.MetaLr, r.Iteration)
        if r.Seconds > 0.0 then events.add_scalar("steps_per_s", float32 (float cfg.Unroll.Unroll / r.Seconds), r.Iteration)
        r.Validation |> Option.iter (fun v ->
            if Double.IsFinite v then
                events.add_scalar("validation_loss", float32 v, r.Iteration)
                validations.Add((float r.Iteration, v)))
        window.Add r.MetaLoss
        stepSeconds <- stepSeconds + r.Seconds
        if not r.Finite then skipped <- skipped + 1
        log.AppendLine(
            sprintf "%d,%d,%d,%s,%s,%s,%.6f" r.Iteration r.Trajectory r.Step (string r.MetaLoss) (string r.TrainLoss)
                (r.Validation |> Option.map string |> Option.defaultValue "") r.Seconds) |> ignore
        // the log on disk at every validation and every 100 meta-iterations
        if r.Validation.IsSome || r.Iteration % 100 = 0 then AtomicFile.writeText logPath (log.ToString()) |> ignore
        match r.Validation with
        | Some v ->
            say (sprintf "  iter %6d  traj %5d  meta-loss %9.4g  val f(θ_%d) %9.4g  %6.0f steps/s  %5.0fs%s"
                     r.Iteration r.Trajectory (Seq.average window) r.Horizon v
                     (float (window.Count * cfg.Unroll.Unroll) / stepSeconds) total.Elapsed.TotalSeconds
                     (if s.Stage >= MetaConfig.stages cfg then "  (the curriculum's last stage stalled: done)"
                      elif MetaConfig.horizon cfg s.Stage <> r.Horizon then sprintf "  → horizon %d" (MetaConfig.horizon cfg s.Stage)
                      else ""))
            window.Clear()
            stepSeconds <- 0.0
        | None -> ()
    // the event writer appends and flushes each scalar as it is added
    let final = MetaTrain.runObserved cfg data report (fun () -> false) state0
    progress.Value.Finish()
    let seconds = total.Elapsed.TotalSeconds
    AtomicFile.writeText logPath (log.ToString()) |> ignore
    Plots.training (Path.Combine(outDir, "train-curves")) (sprintf "meta-training on %s" (TaskSpec.name cfg.Task))
        (List.ofSeq metaLosses) (List.ofSeq validations) final.BestIteration (cfg.Horizon / cfg.Unroll.Unroll)
    let best = final.Best
    let training: (string * JsonNode) list =
        [ "task", JsonValue.Create(TaskSpec.name cfg.Task)
          "coordinates", JsonValue.Create(TaskSpec.coordinates cfg.Task)
          "description", JsonValue.Create(TaskSpec.describe cfg.Task)
          // the budget; a curriculum (or the fault policy) may end training before it
          "meta_iterations", JsonValue.Create(cfg.MetaIterations)
          "meta_iterations_done", JsonValue.Create(final.Iteration)
          "horizon", JsonValue.Create(cfg.Horizon)
          yield! laterSettings cfg
          "init", (match init with Some(name, _) -> JsonValue.Create(name) :> JsonNode | None -> null)
          "final_horizon", JsonValue.Create(MetaConfig.horizon cfg final.Stage)
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
    AtomicFile.writeText (Path.Combine(outDir, "train.json")) (summary.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true))) |> ignore
    say (sprintf "done in %.0fs: best φ at iteration %d (validation f(θ_%d) %s), %d skipped updates → %s"
             seconds final.BestIteration (MetaConfig.horizon cfg final.Stage) (fmt final.BestLoss) skipped (Path.Combine(outDir, "optimizer.json")))
    best, final

/// Meta-trains from a fresh φ (see `trainFrom`).
let train (cfg: MetaConfig) (data: TaskData) (outDir: string) : Phi list * TrainState = trainFrom cfg data outDir None

/// Evaluates φ (and the tuned baselines) on fresh portable problems; prints a table; returns results.
let evaluate (s: EvalSettings) (data: TaskData) (phi: Phi list) : EvaluationResults =
    let s = EvalSettings.validate s |> orFail
    let observe (phase: string) (doneNow: float) (total: float) =
        progress.Value.Track((if phase = "tuning" then "tuning the baselines" else "evaluating"), doneNow, total, "runs")
    let results = Evaluation.runObserved s data phi say observe
    progress.Value.Finish()
    say ""
    for line in Report.table results do
        say line
    results

/// "quadratic:10+mnist:relu*2+mnist-conv" → the mixture's components (see --mixture).
let parseMixture (text: string) : MixtureComponent list =
    let parseOne (item: string) =
        let body, weight =
            match item.Split('*') with
            | [| b |] -> b, 1.0
            | [| b; w |] ->
                match Double.TryParse(w.Trim(), Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
                | true, v when Double.IsFinite v && v > 0.0 -> b, v
                | _ -> fail "mixture task '%s': weight '%s' is not a positive number" item w
            | _ -> fail "mixture task '%s' has more than one *weight" item
        let task, functions, validation =
            match body.Trim().ToLowerInvariant().Split(':') with
            | [| "quadratic"; d |] ->
                match Int32.TryParse d with
                | true, d when d >= 1 -> Quadratic d, 128, 100
                | _ -> fail "mixture task '%s': the quadratic's dimension '%s' is not a positive count" item d
            | [| "mnist"; act |] -> parseTask { Name = "mnist"; Dim = 0; MlpHidden = None; Activation = Some act; ConvChannels = None; ConvDense = None; Batch = None }, 1, 3
            | [| "mnist"; act; hidden |] -> parseTask { Name = "mnist"; Dim = 0; MlpHidden = Some hidden; Activation = Some act; ConvChannels = None; ConvDense = None; Batch = None }, 1, 3
            | [| "mnist-conv" |] -> Defaults.convTask, 1, 1
            | _ -> fail "mixture task '%s' is not quadratic:D, mnist:sigmoid|relu[:W,W...] or mnist-conv" item
        { Task = task; Weight = weight; Functions = functions; Validation = validation }
    let components = text.Split('+', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> Array.map parseOne |> List.ofArray
    match Mixture.problems components with
    | [] -> components
    | e :: _ -> fail "mixture: %s" e

let private taskOf (a: ParseResults<TrainArgs>) =
    match a.GetResult TrainArgs.Task, a.TryGetResult TrainArgs.Mixture with
    | "mixture", Some m -> Mixture.task (parseMixture m)
    | "mixture", None -> fail "--task mixture needs --mixture (e.g. quadratic:10+mnist:sigmoid+mnist:relu)"
    | _, Some _ -> fail "--mixture goes with --task mixture"
    | _ ->
    parseTask
        { Name = a.GetResult TrainArgs.Task
          Dim = a.GetResult(TrainArgs.Dim, 10)
          MlpHidden = a.TryGetResult TrainArgs.Mlp_Hidden
          Activation = a.TryGetResult TrainArgs.Activation
          ConvChannels = a.TryGetResult TrainArgs.Conv_Channels
          ConvDense = a.TryGetResult TrainArgs.Conv_Dense
          Batch = a.TryGetResult TrainArgs.Batch }

/// The task's defaults (Defaults.meta) with what the command line sets.
let private metaConfigOf (a: ParseResults<TrainArgs>) (backend: Backend) =
    let task = taskOf a
    let d = Defaults.meta task
    let pre =
        match a.TryGetResult TrainArgs.Preprocessing with
        | None
        | Some "logsign" -> LogSign(a.GetResult(TrainArgs.P, 10.0))
        | Some "none" -> Identity
        | Some "moments" ->
            let betas =
                match a.TryGetResult TrainArgs.Betas with
                | None -> [ 0.5; 0.9; 0.99 ]
                | Some text ->
                    text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
                    |> Array.map (fun b ->
                        match Double.TryParse(b, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
                        | true, v -> v
                        | _ -> fail "--betas '%s': '%s' is not a number" text b)
                    |> List.ofArray
            NormalizedMoments(betas, a.GetResult(TrainArgs.Beta2, 0.999))
        | Some other -> fail "unknown preprocessing '%s' (expected logsign, none or moments)" other
    let architecture =
        match a.TryGetResult TrainArgs.Architecture with
        | None -> d.Lstm.Architecture
        | Some name ->
            match Architecture.parse name with
            | Ok arch -> arch
            | Error e -> fail "%s" e
    { d with
        Lstm =
            { d.Lstm with
                Architecture = architecture
                Layers = a.GetResult(TrainArgs.Layers, d.Lstm.Layers)
                Hidden = a.GetResult(TrainArgs.Hidden, d.Lstm.Hidden)
                Preprocessing = pre
                OutScale = a.GetResult(TrainArgs.Out_Scale, d.Lstm.OutScale) }
            |> LstmConfig.withArchitecture architecture
            |> fun c ->
                { c with
                    Averaged = a.GetResult(TrainArgs.Averaged, c.Averaged)
                    Reads = a.GetResult(TrainArgs.Reads, c.Reads)
                    Writes = a.GetResult(TrainArgs.Writes, c.Writes)
                    MemorySteps = a.GetResult(TrainArgs.Memory_Steps, c.MemorySteps) }
        Horizon = a.GetResult(TrainArgs.Steps, d.Horizon)
        Unroll =
            { d.Unroll with
                Unroll = a.GetResult(TrainArgs.Unroll, d.Unroll.Unroll)
                SecondOrder = a.Contains TrainArgs.Second_Order
                LogLoss = a.Contains TrainArgs.Log_Loss || (d.Unroll.LogLoss && not (a.Contains TrainArgs.Sum_Loss)) }
        // an MNIST problem is one network: its batch of functions is always 1
        BatchFunctions = (if TaskSpec.usesMnist task then d.BatchFunctions else a.GetResult(TrainArgs.Batch_Functions, d.BatchFunctions))
        MetaIterations = a.GetResult(TrainArgs.Meta_Iterations, d.MetaIterations)
        RandomScaling = a.GetResult(TrainArgs.Random_Scaling, d.RandomScaling)
        Imitation = { Probability = a.GetResult(TrainArgs.Imitation, 0.0); Lr = a.GetResult(TrainArgs.Imitation_Lr, ImitationConfig.none.Lr) }
        Curriculum =
            { Horizons = a.TryGetResult TrainArgs.Curriculum |> Option.map (counts "curriculum" "200,500,1000") |> Option.defaultValue []
              Patience = a.GetResult(TrainArgs.Curriculum_Patience, d.Curriculum.Patience)
              ValidateAll = a.Contains TrainArgs.Curriculum_Validate_All }
        MetaLr = a.GetResult(TrainArgs.Meta_Lr, d.MetaLr)
        ValidateEvery = a.GetResult(TrainArgs.Validate_Every, d.ValidateEvery)
        ValidationFunctions = a.GetResult(TrainArgs.Validation_Functions, d.ValidationFunctions)
        Seed = a.GetResult(TrainArgs.Seed, d.Seed)
        Device = parseDevice (a.TryGetResult TrainArgs.Device)
        Backend = backend }

/// Whether the option sets m_φ's architecture (with --init, m_φ's settings are the optimizer's).
let private setsArchitecture (arg: TrainArgs) =
    match arg with
    | TrainArgs.Architecture _ | TrainArgs.Averaged _ | TrainArgs.Reads _ | TrainArgs.Writes _ | TrainArgs.Memory_Steps _
    | TrainArgs.Hidden _ | TrainArgs.Layers _ | TrainArgs.Preprocessing _ | TrainArgs.Betas _ | TrainArgs.Beta2 _
    | TrainArgs.P _ | TrainArgs.Out_Scale _ -> true
    | _ -> false

/// The groups of an optimizer file, or of a pretrained optimizer by name (see `optimizerText`).
let private optimizerGroups (spec: string) (device: torch.Device) (dtype: torch.ScalarType) =
    if File.Exists spec then OptimizerFile.loadGroups spec device dtype
    else OptimizerFile.ofJsonGroups (optimizerText spec) device dtype |> Result.mapError (sprintf "pretrained optimizer '%s': %s" spec)

let runTrain (settings: RuntimeSettings) (a: ParseResults<TrainArgs>) =
    let cfg = metaConfigOf a settings.Backend
    let cfg, init =
        match a.TryGetResult TrainArgs.Init with
        | None -> cfg, None
        | Some spec ->
            match a.GetAllResults() |> List.tryFind setsArchitecture with
            | Some o -> fail "--init takes m_φ's settings from its optimizer: drop %s" (a.Parser.GetArgumentCaseInfo(o).Name.Value)
            | None ->
                match optimizerGroups spec (DeviceChoice.resolve cfg.Device) cfg.DType with
                | Error e -> raise (InvalidDataException e)
                | Ok groups ->
                    let phis = groups |> List.map (fun (_, _, phi) -> phi)
                    { cfg with Lstm = phis.Head.Config }, Some(spec, phis)
    let cfg = MetaConfig.validate cfg |> orFail
    let data = dataFor settings cfg.Task cfg.Device
    try
        trainFrom cfg data (a.GetResult TrainArgs.Out) init |> ignore
    finally
        // the run trains copies of the starting φ
        init |> Option.iter (fun (_, phis) -> Phis.tensors phis |> List.iter (fun t -> t.Dispose()))
    0

/// The φ of an optimizer file, or of a pretrained optimizer by name, for `task`.
let private loadPhi (spec: string) (task: TaskSpec) (device: DeviceChoice) =
    match optimizerGroups spec (DeviceChoice.resolve device) torch.ScalarType.Float32 with
    | Error e -> fail "%s" e
    | Ok groups ->
        match OptimizerFile.forTask task groups with
        | Ok phis -> phis
        | Error e ->
            OptimizerFile.disposeGroups groups
            fail "%s '%s': %s" (if File.Exists spec then "optimizer file" else "pretrained optimizer") spec e

let runEvaluate (runtime: RuntimeSettings) (a: ParseResults<EvaluateArgs>) =
    let device = parseDevice (a.TryGetResult EvaluateArgs.Device)
    let task =
        parseTask
            { Name = a.GetResult EvaluateArgs.Task
              Dim = a.GetResult(EvaluateArgs.Dim, 10)
              MlpHidden = a.TryGetResult EvaluateArgs.Mlp_Hidden
              Activation = a.TryGetResult EvaluateArgs.Activation
              ConvChannels = a.TryGetResult EvaluateArgs.Conv_Channels
              ConvDense = a.TryGetResult EvaluateArgs.Conv_Dense
              Batch = a.TryGetResult EvaluateArgs.Batch }
    let d = Defaults.evaluation task
    let settings =
        { d with
            Steps = a.GetResult(EvaluateArgs.Steps, d.Steps)
            Runs = a.GetResult(EvaluateArgs.Runs, d.Runs)
            Seed = a.GetResult(EvaluateArgs.Seed, d.Seed)
            Tune = a.Contains EvaluateArgs.Tune_Baselines
            TuneSeed = a.GetResult(EvaluateArgs.Tune_Seed, d.TuneSeed)
            TuneRuns = a.GetResult(EvaluateArgs.Tune_Runs, d.TuneRuns)
            TuneSteps = a.GetResult(EvaluateArgs.Tune_Steps, d.TuneSteps)
            Device = device
            Backend = runtime.Backend }
    // validate the cheap things before loading anything
    if settings.Steps < 1 then fail "steps must be ≥ 1 (got %d)" settings.Steps
    if settings.Runs < 1 then fail "runs must be ≥ 1 (got %d)" settings.Runs
    let phi = loadPhi (a.GetResult EvaluateArgs.Optimizer) task device
    let results = evaluate settings (dataFor runtime task device) phi
    let out = a.GetResult EvaluateArgs.Out
    ResultsFile.save out results []
    printfn "results → %s" out
    0

let runReproduce (runtime: RuntimeSettings) (a: ParseResults<ReproduceArgs>) =
    match a.GetResult ReproduceArgs.Experiment with
    | "quadratic" ->
        let outDir = a.GetResult(ReproduceArgs.Out, Path.Combine("runs", "quadratic"))
        let d = Defaults.quadratic
        let cfg =
            { d with
                MetaIterations = a.GetResult(ReproduceArgs.Meta_Iterations, d.MetaIterations)
                Seed = a.GetResult(ReproduceArgs.Seed, d.Seed)
                Backend = runtime.Backend }
        let phi, final = train cfg TaskData.none outDir
        let results =
            evaluate { Defaults.evaluation cfg.Task with TuneSteps = cfg.Horizon; Device = cfg.Device; Backend = cfg.Backend } TaskData.none phi
        let out = Path.Combine(outDir, "results.json")
        ResultsFile.save out results []
        TrainState.dispose final
        printfn "results → %s" out
        0
    | other -> fail "unknown experiment '%s' (known: quadratic)" other

/// Validates a spec and hands it to the worker (JobsDirectory.submit).
let runSubmit (a: ParseResults<SubmitArgs>) =
    let file = a.GetResult SubmitArgs.Spec
    let jobs = a.GetResult SubmitArgs.Jobs
    if not (File.Exists file) then fail "spec file '%s' does not exist" file
    Directory.CreateDirectory jobs |> ignore
    match JobsDirectory.submit jobs (File.ReadAllText file) with
    | Error e -> fail "spec '%s': %s" file e
    | Ok spec ->
        printfn "submitted job %s (%d meta-iterations) to %s" spec.Id spec.Meta.MetaIterations jobs
        0

let runStatus (a: ParseResults<StatusArgs>) =
    let jobs = a.GetResult StatusArgs.Jobs
    if not (Directory.Exists jobs) then fail "jobs directory '%s' does not exist" jobs
    let only = a.TryGetResult StatusArgs.Id
    let entries = JobsDirectory.list jobs only
    if only.IsSome && entries.IsEmpty then fail "no job '%s' in %s" only.Value jobs
    // a cluster's jobs name the silo each runs on
    let clustered = entries |> List.exists (function Job(_, Ok s) -> s.Silo.IsSome | _ -> false)
    let row (id: string) (state: string) (progress: string) (best: string) (silo: string) (reason: string) =
        if clustered then printfn "%-20s %-10s %15s %12s  %-28s %s" id state progress best silo reason
        else printfn "%-20s %-10s %15s %12s  %s" id state progress best reason
    row "job" "state" "meta-iteration" "best val" "silo" "reason"
    for e in entries do
        match e with
        | Submitted id -> row id "submitted" "-" "-" "-" "waiting for the worker"
        | Job(_, Ok s) ->
            row s.Id (JobState.name s.State) (sprintf "%d/%d" s.Iteration s.MetaIterations)
                (s.BestValidation |> Option.map (sprintf "%.4g") |> Option.defaultValue "-") (defaultArg s.Silo "-") (s.Reason |> Option.defaultValue "")
        | Job(id, Error err) -> row id "?" "-" "-" "-" err
    0

let runCancel (a: ParseResults<CancelArgs>) =
    let jobs = a.GetResult CancelArgs.Jobs
    let id = a.GetResult CancelArgs.Id
    match JobsDirectory.requestCancel jobs id with
    | Error e -> fail "%s" e
    | Ok() ->
        printfn "cancellation of job %s requested" id
        0
