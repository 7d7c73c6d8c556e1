namespace L2L

    /// How an evaluation is run.
    type EvalSettings =
        {
          Task: TaskSpec

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
          Backend: Backend
        }

    module EvalSettings =

        val validate: s: EvalSettings -> Result<EvalSettings,string list>

    /// What an evaluation found: one summary per optimizer (m_φ first), and the baselines' tuning.
    type EvaluationResults =
        {
          Task: string
          Dim: int
          Steps: int
          Runs: int
          Seed: uint64
          Optimizers: Summary list

          /// The tuning of each baseline, in `Baselines.names` order (empty when not tuned).
          Tuning: Tuning.Result list

          /// The tuning's settings (None when not tuned): seed, runs, criterion step.
          TunedOn: (uint64 * int * int) option
        }

    module Evaluation =

        /// Runs m_φ (and, when asked, the tuned baselines) on fresh portable problems with common random
        /// numbers. `log` receives report lines; `progress phase done total` is called as the work goes
        /// ("tuning": learning rates scored over all baselines, "evaluating": optimizers run). phis: one
        /// φ per coordinate group of the task (TaskSpec.groups); data: the task's data sets.
        val runObserved:
          s: EvalSettings ->
            data: TaskData ->
            phis: Phi list ->
            log: (string -> unit) -> progress: (string -> float -> float -> unit) -> EvaluationResults

        /// `runObserved` without progress.
        val run:
          s: EvalSettings ->
            data: TaskData ->
            phis: Phi list -> log: (string -> unit) -> EvaluationResults
