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

    /// The buffers of one shape of truncation, kept from one truncation to the next (per thread):
    /// the states written by steps 1 … u − 1 (step u's state is fresh: it is carried on), every
    /// step's features, two sets of state gradients (this step's and the previous one's) and one
    /// layer's input gradient. On MNIST they are a hundred megabytes; allocated afresh for every
    /// truncation, step by step, they left glibc's heap fragmented and the resident set growing to
    /// several times what was in use.
    type private Workspace =
        { Key: int * int * int * int64 * int64
          Buffers: Tensor list
          /// H_l, C_l written by step j (index j − 1), j < u
          States: LstmState[]
          /// x_j [features; n] (index j − 1)
          Features: Tensor[]
          /// dL/dh_l, dL/dc_l: two sets
          Grads: LstmState[]
          Scratch: Tensor }

    let private workspace = new System.Threading.ThreadLocal<Workspace option>(fun () -> None)

    /// Frees this thread's buffers (the next closed-form meta-gradient allocates them again).
    let releaseWorkspace () =
        match workspace.Value with
        | Some w ->
            for t in w.Buffers @ List.ofArray w.Features @ (Array.toList w.States |> List.collect LstmState.tensors)
                     @ (Array.toList w.Grads |> List.collect LstmState.tensors) do
                t.Dispose()
            w.Scratch.Dispose()
            workspace.Value <- None
        | None -> ()

    let private workspaceFor (u: int) (k: int) (h: int) (n: int64) (features: int64) (like: Tensor) =
        let key = u, k, h, n, features
        match workspace.Value with
        | Some w when w.Key = key -> w
        | _ ->
            releaseWorkspace ()
            let make (shape: int64[]) =
                let t = torch.empty(shape, dtype = like.dtype, device = like.device)
                t.DetachFromDisposeScope() |> ignore
                t
            let views (t: Tensor) (i: int) =
                let v = t[int64 i]
                v.DetachFromDisposeScope() |> ignore
                v
            let stateOf (t: Tensor) =
                { H = [ for l in 0 .. k - 1 -> views t l ]; C = [ for l in 0 .. k - 1 -> views t (k + l) ] }
            let states = make [| int64 (u - 1); 2L * int64 k; int64 h; n |]
            let feats = make [| int64 u; features; n |]
            let grads = make [| 2L; 2L * int64 k; int64 h; n |]
            let stateViews = Array.init (u - 1) (views states)
            let gradViews = Array.init 2 (views grads)
            let w =
                { Key = key
                  Buffers = [ states; feats; grads ] @ List.ofArray stateViews @ List.ofArray gradViews
                  States = stateViews |> Array.map stateOf
                  Features = Array.init u (views feats)
                  Grads = gradViews |> Array.map stateOf
                  Scratch = make [| int64 h; n |] }
            workspace.Value <- Some w
            w

    /// L(φ) of one truncation, dL/dφ (in `Phi.tensors` order) and the trajectory carried on.
    /// Memory: the steps' features and states live in this thread's workspace, reused from one
    /// truncation to the next (`releaseWorkspace` frees it); what is returned lives in the caller's
    /// dispose scope.
    let metaGradient (cfg: UnrollConfig) (phi: Phi) (tr: Trajectory) : Tensor * Tensor list * Trajectory =
        use _ = torch.no_grad()
        let lossGrad = tr.Problem.LossGrad.Value
        let b = float tr.Problem.Functions
        let layers = PhiKernel.layers phi
        let p = PhiKernel.logSignP phi
        let k = phi.Config.Layers
        let u = cfg.Unroll
        let n = tr.Theta.shape[0]
        let ws = workspaceFor u k phi.Config.Hidden n (int64 (Preprocess.features phi.Config.Preprocessing)) tr.Theta
        // forward: the inner loop; step j writes its features and state into the workspace (the
        // last step's state into fresh tensors)
        let states = Array.zeroCreate<LstmState> (u + 1)
        let dTheta = Array.zeroCreate<Tensor> u
        states[0] <- LstmState.ofTensors k tr.Opt.Slots
        let mutable theta = tr.Theta.detach()
        let mutable grad = tr.Grad
        let mutable metaLoss = 0.0
        let mutable last = 0.0
        for j in 1 .. u do
            let w = MetaLoss.weight cfg.Weights j u
            let out =
                if j < u then ws.States[j - 1]
                else LstmState.zeros phi n
            let theta', grad', dt, f =
                Scope.run (fun (th: Tensor, gr: Tensor, dt: Tensor, _) -> [ th; gr; dt ] |> List.filter (isNull >> not)) (fun () ->
                    let g = LstmKernel.stepInto layers phi.WOut phi.BOut phi.Config.OutScale p states[j - 1].H states[j - 1].C grad ws.Features[j - 1] out.H out.C
                    let theta' = Update.apply theta g
                    let losses, grad' = lossGrad (tr.Step + j) theta'
                    let f = losses.sum().ToDouble()
                    // dL/dθ_{s+j}
                    let dt = if w = 0.0 then null elif cfg.LogLoss then grad'.mul(sc (w / f)) else grad'.mul(sc (w / b))
                    theta', grad', dt, f)
            if j > 1 then
                theta.Dispose()
                grad.Dispose()
            if w <> 0.0 then metaLoss <- metaLoss + (if cfg.LogLoss then w * log (f / b) else w * f / b)
            states[j] <- out
            dTheta[j - 1] <- dt
            theta <- theta'
            grad <- grad'
            last <- f
        // backward, from the last step (the carried state is cut: dL/dh', dL/dc' start at zero);
        // the adjoint of g_j accumulates dL/dθ from the last step down; the state gradients
        // alternate between the workspace's two sets
        let mutable dg = torch.zeros_like(theta)
        for t in LstmState.tensors ws.Grads[0] do
            t.zero_() |> ignore
        let mutable dPhi = Phi.tensors phi |> List.map (fun t -> torch.zeros_like(t))
        for j in u .. -1 .. 1 do
            let dIn = ws.Grads[(u - j) % 2]
            let dOut = ws.Grads[(u - j + 1) % 2]
            let dg', dPhi' =
                Scope.run (fun (a: Tensor, d: Tensor list) -> a :: d) (fun () ->
                    let dg' = if isNull dTheta[j - 1] then dg.clone() else dg.add(dTheta[j - 1])
                    let dW =
                        LstmKernel.stepBackwardInto layers phi.WOut phi.Config.OutScale ws.Features[j - 1] states[j - 1].H states[j - 1].C states[j].H
                            dg' dIn.H dIn.C dOut.H dOut.C ws.Scratch
                    dg', List.map2 (fun (a: Tensor) (d: Tensor) -> a.add(d)) dPhi dW)
            for t in dg :: dPhi do
                t.Dispose()
            if not (isNull dTheta[j - 1]) then dTheta[j - 1].Dispose()
            dg <- dg'
            dPhi <- dPhi'
        dg.Dispose()
        let loss = torch.tensor(metaLoss, dtype = theta.dtype, device = theta.device)
        let carried =
            { tr with
                Step = tr.Step + u
                Theta = theta.requires_grad_(true)
                Grad = grad
                Opt = { Step = tr.Opt.Step + u; Slots = LstmState.tensors states[u] }
                Loss = last / b }
        loss, dPhi, carried
