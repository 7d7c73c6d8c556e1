namespace L2L

    /// Per-step, per-function losses of one optimizer on a set of problems.
    type Run =
        {

          /// Losses[t][i]: f_i(θ_t) on step t's minibatch for function i (all problems' functions
          /// concatenated), t = 0..steps.
          Losses: float array array

          /// Full[t][i]: function i's loss on all its data at θ_t, at the steps asked for.
          Full: Map<int,float array>

          /// Further metrics at those steps: name -> step -> per-function values.
          Metrics: Map<string,Map<int,float array>>

          /// Seconds spent in the step loop (loss, gradient, update), excluding reporting.
          Seconds: float
          Steps: int
        }

    /// What a results file reports for one optimizer.
    type Summary =
        {
          Name: string
          Hyper: (string * float) list

          /// Mean loss (on all of each function's data) at selected steps.
          LossAt: (int * float) list

          /// Means of further metrics at those steps (e.g. test_acc).
          MetricsAt: (string * (int * float) list) list

          /// Half-width of the 95% confidence interval of that mean (t_{N−1, 0.975}·s/√N).
          Ci95At: (int * float) list
          /// Each run's (function's) loss at those steps, so the intervals can be recomputed.
          RunsAt: (int * float[]) list

          /// Mean loss at every step 0..S (on each step's minibatch).
          CurveMean: float array

          /// Half-width of its 95% confidence interval at every step.
          CurveCi95: float array
          StepsPerSecond: float
        }

    module Evaluate =

        /// Runs `opt` for `steps` steps on one problem. ∇ comes from the problem's hand-derived
        /// gradient when it has one, else from autograd; the update runs under no_grad. At the steps in `at` the loss on all the problem's data and its metrics are taken.
        /// A function whose loss goes non-finite is reported as +∞ from then on.
        val runOne:
          backend: Backend ->
            opt: Optimizer ->
            problem: Problem ->
            steps: int ->
            at: Set<int> ->
            float array array * Map<int,float array> *
            Map<string,Map<int,float array>> * float

        /// Runs `opt` on every problem (common random numbers: pass the same problems to every optimizer),
        /// taking full losses and metrics at the steps in `at`.
        val runAt:
          backend: Backend ->
            opt: Optimizer ->
            problems: Problem list -> steps: int -> at: int list -> Run

        /// `runAt` reporting the last step only.
        val run:
          backend: Backend ->
            opt: Optimizer -> problems: Problem list -> steps: int -> Run

        val mean: xs: float array -> float

        /// Student's t quantile t_{N−1, 0.975}: the 95% interval's multiplier for a mean of N values
        /// (2.262 for N = 10, 1.962 for N = 1000).
        val tQuantile: n: int -> float

        /// Half-width of the 95% confidence interval of the mean: t_{N−1, 0.975}·s/√N.
        val ci95: xs: float array -> float

        /// Steps reported in results files: every multiple of 50 up to S, and S.
        val reportSteps: steps: int -> int list

        val summarize: opt: Optimizer -> r: Run -> Summary

    /// Learning-rate tuning of the baselines on held-out problems.
    module Tuning =

        /// Log-spaced grid from lo to hi with `perDecade` points per decade (10^(k/perDecade)).
        val grid: lo: float -> hi: float -> perDecade: int -> float list

        type Result =
            {
              Name: string
              Lr: float
              Score: float
              AtGridEdge: bool

              /// (lr, mean loss at the criterion step) for every grid point
              Scores: (float * float) list
            }

        /// Coarse to fine over the grid of `grid lo hi fine`: every point of the coarse grid (`coarse`
        /// per decade, a subset of the fine one when fine is a multiple of coarse), then the fine points
        /// within one coarse step of the best coarse point. Same resolution as the whole fine grid at
        /// about half the runs, for optimizees where a run is expensive; assumes the loss has no second
        /// minimum hidden between coarse points. `scored` is called after each learning rate is scored.
        val tuneRefinedObserved:
          backend: Backend ->
            scored: (unit -> unit) ->
            name: string ->
            lo: float ->
            hi: float ->
            coarse: int ->
            fine: int -> problems: Problem list -> steps: int -> Result

        /// `tuneRefinedObserved` without a callback.
        val tuneRefined:
          backend: Backend ->
            name: string ->
            lo: float ->
            hi: float ->
            coarse: int ->
            fine: int -> problems: Problem list -> steps: int -> Result

        /// The runs `tuneRefined` takes for one baseline whose best coarse point is inside the grid.
        val refinedRuns: lo: float -> hi: float -> coarse: int -> fine: int -> int

        /// Picks the lr of baseline `name` that minimises the mean loss at step `steps` on `problems`
        /// (held-out problems: never the evaluation ones), calling `scored` after each learning rate.
        val tuneObserved:
          backend: Backend ->
            scored: (unit -> unit) ->
            name: string ->
            lrs: float list -> problems: Problem list -> steps: int -> Result

        /// `tuneObserved` without a callback.
        val tune:
          backend: Backend ->
            name: string ->
            lrs: float list -> problems: Problem list -> steps: int -> Result
