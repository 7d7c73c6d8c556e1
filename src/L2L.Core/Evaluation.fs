/// Evaluation of a trained optimizer against tuned baselines, as the command line, the worker and
/// the paper's experiments run it: fresh portable problems, common random numbers, baselines tuned
/// on held-out problems.
namespace L2L

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
      Device: DeviceChoice
      Backend: Backend }

module EvalSettings =
    let validate (s: EvalSettings) : Result<EvalSettings, string list> =
        [ if s.Steps < 1 then sprintf "steps must be ≥ 1 (got %d)" s.Steps
          if s.Runs < 1 then sprintf "runs must be ≥ 1 (got %d)" s.Runs
          if s.Tune && s.TuneRuns < 1 then sprintf "tune-runs must be ≥ 1 (got %d)" s.TuneRuns
          if s.Tune && s.TuneSteps < 1 then sprintf "tune-steps must be ≥ 1 (got %d)" s.TuneSteps
          if s.Tune && s.TuneSeed = s.Seed then "tune-seed must differ from seed: baselines are never tuned on the evaluation problems"
          match TaskSpec.validate s.Task with
          | Error e -> yield! e
          | Ok _ -> ()
          match Backend.validate s.Backend with
          | Error e -> yield! e
          | Ok _ -> () ]
        |> function
            | [] -> Ok s
            | errs -> Error errs

/// What an evaluation found: one summary per optimizer (m_φ first), and the baselines' tuning.
type EvaluationResults =
    { Task: string
      Dim: int
      Steps: int
      Runs: int
      Seed: uint64
      Optimizers: Summary list
      /// The tuning of each baseline, in `Baselines.names` order (empty when not tuned).
      Tuning: Tuning.Result list
      /// The tuning's settings (None when not tuned): seed, runs, criterion step.
      TunedOn: (uint64 * int * int) option }

module Evaluation =
    let private fmt (v: float) = if System.Double.IsFinite v then sprintf "%.4g" v else "diverged"

    /// Runs m_φ (and, when asked, the tuned baselines) on fresh portable problems with common random
    /// numbers. `log` receives report lines; `progress phase done total` is called as the work goes
    /// ("tuning": learning rates scored over all baselines, "evaluating": optimizers run). phis: one
    /// φ per coordinate group of the task (TaskSpec.groups); data: the task's data sets.
    let runObserved (s: EvalSettings) (data: TaskData) (phis: Phi list) (log: string -> unit) (progress: string -> float -> float -> unit) : EvaluationResults =
        let device = DeviceChoice.resolve s.Device
        let dtype = (List.head phis).WOut.dtype
        let at = Evaluate.reportSteps s.Steps
        let problems = TaskSpec.heldOut data s.Task EvalSplit s.Seed s.Runs s.Steps device dtype
        try
            let tuned =
                if not s.Tune then []
                else
                    let tuneProblems = TaskSpec.heldOut data s.Task TrainSplit s.TuneSeed s.TuneRuns s.TuneSteps device dtype
                    try
                        let lrs = Tuning.grid 1e-5 10.0 6
                        let perBaseline = float (if s.TuneRefine then Tuning.refinedRuns 1e-5 10.0 2 6 else lrs.Length)
                        let total = perBaseline * float Baselines.names.Length
                        let mutable scored = 0.0
                        let tick () =
                            scored <- scored + 1.0
                            progress "tuning" scored total
                        progress "tuning" 0.0 total
                        log (sprintf "tuning %d baselines on %d held-out problems (seed %d), %s, criterion mean f(θ_%d)"
                                 Baselines.names.Length s.TuneRuns s.TuneSeed
                                 (if s.TuneRefine then "coarse to fine over 1e-5..10 (2, then 6 learning rates per decade)"
                                  else sprintf "%d learning rates each" lrs.Length) s.TuneSteps)
                        [ for k, name in List.indexed Baselines.names ->
                              let r =
                                  if s.TuneRefine then Tuning.tuneRefinedObserved s.Backend tick name 1e-5 10.0 2 6 tuneProblems s.TuneSteps
                                  else Tuning.tuneObserved s.Backend tick name lrs tuneProblems s.TuneSteps
                              // a refined search may take a run more or less than expected
                              scored <- perBaseline * float (k + 1)
                              progress "tuning" scored total
                              log (sprintf "  %-9s lr %-9.3g f(θ_%d) %s%s" name r.Lr s.TuneSteps (fmt r.Score)
                                       (if r.AtGridEdge then "  (at the grid's edge)" else ""))
                              r ]
                    finally
                        List.iter Problem.dispose tuneProblems
            let optimizers = TaskSpec.learned s.Backend s.Task phis :: [ for r in tuned -> Baselines.byName r.Name r.Lr ]
            let count = float optimizers.Length
            progress "evaluating" 0.0 count
            let summaries =
                [ for k, opt in List.indexed optimizers ->
                      let run = Evaluate.runAt s.Backend opt problems s.Steps at
                      progress "evaluating" (float (k + 1)) count
                      Evaluate.summarize opt run ]
            { Task = TaskSpec.name s.Task
              Dim = TaskSpec.coordinates s.Task
              Steps = s.Steps
              Runs = s.Runs
              Seed = s.Seed
              Optimizers = summaries
              Tuning = tuned
              TunedOn = if s.Tune then Some(s.TuneSeed, s.TuneRuns, s.TuneSteps) else None }
        finally
            List.iter Problem.dispose problems

    /// `runObserved` without progress.
    let run (s: EvalSettings) (data: TaskData) (phis: Phi list) (log: string -> unit) : EvaluationResults =
        runObserved s data phis log (fun _ _ _ -> ())
