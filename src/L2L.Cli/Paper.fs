/// The paper's experiments, one command each: train what is needed (or reuse a φ trained with the
/// same settings), tune the baselines on held-out problems, evaluate with common random numbers, and
/// write paper/results/<name>/ (results.json, curves.csv, curves.png, curves.svg).
module L2L.Cli.Paper

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp
open L2L
open L2L.Cli.Commands

let experiments = [ "quadratics"; "mnist"; "mnist-generalization"; "mnist-sweep"; "mnist-conv"; "variants" ]

/// The meta-training settings of each trained optimizer.
let quadraticConfig = Defaults.quadratic

let mnistTask = Defaults.mnistTask
let mnistConfig = Defaults.meta mnistTask

/// The conv net with its two learned optimizers (conv and fully connected parameters).
let convTask = Defaults.convTask
let convConfig = Defaults.meta convTask

/// The data sets of a task, loaded once per process (Datasets caches them).
let private dataOf (runtime: RuntimeSettings) (t: TaskSpec) = dataFor runtime t Cpu

/// The training settings an optimizer file must record to be reused for `cfg` (what `train` writes).
let private expected (cfg: MetaConfig) : (string * string) list =
    [ "description", TaskSpec.describe cfg.Task
      "meta_iterations", string cfg.MetaIterations
      "horizon", string cfg.Horizon
      "unroll", string cfg.Unroll.Unroll
      "second_order", (if cfg.Unroll.SecondOrder then "true" else "false")
      "log_loss", (if cfg.Unroll.LogLoss then "true" else "false")
      "meta_lr", cfg.MetaLr.ToString("R", Globalization.CultureInfo.InvariantCulture)
      "batch_functions", string cfg.BatchFunctions
      "seed", string cfg.Seed
      "validate_every", string cfg.ValidateEvery
      "validation_functions", string cfg.ValidationFunctions ]

/// True when an optimizer file's "training" object records exactly the settings of `cfg`. The later
/// settings (random scaling, curriculum, imitation) are absent from the first files: absent, they are
/// the defaults'.
let recordsSettings (training: JsonNode) (cfg: MetaConfig) =
    let defaults = laterSettings { cfg with RandomScaling = 0.0; Curriculum = Curriculum.none; Imitation = ImitationConfig.none }
    not (isNull training)
    && List.forall2
        (fun (k: string, v: JsonNode) (_, dflt: JsonNode) ->
            let recorded = match training[k] with null -> dflt | x -> x
            JsonNode.DeepEquals(recorded, v))
        (laterSettings cfg) defaults
    && expected cfg
       |> List.forall (fun (k, v) ->
           match training[k] with
           | null -> false
           | x ->
               // strings compared as their values (JSON text would escape the non-ASCII of a description)
               let s = if x.GetValueKind() = JsonValueKind.String then x.GetValue<string>() else x.ToJsonString()
               if k = "meta_lr" then Double.Parse(s, Globalization.CultureInfo.InvariantCulture) = cfg.MetaLr else s = v)

/// φ trained with `cfg`, from a fresh draw or, with `init`, from another optimizer of paper/optimizers
/// (its name and φ): read from `paper/optimizers/<name>.json` when it records the same settings (m_φ's
/// hyper-parameters, every training setting and the optimizer it started from), else trained now and
/// saved there.
let optimizerFrom (runtime: RuntimeSettings) (root: string) (name: string) (cfg: MetaConfig) (retrain: bool) (init: (string * Phi list) option) : Phi list * float =
    let cfg = { cfg with Backend = runtime.Backend }
    let path = Path.Combine(root, "optimizers", name + ".json")
    let initName = init |> Option.map fst
    let existing =
        if retrain || not (File.Exists path) then None
        else
            try
                let node = JsonNode.Parse(File.ReadAllText path)
                let training = node["training"]
                let recordedInit = match training["init"] with null -> None | v -> Some(v.GetValue<string>())
                if not (recordsSettings training cfg) || recordedInit <> initName then None
                else
                    match OptimizerFile.loadFor path cfg.Task (DeviceChoice.resolve cfg.Device) cfg.DType with
                    | Ok phis when phis |> List.forall (fun p -> p.Config = cfg.Lstm) -> Some(phis, training["seconds"].GetValue<float>())
                    | _ -> None
            with _ -> None
    match existing with
    | Some(phi, seconds) ->
        printfn "reusing %s (trained with the same settings in %.0fs)" path seconds
        phi, seconds
    | None ->
        let dir = Path.Combine(Path.GetTempPath(), "l2l-paper-" + Guid.NewGuid().ToString("N"))
        let phi, final = trainFrom cfg (dataOf runtime cfg.Task) dir init
        let node = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "optimizer.json")))
        let seconds = (node["training"]["seconds"]).GetValue<float>()
        AtomicFile.write path (File.ReadAllBytes(Path.Combine(dir, "optimizer.json"))) |> ignore
        AtomicFile.write (Path.Combine(root, "optimizers", name + ".train-log.csv")) (File.ReadAllBytes(Path.Combine(dir, "train-log.csv"))) |> ignore
        Directory.Delete(dir, true)
        let kept = MetaTrain.snapshot phi
        TrainState.dispose final
        kept, seconds

/// φ trained with `cfg` from a fresh draw (see `optimizerFrom`).
let optimizer (runtime: RuntimeSettings) (root: string) (name: string) (cfg: MetaConfig) (retrain: bool) : Phi list * float =
    optimizerFrom runtime root name cfg retrain None

/// Evaluates and writes results.json, curves.csv and the figure into `dir`.
let private evaluateInto (runtime: RuntimeSettings) (dir: string) (title: string) (settings: EvalSettings) (phi: Phi list) (extra: (string * JsonNode) list) =
    Directory.CreateDirectory dir |> ignore
    let sw = Stopwatch.StartNew()
    let r = evaluate { settings with Backend = runtime.Backend } (dataOf runtime settings.Task) phi
    let extra = extra @ [ "evaluation_seconds", JsonValue.Create(sw.Elapsed.TotalSeconds) :> JsonNode; "description", JsonValue.Create(TaskSpec.describe settings.Task) :> JsonNode ]
    ResultsFile.save (Path.Combine(dir, "results.json")) r extra
    AtomicFile.writeText (Path.Combine(dir, "curves.csv")) (ResultsFile.curvesCsv r) |> ignore
    Plots.curves (Path.Combine(dir, "curves")) title r
    printfn "→ %s" dir
    r

let private trainingInfo (name: string) (cfg: MetaConfig) (seconds: float) : (string * JsonNode) list =
    [ "optimizer", JsonValue.Create(sprintf "optimizers/%s.json" name)
      "meta_iterations", JsonValue.Create(cfg.MetaIterations)
      "meta_training_seconds", JsonValue.Create(seconds) ]

/// MNIST evaluations: 10 runs; baselines tuned on 3 held-out runs (the conv net: on 1, coarse to
/// fine, as a conv run costs ~10× an MLP run).
let mnistEval (task: TaskSpec) =
    let d = Defaults.evaluation task
    { d with TuneRuns = (match task with Conv _ -> 1 | _ -> d.TuneRuns) }

/// The appendix's architectures (`paper variants`): each meta-trained with the same budget per task,
/// then evaluated against the same tuned baselines with the same problems. Quadratics: the paper's
/// budget (5000 meta-iterations; the lstm row is the paper's φ, trained with exactly these settings);
/// MNIST: 1000 meta-iterations, a third of the `mnist` experiment's, as the architectures without the
/// closed form take 1.3–3.5× the LSTM's time per meta-iteration there.
let variantTasks =
    [ "quadratics", "quadratic", quadraticConfig, "Quadratics (10-d), 1000 fresh functions", Defaults.evaluation quadraticConfig.Task
      "mnist", "mnist", { mnistConfig with MetaIterations = 1000 }, "MNIST, MLP 784-20-10 sigmoid, 10 fresh runs", mnistEval mnistTask ]

/// The optimizer file a variant is kept in (the lstm on quadratics: the paper's own).
let variantName (a: Architecture) (short: string) (cfg: MetaConfig) =
    if a = Architecture.Lstm && cfg = quadraticConfig then "quadratic" else sprintf "variant-%s-%s" (Architecture.name a) short

let private lossAt (s: Summary) (t: int) = s.LossAt |> List.tryFind (fun (u, _) -> u = t) |> Option.map snd
let private ciAt (s: Summary) (t: int) = s.Ci95At |> List.tryFind (fun (u, _) -> u = t) |> Option.map snd

/// Runs `paper variants`: paper/results/variants/<task>/ (results.json with every architecture's m_φ
/// under its name beside the baselines, curves) and paper/results/variants/results.json (a row per
/// architecture and task).
let private variants (runtime: RuntimeSettings) (root: string) (optimizer: string -> MetaConfig -> Phi list * float) =
    let dir = Path.Combine(root, "results", "variants")
    let rows = JsonArray()
    for sub, short, baseCfg, title, settings in variantTasks do
        let settings = { settings with Backend = runtime.Backend }
        let evals =
            [ for a in Architecture.all ->
                  let cfg = { baseCfg with Lstm = LstmConfig.withArchitecture a baseCfg.Lstm }
                  let name = variantName a short cfg
                  say (sprintf "\n--- %s on %s (%s)" (Architecture.name a) sub name)
                  let phis, seconds = optimizer name cfg
                  let sw = Stopwatch.StartNew()
                  let r = evaluate settings (dataOf runtime settings.Task) phis
                  a, name, cfg, seconds, sw.Elapsed.TotalSeconds, r ]
        // the baselines are the same in every evaluation (the same tuning and evaluation seeds): the
        // first one's are kept, each architecture's m_φ under its own name
        let _, _, _, _, _, first = evals.Head
        let learned (r: EvaluationResults) = r.Optimizers |> List.find (fun s -> s.Name = "lstm")
        let baselines = first.Optimizers |> List.filter (fun s -> s.Name <> "lstm")
        for _, _, _, _, _, r in evals.Tail do
            let others = r.Optimizers |> List.filter (fun s -> s.Name <> "lstm")
            if others |> List.map (fun s -> s.Name, s.LossAt) <> (baselines |> List.map (fun s -> s.Name, s.LossAt)) then
                failwith "the baselines differ between the architectures' evaluations (they share every seed)"
        let merged =
            { first with
                Optimizers = [ for a, _, _, _, _, r in evals -> { learned r with Name = Architecture.name a } ] @ baselines }
        let taskDir = Path.Combine(dir, sub)
        Directory.CreateDirectory taskDir |> ignore
        let info = JsonArray()
        for a, name, cfg, seconds, evalSeconds, r in evals do
            let o = JsonObject()
            o["architecture"] <- JsonValue.Create(Architecture.name a)
            o["optimizer"] <- JsonValue.Create(sprintf "optimizers/%s.json" name)
            o["meta_iterations"] <- JsonValue.Create(cfg.MetaIterations)
            o["meta_training_seconds"] <- JsonValue.Create(seconds)
            o["evaluation_seconds"] <- JsonValue.Create(evalSeconds)
            o["parameters"] <- JsonValue.Create(Phi.savedShapes cfg.Lstm |> List.sumBy (Array.fold (*) 1L))
            info.Add(o)
            // the row of the summary table
            let s = learned r
            let steps = r.Steps
            let best t = baselines |> List.minBy (fun b -> lossAt b t |> Option.defaultValue infinity)
            let row = JsonObject()
            row["task"] <- JsonValue.Create(sub)
            row["architecture"] <- JsonValue.Create(Architecture.name a)
            row["meta_iterations"] <- JsonValue.Create(cfg.MetaIterations)
            row["meta_training_seconds"] <- JsonValue.Create(seconds)
            row["evaluation_steps_per_second"] <- JsonValue.Create(s.StepsPerSecond)
            row["steps"] <- JsonValue.Create(steps)
            for t in List.distinct [ 100; steps ] do
                let b = best t
                row[sprintf "loss_%d" t] <- JsonValue.Create(lossAt s t |> Option.defaultValue nan)
                row[sprintf "ci95_%d" t] <- JsonValue.Create(ciAt s t |> Option.defaultValue nan)
                row[sprintf "best_baseline_%d" t] <- JsonValue.Create(b.Name)
                row[sprintf "best_baseline_loss_%d" t] <- JsonValue.Create(lossAt b t |> Option.defaultValue nan)
                row[sprintf "best_baseline_ci95_%d" t] <- JsonValue.Create(ciAt b t |> Option.defaultValue nan)
            rows.Add(row)
        let _, _, _, _, evalSeconds, _ = evals.Head
        ResultsFile.save (Path.Combine(taskDir, "results.json")) merged
            [ "architectures", info :> JsonNode
              "description", JsonValue.Create(TaskSpec.describe settings.Task) :> JsonNode
              "evaluation_seconds", JsonValue.Create(evalSeconds) :> JsonNode ]
        AtomicFile.writeText (Path.Combine(taskDir, "curves.csv")) (ResultsFile.curvesCsv merged) |> ignore
        Plots.curves (Path.Combine(taskDir, "curves")) (title + ": the four architectures") merged
        printfn "→ %s" taskDir
    let o = JsonObject()
    o["rows"] <- rows
    AtomicFile.writeText (Path.Combine(dir, "results.json")) (o.ToJsonString(JsonSerializerOptions(WriteIndented = true))) |> ignore
    printfn "→ %s" dir

/// `paper beyond`'s optimizer for neural networks: m_φ on the Adam-normalised moments, meta-trained
/// on the paper's MNIST MLPs with a third of the trajectories imitating Adam and the unroll-length
/// curriculum (the combination measured best; paper/README.md measures each ingredient, the task
/// mixture included).
let beyondConfig =
    { mnistConfig with
        Lstm = { mnistConfig.Lstm with Preprocessing = NormalizedMoments([ 0.5; 0.9; 0.99 ], 0.999) }
        Imitation = { Probability = 0.3; Lr = 0.03 }
        Curriculum = { Horizons = [ 200; 500; 1000 ]; Patience = 3; ValidateAll = false }
        MetaIterations = 4000 }

/// The conv net's: `general` fine-tuned on it (two φ, conv and fully connected parameters, both
/// starting from general's) at the horizon it is evaluated to, with the conv net's budget (300
/// meta-iterations, validation every 50 on 3 networks).
let beyondConvConfig = { convConfig with Lstm = beyondConfig.Lstm; Horizon = 200 }

/// The quadratics': the paper's m_φ (log-sign inputs) meta-trained on 10-d and 50-d quadratics
/// (`--task mixture --mixture quadratic:10+quadratic:50`) with random scaling (A = 1). The moments
/// carry no scale, and Adam's best learning rate is 10× larger on the quadratics than on the MLPs.
let beyondQuadraticConfig =
    let quadratics d = { Task = Quadratic d; Weight = 1.0; Functions = 128; Validation = 100 }
    let task = Mixture.task [ quadratics 10; quadratics 50 ]
    { Defaults.meta task with RandomScaling = 1.0; MetaIterations = 5000; ValidateEvery = 250 }

/// `paper beyond`'s optimizers, one per kind of optimizee: (name, settings, the optimizer it starts
/// from), in training order.
let beyondOptimizers =
    [ "general", beyondConfig, None
      "general-conv", beyondConvConfig, Some "general"
      "general-quadratic", beyondQuadraticConfig, None ]

/// The tasks of `paper beyond`: (results folder, title, settings, the optimizer that runs it). The
/// networks twice: steps 100 and 200 with the baselines tuned at step 100, and 1000 steps with them
/// tuned at step 1000.
let beyondTasks =
    let relu = Mlp { Hidden = [ 20 ]; Activation = Relu; Batch = 128 }
    let long (s: EvalSettings) = { s with Steps = 1000; TuneSteps = 1000 }
    let quad d = { Defaults.evaluation (Quadratic d) with TuneSteps = 100 }
    [ "mnist-relu", "MNIST 784-20-10 ReLU, 10 fresh runs", { mnistEval relu with TuneSteps = 100 }, "general"
      "mnist-relu-1000", "MNIST 784-20-10 ReLU, 1000 steps (baselines tuned at step 1000)", long (mnistEval relu), "general"
      "mnist-sigmoid", "MNIST 784-20-10 sigmoid, 10 fresh runs", { mnistEval mnistTask with TuneSteps = 100 }, "general"
      "mnist-sigmoid-1000", "MNIST 784-20-10 sigmoid, 1000 steps (baselines tuned at step 1000)", long (mnistEval mnistTask), "general"
      "mnist-conv", "MNIST conv net, general fine-tuned on it (two φ), 10 fresh runs", { mnistEval convTask with TuneSteps = 100 }, "general-conv"
      "mnist-conv-1000", "MNIST conv net, general-conv, 1000 steps (baselines tuned at step 1000)", long (mnistEval convTask), "general-conv"
      "quadratic-10", "Quadratics (10-d), 1000 fresh functions", quad 10, "general-quadratic"
      "quadratic-50", "Quadratics (50-d), 1000 fresh functions", quad 50, "general-quadratic" ]

/// Runs `paper beyond`: trains (or reuses) the optimizers of `beyondOptimizers` in
/// paper/optimizers/, evaluates each task of `beyondTasks` with its optimizer, unchanged, into
/// results/beyond/<task>/, and writes results/beyond/results.json ({"optimizers": [...], "tasks":
/// [...]}: how each optimizer was trained; each task's evaluation, as `tools/l2l evaluate` writes
/// it, with its name and optimizer).
let private beyond (runtime: RuntimeSettings) (root: string) (optimizer: string -> MetaConfig -> (string * Phi list) option -> Phi list * float) =
    let trained = Collections.Generic.Dictionary<string, Phi list * float>()
    for name, cfg, init in beyondOptimizers do
        say (sprintf "\n--- beyond: the optimizer %s" name)
        trained[name] <- optimizer name cfg (init |> Option.map (fun n -> n, fst trained[n]))
    let dir = Path.Combine(root, "results", "beyond")
    let tasks = JsonArray()
    for name, title, settings, optimizerName in beyondTasks do
        say (sprintf "\n--- beyond: %s (%s)" name optimizerName)
        let phis, seconds = trained[optimizerName]
        let _, cfg, _ = beyondOptimizers |> List.find (fun (n, _, _) -> n = optimizerName)
        // a single φ serves every coordinate group
        let groupPhis = if phis.Length = 1 then TaskSpec.groups settings.Task |> List.map (fun _ -> phis.Head) else phis
        evaluateInto runtime (Path.Combine(dir, name)) title settings groupPhis (trainingInfo optimizerName cfg seconds) |> ignore
        let o = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, name, "results.json"))).AsObject()
        o["name"] <- JsonValue.Create(name)
        tasks.Add(o)
    let optimizers = JsonArray()
    for name, cfg, init in beyondOptimizers do
        let o = JsonObject()
        o["name"] <- JsonValue.Create(name)
        o["file"] <- JsonValue.Create(sprintf "optimizers/%s.json" name)
        o["task"] <- JsonValue.Create(TaskSpec.describe cfg.Task)
        o["init"] <- (match init with Some n -> JsonValue.Create(n) :> JsonNode | None -> null)
        o["meta_training_seconds"] <- JsonValue.Create(snd trained[name])
        optimizers.Add(o)
    let all = JsonObject()
    all["optimizers"] <- optimizers
    all["meta_training_seconds"] <- JsonValue.Create(trained.Values |> Seq.sumBy snd)
    all["tasks"] <- tasks
    AtomicFile.writeText (Path.Combine(dir, "results.json")) (all.ToJsonString(JsonSerializerOptions(WriteIndented = true))) |> ignore
    printfn "→ %s" dir

/// The tables of paper/README.md (between its markers), rebuilt from paper/results.
let tables (root: string) : string =
    let sb = Text.StringBuilder()
    let results = Path.Combine(root, "results")
    let read (path: string) =
        if File.Exists path then
            try Some(JsonNode.Parse(File.ReadAllText path))
            with :? Text.Json.JsonException as e -> raise (InvalidDataException(sprintf "%s is not a results file: %s" path e.Message))
        else None
    let num (n: JsonNode) = if isNull n then "–" else sprintf "%.4f" (n.GetValue<float>())
    let table (title: string) (rel: string) =
        match read (Path.Combine(results, rel, "results.json")) with
        | None -> ()
        | Some r ->
            let steps = r["steps"].GetValue<int>()
            sb.AppendLine(sprintf "#### %s" title).AppendLine() |> ignore
            let desc = match r["description"] with null -> "" | d -> d.GetValue<string>()
            sb.AppendLine(sprintf "%s; %d runs; evaluation %.0f s. ![](results/%s/curves.png)" desc (r["runs"].GetValue<int>())
                              (match r["evaluation_seconds"] with null -> 0.0 | v -> v.GetValue<float>()) rel).AppendLine() |> ignore
            let hasAcc = r["optimizers"].AsArray() |> Seq.exists (fun o -> not (isNull o["test_acc_at"]))
            sb.AppendLine("| optimizer | lr | loss @100 | loss @" + string steps + (if hasAcc then " | test acc @100 | test acc @" + string steps else "") + " |")
              .AppendLine("|---|---|---|---|" + (if hasAcc then "---|---|" else "")) |> ignore
            for o in r["optimizers"].AsArray() do
                let name = o["name"].GetValue<string>()
                let lr = match o["hyper"]["lr"] with null -> "–" | v -> sprintf "%.3g" (v.GetValue<float>())
                let at (field: string) (t: int) = match o[field] with null -> null | f -> f[string t]
                let cell field t =
                    let v = at field t
                    if field = "loss_at" then
                        let c = at "ci95_at" t
                        if isNull v then "–" elif isNull c then num v else sprintf "%s ± %.3f" (num v) (c.GetValue<float>())
                    else num v
                sb.AppendLine(sprintf "| %s | %s | %s | %s%s |" (if name = "lstm" then "**LSTM**" else name) lr (cell "loss_at" 100) (cell "loss_at" steps)
                                  (if hasAcc then sprintf " | %s | %s" (cell "test_acc_at" 100) (cell "test_acc_at" steps) else "")) |> ignore
            sb.AppendLine() |> ignore
    table "Quadratics (Fig. 4, left)" "quadratics"
    table "MNIST, 784-20-10 sigmoid (Fig. 4, centre and right)" "mnist"
    table "MNIST generalization: 40 hidden units (Fig. 5)" "mnist-generalization/hidden40"
    table "MNIST generalization: 2 hidden layers (Fig. 5)" "mnist-generalization/layers2"
    table "MNIST generalization: ReLU (Fig. 5)" "mnist-generalization/relu"
    table "MNIST conv net with two LSTMs (the architecture of Fig. 7)" "mnist-conv"
    match read (Path.Combine(results, "mnist-sweep", "results.json")) with
    | None -> ()
    | Some r ->
        sb.AppendLine("#### MNIST sweep: loss at step 100 (Fig. 6)").AppendLine().AppendLine("![](results/mnist-sweep/sweep.png)").AppendLine() |> ignore
        sb.AppendLine("| hidden layers | units | LSTM | best tuned baseline | its loss | LSTM better |").AppendLine("|---|---|---|---|---|---|") |> ignore
        for c in r["cells"].AsArray() do
            let l = c["lstm_loss_100"].GetValue<float>()
            let b = c["best_baseline_loss_100"].GetValue<float>()
            sb.AppendLine(sprintf "| %d | %d | %.4f | %s | %.4f | %s |" (c["depth"].GetValue<int>()) (c["width"].GetValue<int>()) l (c["best_baseline"].GetValue<string>()) b (if l < b then "yes" else "no")) |> ignore
        sb.AppendLine() |> ignore
    table "The appendix's architectures on the quadratics (`paper variants`)" "variants/quadratics"
    table "The appendix's architectures on MNIST, 1000 meta-iterations each (`paper variants`)" "variants/mnist"
    match read (Path.Combine(results, "variants", "results.json")) with
    | None -> ()
    | Some r ->
        sb.AppendLine("#### The architectures against the best tuned baseline").AppendLine() |> ignore
        sb.AppendLine("| task | architecture | meta-iterations | meta-training | evaluation, steps/s | loss @100 | best baseline @100 | ratio @100 | loss @last | best baseline @last | ratio @last |")
          .AppendLine("|---|---|---|---|---|---|---|---|---|---|---|") |> ignore
        for row in r["rows"].AsArray() do
            let f (k: string) = row[k].GetValue<float>()
            let last = row["steps"].GetValue<int>()
            let cell (t: int) =
                let l, b = f (sprintf "loss_%d" t), f (sprintf "best_baseline_loss_%d" t)
                sprintf "%.4f ± %.4f | %s %.4f | %s" l (f (sprintf "ci95_%d" t)) (row[sprintf "best_baseline_%d" t].GetValue<string>()) b
                    (if l < b then sprintf "**%.2f**" (l / b) else sprintf "%.2f" (l / b))
            sb.AppendLine(sprintf "| %s | %s | %d | %.0f s | %.0f | %s | %s |" (row["task"].GetValue<string>()) (row["architecture"].GetValue<string>())
                              (row["meta_iterations"].GetValue<int>()) (f "meta_training_seconds") (f "evaluation_steps_per_second") (cell 100) (cell last)) |> ignore
        sb.AppendLine() |> ignore
    match read (Path.Combine(results, "beyond", "results.json")) with
    | None -> ()
    | Some r ->
        sb.AppendLine("#### Beyond the paper: learned optimizers against the tuned baselines (`paper beyond`)").AppendLine() |> ignore
        let trainedAs =
            [ for o in r["optimizers"].AsArray() ->
                  sprintf "`%s` (%s%s, %.0f s)" (o["file"].GetValue<string>()) (o["task"].GetValue<string>())
                      (match o["init"] with null -> "" | i -> sprintf ", from %s" (i.GetValue<string>())) (o["meta_training_seconds"].GetValue<float>()) ]
        sb.AppendLine(sprintf "φ: %s. Ratio: the learned optimizer's mean loss over the best tuned baseline's at that step (bold: below 1)."
                          (String.concat "; " trainedAs)).AppendLine() |> ignore
        sb.AppendLine("| task | φ | step | learned optimizer | best tuned baseline | its loss | ratio |").AppendLine("|---|---|---|---|---|---|---|") |> ignore
        for t in r["tasks"].AsArray() do
            let phi = match t["optimizer"] with null -> "" | o -> Path.GetFileNameWithoutExtension(o.GetValue<string>())
            let steps = t["steps"].GetValue<int>()
            let at (o: JsonNode) (field: string) (s: int) = match o[field] with null -> None | f -> (match f[string s] with null -> None | v -> Some(v.GetValue<float>()))
            let optimizers = t["optimizers"].AsArray() |> List.ofSeq
            let lstm = optimizers |> List.find (fun o -> o["name"].GetValue<string>() = "lstm")
            let baselines = optimizers |> List.filter (fun o -> o["name"].GetValue<string>() <> "lstm")
            for s in (if steps >= 1000 then [ steps ] else [ 100; steps ]) do
                match at lstm "loss_at" s with
                | None -> ()
                | Some l ->
                    let best = baselines |> List.minBy (fun o -> at o "loss_at" s |> Option.defaultValue infinity)
                    let b = at best "loss_at" s |> Option.defaultValue nan
                    let ci (o: JsonNode) = match at o "ci95_at" s with Some c -> sprintf " ± %.4f" c | None -> ""
                    sb.AppendLine(sprintf "| %s | %s | %d | %.4f%s | %s | %.4f%s | %s |" (t["name"].GetValue<string>()) phi s l (ci lstm) (best["name"].GetValue<string>()) b (ci best)
                                      (if l < b then sprintf "**%.2f**" (l / b) else sprintf "%.2f" (l / b))) |> ignore
        sb.AppendLine() |> ignore
    sb.ToString()

/// Rewrites the part of paper/README.md between `<!-- tables -->` and `<!-- /tables -->`.
let writeTables (root: string) =
    let path = Path.Combine(root, "README.md")
    if File.Exists path then
        let text = File.ReadAllText path
        let a = text.IndexOf "<!-- tables -->"
        let b = text.IndexOf "<!-- /tables -->"
        if a >= 0 && b > a then
            let updated = text.Substring(0, a + "<!-- tables -->".Length) + "\n" + tables root + text.Substring b
            AtomicFile.writeText path updated |> ignore
            printfn "tables of %s updated" path

/// The sweep's figure: loss at step 100 against width, per depth; LSTM solid with circles, the best
/// tuned baseline with squares (SVG export has no dashed lines).
let plotSweep (dir: string) (cells: (int * int * float * string * float) list) =
    use plt = new ScottPlot.Plot()
    for depth, color in [ 1, ScottPlot.Color.FromHex "#d62728"; 2, ScottPlot.Color.FromHex "#1f77b4" ] do
        let row = cells |> List.filter (fun (d, _, _, _, _) -> d = depth)
        let xs = row |> List.map (fun (_, w, _, _, _) -> float w) |> Array.ofList
        let l = plt.Add.Scatter(xs, row |> List.map (fun (_, _, l, _, _) -> l) |> Array.ofList)
        l.Color <- color
        l.LineWidth <- 2.5f
        l.MarkerShape <- ScottPlot.MarkerShape.FilledCircle
        l.MarkerSize <- 9.0f
        l.LegendText <- sprintf "LSTM, %d hidden layer(s)" depth
        let b = plt.Add.Scatter(xs, row |> List.map (fun (_, _, _, _, b) -> b) |> Array.ofList)
        b.Color <- color.WithAlpha(0.6)
        b.LineWidth <- 1.0f
        b.MarkerShape <- ScottPlot.MarkerShape.OpenSquare
        b.MarkerSize <- 9.0f
        b.LegendText <- sprintf "best tuned baseline, %d hidden layer(s)" depth
    plt.Title("MNIST sweep: loss at step 100 (φ trained on 1×20)")
    plt.XLabel("hidden units per layer")
    plt.YLabel("loss at step 100")
    plt.ShowLegend(ScottPlot.Alignment.MiddleLeft) |> ignore
    Plots.save plt (Path.Combine(dir, "sweep")) 900 600

/// Runs one experiment. `retrain name`: whether to train optimizer `name` again even where
/// paper/optimizers holds one with the same settings.
let run (runtime: RuntimeSettings) (root: string) (name: string) (retrain: string -> bool) =
    let results = Path.Combine(root, "results")
    let optimizer name cfg = optimizer runtime root name cfg (retrain name)
    let evaluateInto = evaluateInto runtime
    match name with
    | "quadratics" ->
        let phi, secs = optimizer "quadratic" quadraticConfig
        evaluateInto (Path.Combine(results, "quadratics")) "Quadratics (10-d), 1000 fresh functions" (Defaults.evaluation quadraticConfig.Task) phi
            (trainingInfo "quadratic" quadraticConfig secs)
        |> ignore
    | "mnist" ->
        let phi, secs = optimizer "mnist" mnistConfig
        evaluateInto (Path.Combine(results, "mnist")) "MNIST, MLP 784-20-10 sigmoid, 10 fresh runs" (mnistEval mnistTask) phi
            (trainingInfo "mnist" mnistConfig secs)
        |> ignore
    | "mnist-generalization" ->
        let phi, secs = optimizer "mnist" mnistConfig
        for sub, title, task in
            [ "hidden40", "MNIST, 40 hidden units (trained on 20)", Mlp { Hidden = [ 40 ]; Activation = Sigmoid; Batch = 128 }
              "layers2", "MNIST, 2 hidden layers (trained on 1)", Mlp { Hidden = [ 20; 20 ]; Activation = Sigmoid; Batch = 128 }
              "relu", "MNIST, ReLU activations (trained on sigmoid)", Mlp { Hidden = [ 20 ]; Activation = Relu; Batch = 128 } ] do
            evaluateInto (Path.Combine(results, "mnist-generalization", sub)) title (mnistEval task) phi (trainingInfo "mnist" mnistConfig secs) |> ignore
    | "mnist-sweep" ->
        let phi, secs = optimizer "mnist" mnistConfig
        let dir = Path.Combine(results, "mnist-sweep")
        Directory.CreateDirectory dir |> ignore
        let cells =
            [ for depth in [ 1; 2 ] do
                  for width in [ 10; 20; 40 ] do
                      let task = Mlp { Hidden = List.replicate depth width; Activation = Sigmoid; Batch = 128 }
                      let r = evaluate { mnistEval task with Steps = 100; Backend = runtime.Backend } (dataOf runtime task) phi
                      let at100 (s: Summary) = s.LossAt |> List.find (fun (t, _) -> t = 100) |> snd
                      let lstm = r.Optimizers |> List.find (fun s -> s.Name = "lstm")
                      let best = r.Optimizers |> List.filter (fun s -> s.Name <> "lstm") |> List.minBy at100
                      yield depth, width, at100 lstm, best.Name, at100 best ]
        let csv =
            "depth,width,lstm_loss_100,best_baseline,best_baseline_loss_100\n"
            + (cells |> List.map (fun (d, w, l, bn, b) -> sprintf "%d,%d,%s,%s,%s" d w (l.ToString("R")) bn (b.ToString("R"))) |> String.concat "\n")
            + "\n"
        AtomicFile.writeText (Path.Combine(dir, "sweep.csv")) csv |> ignore
        let o = JsonObject()
        o["optimizer"] <- JsonValue.Create("optimizers/mnist.json")
        o["meta_training_seconds"] <- JsonValue.Create(secs)
        let arr = JsonArray()
        for d, w, l, bn, b in cells do
            let c = JsonObject()
            c["depth"] <- JsonValue.Create(d)
            c["width"] <- JsonValue.Create(w)
            c["lstm_loss_100"] <- JsonValue.Create(l)
            c["best_baseline"] <- JsonValue.Create(bn)
            c["best_baseline_loss_100"] <- JsonValue.Create(b)
            arr.Add(c)
        o["cells"] <- arr
        AtomicFile.writeText (Path.Combine(dir, "results.json")) (o.ToJsonString(JsonSerializerOptions(WriteIndented = true))) |> ignore
        plotSweep dir cells
        printfn "→ %s" dir
    | "mnist-conv" ->
        let phis, secs = optimizer "mnist-conv" convConfig
        evaluateInto (Path.Combine(results, "mnist-conv")) "MNIST conv net, two LSTMs (conv, fully connected), 10 fresh runs" (mnistEval convTask) phis
            (trainingInfo "mnist-conv" convConfig secs)
        |> ignore
    | "variants" -> variants runtime root optimizer
    | "beyond" -> beyond runtime root (fun name cfg init -> optimizerFrom runtime root name cfg (retrain name) init)
    | other -> fail "unknown experiment '%s' (known: %s, all; beyond)" other (String.concat ", " experiments)

/// With --retrain, each optimizer is trained once per command: the experiments after the first that
/// needs it (mnist, mnist-generalization and mnist-sweep share one) reuse the file it wrote.
let retrainOnce (retrain: bool) : string -> bool =
    let retrained = Collections.Generic.HashSet<string>()
    fun name -> retrain && retrained.Add name

/// `tools/l2l paper NAME|all`.
let runPaper (runtime: RuntimeSettings) (a: Argu.ParseResults<L2L.Cli.Args.PaperArgs>) =
    let root = a.GetResult(L2L.Cli.Args.PaperArgs.Root, "paper")
    let retrain = retrainOnce (a.Contains L2L.Cli.Args.PaperArgs.Retrain)
    match a.GetResult L2L.Cli.Args.PaperArgs.Experiment with
    | "all" ->
        let clock = Stopwatch.StartNew()
        for k, name in List.indexed experiments do
            let past = if k = 0 then "" else sprintf ", %.0f s so far" clock.Elapsed.TotalSeconds
            say (sprintf "\n=== paper %s (%d of %d%s)" name (k + 1) experiments.Length past)
            run runtime root name retrain
    | name -> run runtime root name retrain
    writeTables root
    0
