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

let experiments = [ "quadratics"; "mnist"; "mnist-generalization"; "mnist-sweep" ]

/// The meta-training settings of each trained optimizer.
let quadraticConfig = MetaConfig.quadratic

let mnistTask = Mlp { Hidden = [ 20 ]; Activation = Sigmoid; Batch = 128 }
let mnistConfig = MetaConfig.mnist mnistTask

let private settingsKey (cfg: MetaConfig) = Checkpoint.fingerprint cfg + sprintf "|I%d|lr%g|V%d/%d" cfg.MetaIterations cfg.MetaLr cfg.ValidateEvery cfg.ValidationFunctions

/// φ trained with `cfg`: read from `paper/optimizers/<name>.json` when it records the same settings,
/// else trained now and saved there.
let optimizer (root: string) (name: string) (cfg: MetaConfig) (retrain: bool) : Phi * float =
    let path = Path.Combine(root, "optimizers", name + ".json")
    let key = settingsKey cfg
    let existing =
        if retrain || not (File.Exists path) then None
        else
            try
                let node = JsonNode.Parse(File.ReadAllText path)
                let recorded = (node["training"]["settings"]).GetValue<string>()
                if recorded <> key then None
                else
                    match OptimizerFile.load path (DeviceChoice.resolve cfg.Device) cfg.DType with
                    | Ok phi -> Some(phi, (node["training"]["seconds"]).GetValue<float>())
                    | Error _ -> None
            with _ -> None
    match existing with
    | Some(phi, seconds) ->
        printfn "reusing %s (trained with the same settings in %.0fs)" path seconds
        phi, seconds
    | None ->
        let dir = Path.Combine(Path.GetTempPath(), "l2l-paper-" + Guid.NewGuid().ToString("N"))
        let sw = Stopwatch.StartNew()
        let phi, final = train cfg dir
        let seconds = sw.Elapsed.TotalSeconds
        let node = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "optimizer.json"))).AsObject()
        node["training"]["settings"] <- JsonValue.Create(key)
        node["training"]["seconds"] <- JsonValue.Create(seconds)
        Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
        File.WriteAllText(path, node.ToJsonString())
        let logTarget = Path.Combine(root, "optimizers", name + ".train-log.csv")
        File.Copy(Path.Combine(dir, "train-log.csv"), logTarget, true)
        Directory.Delete(dir, true)
        let kept = phi |> Phi.map (fun t -> t.detach().clone().requires_grad_(true))
        TrainState.dispose final
        kept, seconds

/// Evaluates and writes results.json, curves.csv and the figure into `dir`.
let private evaluateInto (dir: string) (title: string) (settings: EvalSettings) (phi: Phi) (extra: (string * JsonNode) list) =
    Directory.CreateDirectory dir |> ignore
    let sw = Stopwatch.StartNew()
    let r = evaluate settings phi
    let r = { r with Extra = r.Extra @ extra @ [ "evaluation_seconds", JsonValue.Create(sw.Elapsed.TotalSeconds) :> JsonNode; "description", JsonValue.Create(TaskSpec.describe settings.Task) :> JsonNode ] }
    Results.save (Path.Combine(dir, "results.json")) r
    File.WriteAllText(Path.Combine(dir, "curves.csv"), Results.curvesCsv r)
    Plots.curves (Path.Combine(dir, "curves")) title r
    printfn "→ %s" dir
    r

let private trainingInfo (name: string) (cfg: MetaConfig) (seconds: float) : (string * JsonNode) list =
    [ "optimizer", JsonValue.Create(sprintf "optimizers/%s.json" name)
      "meta_iterations", JsonValue.Create(cfg.MetaIterations)
      "meta_training_seconds", JsonValue.Create(seconds) ]

let mnistEval (task: TaskSpec) =
    { EvalSettings.defaults task 100 with Runs = 10; TuneRuns = 3 }

let run (root: string) (name: string) (retrain: bool) =
    let results = Path.Combine(root, "results")
    match name with
    | "quadratics" ->
        let phi, secs = optimizer root "quadratic" quadraticConfig retrain
        evaluateInto (Path.Combine(results, "quadratics")) "Quadratics (10-d), 1000 fresh functions" (EvalSettings.defaults quadraticConfig.Task 100) phi
            (trainingInfo "quadratic" quadraticConfig secs)
        |> ignore
    | "mnist" ->
        let phi, secs = optimizer root "mnist" mnistConfig retrain
        evaluateInto (Path.Combine(results, "mnist")) "MNIST, MLP 784-20-10 sigmoid, 10 fresh runs" (mnistEval mnistTask) phi
            (trainingInfo "mnist" mnistConfig secs)
        |> ignore
    | "mnist-generalization" ->
        let phi, secs = optimizer root "mnist" mnistConfig retrain
        for sub, title, task in
            [ "hidden40", "MNIST, 40 hidden units (trained on 20)", Mlp { Hidden = [ 40 ]; Activation = Sigmoid; Batch = 128 }
              "layers2", "MNIST, 2 hidden layers (trained on 1)", Mlp { Hidden = [ 20; 20 ]; Activation = Sigmoid; Batch = 128 }
              "relu", "MNIST, ReLU activations (trained on sigmoid)", Mlp { Hidden = [ 20 ]; Activation = Relu; Batch = 128 } ] do
            evaluateInto (Path.Combine(results, "mnist-generalization", sub)) title (mnistEval task) phi (trainingInfo "mnist" mnistConfig secs) |> ignore
    | "mnist-sweep" ->
        let phi, secs = optimizer root "mnist" mnistConfig retrain
        let dir = Path.Combine(results, "mnist-sweep")
        Directory.CreateDirectory dir |> ignore
        let cells =
            [ for depth in [ 1; 2 ] do
                  for width in [ 10; 20; 40 ] do
                      let task = Mlp { Hidden = List.replicate depth width; Activation = Sigmoid; Batch = 128 }
                      let r = evaluate { mnistEval task with Steps = 100 } phi
                      let at100 (s: Summary) = s.LossAt |> List.find (fun (t, _) -> t = 100) |> snd
                      let lstm = r.Optimizers |> List.find (fun s -> s.Name = "lstm")
                      let best = r.Optimizers |> List.filter (fun s -> s.Name <> "lstm") |> List.minBy at100
                      yield depth, width, at100 lstm, best.Name, at100 best ]
        let csv =
            "depth,width,lstm_loss_100,best_baseline,best_baseline_loss_100\n"
            + (cells |> List.map (fun (d, w, l, bn, b) -> sprintf "%d,%d,%s,%s,%s" d w (l.ToString("R")) bn (b.ToString("R"))) |> String.concat "\n")
            + "\n"
        File.WriteAllText(Path.Combine(dir, "sweep.csv"), csv)
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
        File.WriteAllText(Path.Combine(dir, "results.json"), o.ToJsonString(JsonSerializerOptions(WriteIndented = true)))
        use plt = new ScottPlot.Plot()
        for depth, color in [ 1, ScottPlot.Color.FromHex "#d62728"; 2, ScottPlot.Color.FromHex "#1f77b4" ] do
            let row = cells |> List.filter (fun (d, _, _, _, _) -> d = depth)
            let xs = row |> List.map (fun (_, w, _, _, _) -> float w) |> Array.ofList
            let l = plt.Add.Scatter(xs, row |> List.map (fun (_, _, l, _, _) -> l) |> Array.ofList)
            l.Color <- color
            l.LegendText <- sprintf "LSTM, %d hidden layer(s)" depth
            let b = plt.Add.Scatter(xs, row |> List.map (fun (_, _, _, _, b) -> b) |> Array.ofList)
            b.Color <- color
            b.LinePattern <- ScottPlot.LinePattern.Dashed
            b.LegendText <- sprintf "best tuned baseline, %d hidden layer(s)" depth
        plt.Title("MNIST sweep: loss at step 100 (φ trained on 1×20)")
        plt.XLabel("hidden units per layer")
        plt.YLabel("loss at step 100")
        plt.ShowLegend() |> ignore
        plt.SavePng(Path.Combine(dir, "sweep.png"), 900, 600) |> ignore
        plt.SaveSvg(Path.Combine(dir, "sweep.svg"), 900, 600) |> ignore
        printfn "→ %s" dir
    | other -> fail "unknown experiment '%s' (known: %s, all)" other (String.concat ", " experiments)
