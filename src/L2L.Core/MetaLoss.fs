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
        tr.Problem.Owned @ [ tr.Theta; tr.Grad ] @ tr.Opt.Slots

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
          Opt = opt.Init theta
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
                    elif cfg.LogLoss then acc.add(loss.div(sc b).log().mul(sc w))
                    else acc.add(loss.mul(sc (w / b)))
                go (j + 1) theta' grad' state' acc' loss
        let zero = torch.zeros([||], dtype = tr.Theta.dtype, device = tr.Theta.device)
        let metaLoss, theta, grad, state, last = go 1 tr.Theta tr.Grad tr.Opt zero zero
        let carried =
            { tr with
                Step = tr.Step + cfg.Unroll
                Theta = theta.detach().requires_grad_(true)
                Grad = grad.detach()
                Opt = { state with Slots = state.Slots |> List.map (fun s -> s.detach()) }
                Loss = last.ToDouble() / b }
        metaLoss, carried

/// The meta-gradient of one truncation in closed form when second derivatives are dropped (the
/// paper's setting): ∇_t carries no graph, so L = Σ_j w_j·f(θ_{s+j}) reaches φ only through the
/// steps g, with θ_{s+j} = θ_s + Σ_{i<j} g_i. Hence dL/dθ_{s+j} = w_j·∇_{s+j} (w_j·∇/f with Σ log f;
/// the mean over functions divides by B), the adjoint of g_i is the reverse cumulative sum
/// Σ_{j>i} dL/dθ_{s+j}, and what is left is backpropagation through m_φ alone (`LstmKernel.stepBackward`),
/// step by step from the last. No autograd graph is built: the forward pass keeps only each step's
/// features and states. The same function as `MetaLoss.unroll` followed by autograd (a test pins
/// them together to float32 rounding).
module FirstOrder =
    /// Whether `metaGradient` computes this truncation: first order, one φ on the fused kernel, and
    /// a problem with a hand-derived ∇.
    let applies (cfg: UnrollConfig) (phis: Phi list) (tr: Trajectory) =
        not cfg.SecondOrder
        && List.length phis = 1
        && tr.Problem.LossGrad.IsSome
        && LstmKernel.supports (tr.Theta :: tr.Grad :: Phi.tensors phis.Head @ tr.Opt.Slots)

    /// L(φ) of one truncation, dL/dφ (in `Phi.tensors` order) and the trajectory carried on.
    /// Memory: each step's features and states are released as soon as the backward pass is past
    /// them; what is returned lives in the caller's dispose scope.
    let metaGradient (cfg: UnrollConfig) (phi: Phi) (tr: Trajectory) : Tensor * Tensor list * Trajectory =
        use _ = torch.no_grad()
        let lossGrad = tr.Problem.LossGrad.Value
        let b = float tr.Problem.Functions
        let layers = PhiKernel.layers phi
        let p = PhiKernel.logSignP phi
        let k = phi.Config.Layers
        let u = cfg.Unroll
        // forward: the inner loop; step j keeps its features x_j, input state and output h'
        let xs = Array.zeroCreate<Tensor> u
        let states = Array.zeroCreate<LstmState> (u + 1)
        let dTheta = Array.zeroCreate<Tensor> u
        states[0] <- LstmState.ofTensors k tr.Opt.Slots
        let mutable theta = tr.Theta.detach()
        let mutable grad = tr.Grad
        let mutable metaLoss = 0.0
        let mutable last = 0.0
        for j in 1 .. u do
            let w = MetaLoss.weight cfg.Weights j u
            let x, state, theta', grad', dt, f =
                Scope.run (fun (x: Tensor, s: LstmState, th: Tensor, gr: Tensor, dt: Tensor, _) -> [ x; th; gr; dt ] @ LstmState.tensors s |> List.filter (isNull >> not)) (fun () ->
                    let g, hs, cs, x = LstmKernel.stepSaving layers phi.WOut phi.BOut phi.Config.OutScale p states[j - 1].H states[j - 1].C grad
                    let theta' = Update.apply theta g
                    let losses, grad' = lossGrad (tr.Step + j) theta'
                    let f = losses.sum().ToDouble()
                    // dL/dθ_{s+j}
                    let dt = if w = 0.0 then null elif cfg.LogLoss then grad'.mul(sc (w / f)) else grad'.mul(sc (w / b))
                    x, { H = hs; C = cs }, theta', grad', dt, f)
            if j > 1 then
                theta.Dispose()
                grad.Dispose()
            if w <> 0.0 then metaLoss <- metaLoss + (if cfg.LogLoss then w * log (f / b) else w * f / b)
            xs[j - 1] <- x
            states[j] <- state
            dTheta[j - 1] <- dt
            theta <- theta'
            grad <- grad'
            last <- f
        // backward, from the last step (the carried state is cut: dL/dh', dL/dc' start at zero);
        // the adjoint of g_j accumulates dL/dθ from the last step down
        let mutable dg = torch.zeros_like(theta)
        let mutable dh = [ for h in states[u].H -> torch.zeros_like(h) ]
        let mutable dc = [ for c in states[u].C -> torch.zeros_like(c) ]
        let mutable dPhi = Phi.tensors phi |> List.map (fun t -> torch.zeros_like(t))
        for j in u .. -1 .. 1 do
            let dg', dh', dc', dPhi' =
                Scope.run (fun (a: Tensor, b: Tensor list, c: Tensor list, d: Tensor list) -> a :: b @ c @ d) (fun () ->
                    let dg' = if isNull dTheta[j - 1] then dg.clone() else dg.add(dTheta[j - 1])
                    let dh', dc', dW =
                        LstmKernel.stepBackward layers phi.WOut phi.Config.OutScale xs[j - 1] states[j - 1].H states[j - 1].C states[j].H dg' dh dc
                    dg', dh', dc', List.map2 (fun (a: Tensor) (d: Tensor) -> a.add(d)) dPhi dW)
            for t in dg :: dh @ dc @ dPhi do
                t.Dispose()
            xs[j - 1].Dispose()
            if not (isNull dTheta[j - 1]) then dTheta[j - 1].Dispose()
            // step j's output state is past (the last one is carried on)
            if j < u then
                for t in LstmState.tensors states[j] do
                    t.Dispose()
            dg <- dg'
            dh <- dh'
            dc <- dc'
            dPhi <- dPhi'
        for t in dg :: dh @ dc do
            t.Dispose()
        let loss = torch.tensor(metaLoss, dtype = theta.dtype, device = theta.device)
        let carried =
            { tr with
                Step = tr.Step + u
                Theta = theta.requires_grad_(true)
                Grad = grad
                Opt = { Step = tr.Opt.Step + u; Slots = LstmState.tensors states[u] }
                Loss = last / b }
        loss, dPhi, carried
