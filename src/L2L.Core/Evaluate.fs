/// Running any optimizer on problems without meta-gradients, and the statistics of the results.
namespace L2L

open System
open System.Diagnostics
open TorchSharp

/// Per-step, per-function losses of one optimizer on a set of problems.
type Run =
    { /// Losses[t][i]: f_i(θ_t) for function i (all problems' functions concatenated), t = 0..steps.
      Losses: float[][]
      /// Seconds spent in the step loop (loss, gradient, update), excluding reporting.
      Seconds: float
      Steps: int }

/// What a results file reports for one optimizer.
type Summary =
    { Name: string
      Hyper: (string * float) list
      /// Mean loss at selected steps.
      LossAt: (int * float) list
      /// Half-width of the 95% confidence interval of that mean (1.96·s/√N).
      Ci95At: (int * float) list
      /// Mean loss at every step 0..S.
      CurveMean: float[]
      StepsPerSecond: float }

module Evaluate =
    /// Runs `opt` for `steps` steps on one problem. ∇ comes from autograd; the update runs under
    /// no_grad. A function whose loss goes non-finite is reported as +∞ from then on.
    let runOne (opt: Optimizer) (problem: Problem) (steps: int) : float[][] * float =
        let n = problem.Functions
        let losses = Array.zeroCreate<float[]> (steps + 1)
        let sw = Stopwatch.StartNew()
        let mutable theta = problem.Theta0.detach().clone()
        let mutable state = opt.Init theta
        let mutable diverged = false
        for t in 0..steps do
            if diverged then
                losses[t] <- Array.create n Double.PositiveInfinity
            else
                let next =
                    Scope.run (fun (th: Tensor, s: OptState, _) -> th :: s.Slots) (fun () ->
                        let leaf = theta.requires_grad_(true)
                        let perFunction = problem.Losses t leaf
                        let values = Tensors.toArray perFunction
                        losses[t] <- values |> Array.map (fun v -> if Double.IsFinite v then v else Double.PositiveInfinity)
                        if t = steps || Array.exists (Double.IsFinite >> not) values then
                            leaf.detach(), state, Array.exists (Double.IsFinite >> not) values
                        else
                            let grad = torch.autograd.grad([| perFunction.sum() |], [| leaf |])[0]
                            use _ = torch.no_grad()
                            let struct (g, s') = opt.Update state grad
                            Update.apply (leaf.detach()) g, s', false)
                let th, s, bad = next
                Scope.disposeReplaced (theta :: state.Slots) (th :: s.Slots)
                theta <- th
                state <- s
                diverged <- bad
        Scope.disposeReplaced (theta :: state.Slots) []
        losses, sw.Elapsed.TotalSeconds

    /// Runs `opt` on every problem (common random numbers: pass the same problems to every optimizer).
    let run (opt: Optimizer) (problems: Problem list) (steps: int) : Run =
        let parts = problems |> List.map (fun p -> runOne opt p steps)
        { Losses = Array.init (steps + 1) (fun t -> parts |> List.map (fun (l, _) -> l[t]) |> Array.concat)
          Seconds = parts |> List.sumBy snd
          Steps = steps * List.length problems }

    let mean (xs: float[]) = Array.average xs

    /// Half-width of the 95% normal-approximation confidence interval of the mean.
    let ci95 (xs: float[]) =
        if xs.Length < 2 || Array.exists (Double.IsFinite >> not) xs then Double.NaN
        else
            let m = Array.average xs
            let var = (xs |> Array.sumBy (fun x -> (x - m) * (x - m))) / float (xs.Length - 1)
            1.96 * sqrt (var / float xs.Length)

    /// Steps reported in results files: every multiple of 50 up to S, and S.
    let reportSteps (steps: int) =
        [ for t in 50..50..steps do
              yield t
          if steps % 50 <> 0 then
              yield steps ]

    let summarize (opt: Optimizer) (r: Run) (at: int list) : Summary =
        let stepsTotal = r.Losses.Length - 1
        { Name = opt.Name
          Hyper = opt.Hyper
          LossAt = at |> List.filter (fun t -> t <= stepsTotal) |> List.map (fun t -> t, mean r.Losses[t])
          Ci95At = at |> List.filter (fun t -> t <= stepsTotal) |> List.map (fun t -> t, ci95 r.Losses[t])
          CurveMean = r.Losses |> Array.map mean
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

    /// Picks the lr of baseline `name` that minimises the mean loss at step `steps` on `problems`
    /// (held-out problems: never the evaluation ones).
    let tune (name: string) (lrs: float list) (problems: Problem list) (steps: int) : Result =
        let scores =
            lrs
            |> List.map (fun lr ->
                let r = Evaluate.run (Baselines.byName name lr) problems steps
                let s = Evaluate.mean r.Losses[steps]
                lr, (if Double.IsFinite s then s else Double.PositiveInfinity))
        let bestIdx = scores |> List.mapi (fun i (_, s) -> i, s) |> List.minBy snd |> fst
        { Name = name
          Lr = fst scores[bestIdx]
          Score = snd scores[bestIdx]
          AtGridEdge = bestIdx = 0 || bestIdx = scores.Length - 1
          Scores = scores }
