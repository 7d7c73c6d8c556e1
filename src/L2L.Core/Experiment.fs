/// Evaluation of a trained optimizer against tuned baselines, as the command line and the worker run it.
namespace L2L

open System
open System.Text.Json.Nodes

/// How an evaluation is run.
type EvalSettings =
    { Task: TaskSpec
      /// S: optimizee steps.
      Steps: int
      /// N: fresh problems (quadratic: functions).
      Runs: int
      /// Portable-stream seed of the evaluation problems.
      Seed: uint64
      Tune: bool
      /// Portable-stream seed of the held-out tuning problems (never the evaluation seed).
      TuneSeed: uint64
      TuneRuns: int
      /// Tuning criterion: mean loss at this step.
      TuneSteps: int
      /// Tune coarse to fine (2 then 6 learning rates per decade, Tuning.tuneRefined) rather than
      /// over the whole grid of 6 per decade: for optimizees where a run is expensive.
      TuneRefine: bool
      Device: DeviceChoice }

module EvalSettings =
    let defaults (task: TaskSpec) (horizon: int) =
        { Task = task
          Steps = 200
          Runs = 1000
          Seed = 1000UL
          Tune = true
          TuneSeed = 2000UL
          TuneRuns = 1000
          TuneSteps = horizon
          // a conv net's run costs ~10× an MLP's
          TuneRefine = (match task with Conv _ -> true | _ -> false)
          Device = Cpu }

    let validate (s: EvalSettings) : Result<EvalSettings, string list> =
        [ if s.Steps < 1 then sprintf "steps must be ≥ 1 (got %d)" s.Steps
          if s.Runs < 1 then sprintf "runs must be ≥ 1 (got %d)" s.Runs
          if s.Tune && s.TuneRuns < 1 then sprintf "tune-runs must be ≥ 1 (got %d)" s.TuneRuns
          if s.Tune && s.TuneSteps < 1 then sprintf "tune-steps must be ≥ 1 (got %d)" s.TuneSteps
          if s.Tune && s.TuneSeed = s.Seed then "tune-seed must differ from seed: baselines are never tuned on the evaluation problems"
          match TaskSpec.validate s.Task with
          | Error e -> yield! e
          | Ok _ -> () ]
        |> function
            | [] -> Ok s
            | errs -> Error errs

module Experiment =
    let private fmt (v: float) = if Double.IsFinite v then sprintf "%.4g" v else "diverged"

    /// Runs m_φ (and, when asked, the tuned baselines) on fresh portable problems with common random
    /// numbers. `log` receives progress lines.
    /// phis: one φ per coordinate group of the task (TaskSpec.groups).
    let evaluate (s: EvalSettings) (phis: Phi list) (log: string -> unit) : EvaluationResults =
        let device = DeviceChoice.resolve s.Device
        let dtype = (List.head phis).WOut.dtype
        let at = Evaluate.reportSteps s.Steps
        let problems = TaskSpec.heldOut s.Task EvalSplit s.Seed s.Runs s.Steps device dtype
        try
            let tuned =
                if not s.Tune then []
                else
                    let tuneProblems = TaskSpec.heldOut s.Task TrainSplit s.TuneSeed s.TuneRuns s.TuneSteps device dtype
                    try
                        let lrs = Tuning.grid 1e-5 10.0 6
                        log (sprintf "tuning %d baselines on %d held-out problems (seed %d), %s, criterion mean f(θ_%d)"
                                 Baselines.names.Length s.TuneRuns s.TuneSeed
                                 (if s.TuneRefine then "coarse to fine over 1e-5..10 (2, then 6 learning rates per decade)"
                                  else sprintf "%d learning rates each" lrs.Length) s.TuneSteps)
                        [ for name in Baselines.names ->
                              let r =
                                  if s.TuneRefine then Tuning.tuneRefined name 1e-5 10.0 2 6 tuneProblems s.TuneSteps
                                  else Tuning.tune name lrs tuneProblems s.TuneSteps
                              log (sprintf "  %-9s lr %-9.3g f(θ_%d) %s%s" name r.Lr s.TuneSteps (fmt r.Score)
                                       (if r.AtGridEdge then "  (at the grid's edge)" else ""))
                              r ]
                    finally
                        List.iter Problem.dispose tuneProblems
            let optimizers = TaskSpec.learned s.Task phis :: [ for r in tuned -> Baselines.byName r.Name r.Lr ]
            let summaries =
                [ for opt in optimizers ->
                      let run = Evaluate.runAt opt problems s.Steps at
                      Evaluate.summarize opt run ]
            let tuning = JsonObject()
            for r in tuned do
                let o = JsonObject()
                o["lr"] <- JsonValue.Create(r.Lr)
                o["score"] <- (if Double.IsFinite r.Score then JsonValue.Create(r.Score) :> JsonNode else null)
                o["at_grid_edge"] <- JsonValue.Create(r.AtGridEdge)
                tuning[r.Name] <- o
            { Task = TaskSpec.name s.Task
              Dim = TaskSpec.coordinates s.Task
              Steps = s.Steps
              Runs = s.Runs
              Seed = s.Seed
              Optimizers = summaries
              Extra =
                [ if s.Tune then
                      "tuning", (tuning :> JsonNode)
                      "tune_seed", (JsonValue.Create(s.TuneSeed) :> JsonNode)
                      "tune_runs", (JsonValue.Create(s.TuneRuns) :> JsonNode)
                      "tune_steps", (JsonValue.Create(s.TuneSteps) :> JsonNode) ] }
        finally
            List.iter Problem.dispose problems

    /// The results as a text table (mean ± 95% CI at the reported steps) with the LSTM's ratio to the
    /// best baseline.
    let table (r: EvaluationResults) : string list =
        [ yield sprintf "%s, %d fresh problems (seed %d), mean loss ± 95%% CI:" r.Task r.Runs r.Seed
          match r.Optimizers with
          | [] -> ()
          | first :: _ ->
              yield sprintf "  %-9s %-9s %s %10s" "optimizer" "lr" (first.LossAt |> List.filter (fun (t, _) -> t > 0) |> List.map (fun (t, _) -> sprintf "%22s" (sprintf "step %d" t)) |> String.concat "") "steps/s"
          for sm in r.Optimizers do
              let lr = sm.Hyper |> List.tryFind (fun (k, _) -> k = "lr") |> Option.map (snd >> sprintf "%.3g") |> Option.defaultValue "-"
              let cells =
                  List.zip sm.LossAt sm.Ci95At
                  |> List.filter (fun ((t, _), _) -> t > 0)
                  |> List.map (fun ((_, m), (_, c)) -> sprintf "%22s" (sprintf "%s ± %s" (fmt m) (fmt c)))
                  |> String.concat ""
              yield sprintf "  %-9s %-9s %s %10.0f" sm.Name lr cells sm.StepsPerSecond
          for sm in r.Optimizers do
              for name, values in sm.MetricsAt do
                  yield sprintf "  %-9s %-9s %s" sm.Name name (values |> List.filter (fun (t, _) -> t > 0) |> List.map (fun (t, v) -> sprintf "%22s" (sprintf "%.4f @%d" v t)) |> String.concat "")
          match r.Optimizers with
          | lstm :: baselines when lstm.Name = "lstm" && not baselines.IsEmpty ->
              for t, v in lstm.LossAt |> List.filter (fun (t, _) -> t > 0) do
                  let bestName, bestValue =
                      baselines |> List.map (fun b -> b.Name, b.LossAt |> List.find (fun (u, _) -> u = t) |> snd) |> List.minBy snd
                  yield sprintf "  step %d: lstm / best baseline (%s) = %.3f (%s)" t bestName (v / bestValue) (if v < bestValue then "LSTM better" else "LSTM not better")
          | _ -> () ]
