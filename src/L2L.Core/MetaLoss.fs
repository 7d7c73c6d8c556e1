/// L(φ) = Σ_t w_t f(θ_t) over one truncation of the inner loop, as a differentiable function of φ
/// (paper §2, eq. 3), and the plain inner loop it is built from.
namespace L2L

open TorchSharp

/// The weights w_t of the meta-loss.
type StepWeights =
    /// w_t = 1 for every t (the paper's choice).
    | Uniform
    /// w_t = 1 at the last step of each truncation only.
    | LastOnly

/// Settings of the unrolled inner loop.
type UnrollConfig =
    { /// Optimizee steps per truncation (the BPTT length).
      Unroll: int
      Weights: StepWeights
      /// Keep ∂∇_t/∂φ (create_graph). The paper drops it (false).
      SecondOrder: bool
      /// Sum log f(θ_t) instead of f(θ_t): scale-free, so the late steps of a trajectory (small f)
      /// weigh as much as the early ones. The paper sums f (false).
      LogLoss: bool }

/// What crosses a truncation: θ, ∇ at θ and the optimizer state, all cut from φ's graph.
type Trajectory =
    { Problem: Problem
      /// The meta-training problem's counter (see TaskSpec.trainProblem).
      Index: int64
      /// t: the optimizee step θ is at.
      Step: int
      /// θ_t: [n], a leaf that requires grad
      Theta: Tensor
      /// ∇_t = ∇f(θ_t): [n], no graph
      Grad: Tensor
      Opt: OptState
      /// f(θ_t) per function (mean over the problem's functions).
      Loss: float }

module Trajectory =
    /// The tensors a trajectory holds (the problem's included).
    let tensors (tr: Trajectory) =
        tr.Problem.Owned @ [ tr.Theta; tr.Grad ] @ OptState.tensors tr.Opt

module Gradient =
    /// f at step t and ∇_θ f. With `secondOrder = false` the gradient is detached: the optimizer's
    /// input carries no graph, i.e. ∂∇_t/∂φ = 0 (paper §2.1). `retain` keeps f's graph for a later
    /// backward through it (the meta-loss).
    let at (problem: Problem) (t: int) (theta: Tensor) (retain: bool) (secondOrder: bool) : Tensor * Tensor =
        let loss = Problem.loss problem t theta
        let g = torch.autograd.grad([| loss |], [| theta |], retain_graph = (retain || secondOrder), create_graph = secondOrder)[0]
        loss, (if secondOrder then g else g.detach())

module MetaLoss =
    let weight (w: StepWeights) (j: int) (unroll: int) =
        match w with
        | Uniform -> 1.0
        | LastOnly -> if j = unroll then 1.0 else 0.0

    /// The start of a trajectory: θ_0, ∇_0 and a fresh optimizer state.
    let start (opt: Optimizer) (problem: Problem) (index: int64) : Trajectory =
        let theta = problem.Theta0.detach().clone().requires_grad_(true)
        let loss, grad = Gradient.at problem 0 theta false false
        { Problem = problem
          Index = index
          Step = 0
          Theta = theta
          Grad = grad
          Opt = opt.Init problem.Functions theta
          Loss = loss.ToDouble() / float problem.Functions }

    /// One truncation: `cfg.Unroll` steps of θ_{t+1} = θ_t + g_t from the carried trajectory.
    /// Returns L = Σ_j w_j · mean_b f_b(θ_{s+j}) (or its log, see LogLoss; a scalar in φ's graph) and the trajectory carried on,
    /// cut from the graph.
    let unroll (cfg: UnrollConfig) (opt: Optimizer) (tr: Trajectory) : Tensor * Trajectory =
        let b = float tr.Problem.Functions
        let rec go j (theta: Tensor) (grad: Tensor) (state: OptState) (acc: Tensor) (last: Tensor) =
            if j > cfg.Unroll then
                acc, theta, grad, state, last
            else
                let struct (g, state') = opt.Update state grad
                let theta' = Update.apply theta g
                let t = tr.Step + j
                let loss, grad' = Gradient.at tr.Problem t theta' true cfg.SecondOrder
                let w = weight cfg.Weights j cfg.Unroll
                let acc' =
                    if w = 0.0 then acc
                    elif cfg.LogLoss then acc.Add(loss.Div(b).log().Mul(w))
                    else acc.Add(loss.Mul(w / b))
                go (j + 1) theta' grad' state' acc' loss
        let zero = torch.zeros([||], dtype = tr.Theta.dtype, device = tr.Theta.device)
        let metaLoss, theta, grad, state, last = go 1 tr.Theta tr.Grad tr.Opt zero zero
        let carried =
            { tr with
                Step = tr.Step + cfg.Unroll
                Theta = theta.detach().requires_grad_(true)
                Grad = grad.detach()
                Opt = OptState.detach state
                Loss = last.ToDouble() / b }
        metaLoss, carried

