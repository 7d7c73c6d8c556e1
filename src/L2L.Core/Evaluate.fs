/// Running any optimizer on problems without meta-gradients, and the statistics of the results.
namespace L2L

open System
open System.Diagnostics
open TorchSharp

/// Per-step, per-function losses of one optimizer on a set of problems.
type Run =
    { /// Losses[t][i]: f_i(θ_t) on step t's minibatch for function i (all problems' functions
      /// concatenated), t = 0..steps.
      Losses: float[][]
      /// Full[t][i]: function i's loss on all its data at θ_t, at the steps asked for.
      Full: Map<int, float[]>
      /// Further metrics at those steps: name -> step -> per-function values.
      Metrics: Map<string, Map<int, float[]>>
      /// Seconds spent in the step loop (loss, gradient, update), excluding reporting.
      Seconds: float
      Steps: int }

/// What a results file reports for one optimizer.
type Summary =
    { Name: string
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
      CurveMean: float[]
      /// Half-width of its 95% confidence interval at every step.
      CurveCi95: float[]
      StepsPerSecond: float }

module Evaluate =
    let private finite (v: float) = if Double.IsFinite v then v else Double.PositiveInfinity

    /// Runs `opt` for `steps` steps on one problem. ∇ comes from the problem's hand-derived
    /// gradient when it has one, else from autograd; the update runs under no_grad. At the steps in `at` the loss on all the problem's data and its metrics are taken.
    /// A function whose loss goes non-finite is reported as +∞ from then on.
    let runOne (backend: Backend) (opt: Optimizer) (problem: Problem) (steps: int) (at: Set<int>)
        : float[][] * Map<int, float[]> * Map<string, Map<int, float[]>> * float =
        Spare.within <| fun () ->
        let n = problem.Functions
        let losses = Array.zeroCreate<float[]> (steps + 1)
        let mutable full = Map.empty
        let mutable metrics = Map.empty
        let mutable seconds = 0.0
        let mutable theta = Scope.run (fun (t: Tensor) -> [ t ]) (fun () -> problem.Theta0.detach().clone())
        let mutable state = opt.Init problem.Functions theta
        let mutable diverged = false
        let measure (t: int) (th: Tensor) =
            // reporting, not timed
            Scope.run (fun _ -> Seq.empty<Tensor>) (fun () ->
                use _ = torch.no_grad()
                if diverged then
                    full <- full.Add(t, Array.create n Double.PositiveInfinity)
                else
                    full <- full.Add(t, Tensors.toArray (problem.Full th) |> Array.map finite)
                    for name, values in problem.Metrics th do
                        let m = metrics.TryFind name |> Option.defaultValue Map.empty
                        metrics <- metrics.Add(name, m.Add(t, values)))
        for t in 0..steps do
            if diverged then
                losses[t] <- Array.create n Double.PositiveInfinity
                if at.Contains t then measure t theta
            else
                let sw = Stopwatch.StartNew()
                let th, s, bad =
                    Backend.inSteps backend <| fun () ->
                    Scope.run (fun (th: Tensor, s: OptState, _) -> th :: OptState.tensors s) (fun () ->
                        // the hand-derived gradient when the problem has one (no autograd graph), else autograd
                        let source, perFunction, gradient =
                            match problem.LossGrad with
                            | Some lossGrad ->
                                let l, g = (use _ = torch.no_grad() in lossGrad t theta)
                                theta, l, (fun () -> g)
                            | None ->
                                let leaf = theta.requires_grad_(true)
                                let l = problem.Losses t leaf
                                leaf, l, (fun () -> torch.autograd.grad([| l.sum() |], [| leaf |])[0])
                        let values = Tensors.toArray perFunction
                        losses[t] <- values |> Array.map finite
                        let bad = Array.exists (Double.IsFinite >> not) values
                        if t = steps || bad then
                            source.detach(), state, bad
                        else
                            let grad = gradient ()
                            use _ = torch.no_grad()
                            let struct (g, s') = opt.Update state grad
                            Update.apply (source.detach()) g, s', false)
                seconds <- seconds + sw.Elapsed.TotalSeconds
                // θ_t is the tensor `theta` still (th is θ_{t+1})
                if at.Contains t then
                    if bad then diverged <- true
                    measure t theta
                // the replaced state's buffers serve the next step's (m_φ's [H; n] states)
                Spare.giveReplaced (OptState.tensors state) (OptState.tensors s)
                Scope.disposeReplaced [ theta ] [ th ]
                theta <- th
                state <- s
                diverged <- diverged || bad
        Scope.disposeReplaced (theta :: OptState.tensors state) []
        losses, full, metrics, seconds

    /// Runs `opt` on every problem (common random numbers: pass the same problems to every optimizer),
    /// taking full losses and metrics at the steps in `at`.
    let runAt (backend: Backend) (opt: Optimizer) (problems: Problem list) (steps: int) (at: int list) : Run =
        let atSet = Set.ofList at
        let parts = problems |> List.map (fun p -> runOne backend opt p steps atSet)
        let fullAt =
            atSet |> Seq.filter (fun t -> t <= steps) |> Seq.map (fun t -> t, parts |> List.map (fun (_, f, _, _) -> f[t]) |> Array.concat) |> Map.ofSeq
        let names = parts |> List.collect (fun (_, _, m, _) -> m |> Map.toList |> List.map fst) |> List.distinct
        let metricsAt =
            names
            |> List.map (fun name ->
                name,
                atSet |> Seq.filter (fun t -> t <= steps)
                // the problems that have the metric (a mixture's quadratics have no test accuracy)
                |> Seq.map (fun t -> t, parts |> List.choose (fun (_, _, m, _) -> m.TryFind name |> Option.map (fun v -> v[t])) |> Array.concat)
                |> Map.ofSeq)
            |> Map.ofList
        { Losses = Array.init (steps + 1) (fun t -> parts |> List.map (fun (l, _, _, _) -> l[t]) |> Array.concat)
          Full = fullAt
          Metrics = metricsAt
          Seconds = parts |> List.sumBy (fun (_, _, _, s) -> s)
          Steps = steps * List.length problems }

    /// `runAt` reporting the last step only.
    let run (backend: Backend) (opt: Optimizer) (problems: Problem list) (steps: int) : Run = runAt backend opt problems steps [ steps ]

    let mean (xs: float[]) = Array.average xs

    let private quantiles = Collections.Concurrent.ConcurrentDictionary<int, float>()

    /// Student's t quantile t_{N−1, 0.975}: the 95% interval's multiplier for a mean of N values
    /// (2.262 for N = 10, 1.962 for N = 1000).
    let tQuantile (n: int) =
        quantiles.GetOrAdd(n, fun n -> MathNet.Numerics.Distributions.StudentT.InvCDF(0.0, 1.0, float (n - 1), 0.975))

    /// Half-width of the 95% confidence interval of the mean: t_{N−1, 0.975}·s/√N.
    let ci95 (xs: float[]) =
        if xs.Length < 2 || Array.exists (Double.IsFinite >> not) xs then Double.NaN
        else
            let m = Array.average xs
            let var = (xs |> Array.sumBy (fun x -> (x - m) * (x - m))) / float (xs.Length - 1)
            tQuantile xs.Length * sqrt (var / float xs.Length)

    /// Steps reported in results files: every multiple of 50 up to S, and S.
    let reportSteps (steps: int) =
        [ for t in 50..50..steps do
              yield t
          if steps % 50 <> 0 then
              yield steps ]

    let summarize (opt: Optimizer) (r: Run) : Summary =
        let at = r.Full |> Map.toList |> List.map fst
        { Name = opt.Name
          Hyper = opt.Hyper
          LossAt = at |> List.map (fun t -> t, mean r.Full[t])
          Ci95At = at |> List.map (fun t -> t, ci95 r.Full[t])
          RunsAt = at |> List.map (fun t -> t, Array.copy r.Full[t])
          MetricsAt = r.Metrics |> Map.toList |> List.map (fun (name, m) -> name, m |> Map.toList |> List.map (fun (t, v) -> t, mean v))
          CurveMean = r.Losses |> Array.map mean
          CurveCi95 = r.Losses |> Array.map ci95
          StepsPerSecond = if r.Seconds > 0.0 then float r.Steps / r.Seconds else Double.NaN }

/// Learning-rate tuning of the baselines on held-out problems.
module Tuning =
    /// Log-spaced grid from lo to hi with `perDecade` points per decade (10^(k/perDecade)).
    let grid (lo: float) (hi: float) (perDecade: int) =
        let k0 = int (Math.Round(log10 lo * float perDecade))
        let k1 = int (Math.Round(log10 hi * float perDecade))
        [ for k in k0..k1 -> 10.0 ** (float k / float perDecade) ]

    type Result =
        { Name: string
          Lr: float
          Score: float
          AtGridEdge: bool
          /// (lr, mean loss at the criterion step) for every grid point
          Scores: (float * float) list }

    let private score (backend: Backend) (scored: unit -> unit) (name: string) (problems: Problem list) (steps: int) (lr: float) =
        let r = Evaluate.run backend (Baselines.byName name lr) problems steps
        let s = Evaluate.mean r.Full[steps]
        scored ()
        lr, (if Double.IsFinite s then s else Double.PositiveInfinity)

    let private pick (name: string) (scores: (float * float) list) (isEdge: float -> bool) : Result =
        let scores = scores |> List.sortBy fst
        let bestIdx = scores |> List.mapi (fun i (_, s) -> i, s) |> List.minBy snd |> fst
        { Name = name
          Lr = fst scores[bestIdx]
          Score = snd scores[bestIdx]
          AtGridEdge = isEdge (fst scores[bestIdx])
          Scores = scores }

    let private near (a: float) (b: float) = abs (log10 a - log10 b) < 1e-9

    /// The fine points within one coarse step of `best` that are not coarse points.
    let private refinement (lo: float) (hi: float) (coarse: int) (fine: int) (best: float) =
        let width = 10.0 ** (1.0 / float coarse) * (1.0 + 1e-9)
        let coarsePoints = grid lo hi coarse
        grid lo hi fine
        |> List.filter (fun lr -> lr > best / width && lr < best * width && not (coarsePoints |> List.exists (near lr)))

    /// Coarse to fine over the grid of `grid lo hi fine`: every point of the coarse grid (`coarse`
    /// per decade, a subset of the fine one when fine is a multiple of coarse), then the fine points
    /// within one coarse step of the best coarse point. Same resolution as the whole fine grid at
    /// about half the runs, for optimizees where a run is expensive; assumes the loss has no second
    /// minimum hidden between coarse points. `scored` is called after each learning rate is scored.
    let tuneRefinedObserved (backend: Backend) (scored: unit -> unit) (name: string) (lo: float) (hi: float) (coarse: int) (fine: int) (problems: Problem list) (steps: int) : Result =
        let coarseScores = grid lo hi coarse |> List.map (score backend scored name problems steps)
        let best = coarseScores |> List.minBy snd |> fst
        let fineScores = refinement lo hi coarse fine best |> List.map (score backend scored name problems steps)
        let all = grid lo hi fine
        pick name (coarseScores @ fineScores) (fun lr -> near lr (List.head all) || near lr (List.last all))

    /// `tuneRefinedObserved` without a callback.
    let tuneRefined (backend: Backend) (name: string) (lo: float) (hi: float) (coarse: int) (fine: int) (problems: Problem list) (steps: int) : Result =
        tuneRefinedObserved backend ignore name lo hi coarse fine problems steps

    /// The runs `tuneRefined` takes for one baseline whose best coarse point is inside the grid.
    let refinedRuns (lo: float) (hi: float) (coarse: int) (fine: int) =
        let coarsePoints = grid lo hi coarse
        coarsePoints.Length + (refinement lo hi coarse fine coarsePoints[coarsePoints.Length / 2]).Length

    /// Picks the lr of baseline `name` that minimises the mean loss at step `steps` on `problems`
    /// (held-out problems: never the evaluation ones), calling `scored` after each learning rate.
    let tuneObserved (backend: Backend) (scored: unit -> unit) (name: string) (lrs: float list) (problems: Problem list) (steps: int) : Result =
        let lo, hi = List.min lrs, List.max lrs
        pick name (lrs |> List.map (score backend scored name problems steps)) (fun lr -> lr = lo || lr = hi)

    /// `tuneObserved` without a callback.
    let tune (backend: Backend) (name: string) (lrs: float list) (problems: Problem list) (steps: int) : Result =
        tuneObserved backend ignore name lrs problems steps
