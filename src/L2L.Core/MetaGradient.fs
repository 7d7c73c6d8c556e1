/// The meta-gradient dL/dφ of one truncation: in closed form without autograd where second
/// derivatives are dropped and the problem has a hand-derived ∇ (`FirstOrder`), else through
/// autograd's graph of the unrolled truncation (`MetaLoss.unroll`).
namespace L2L

open TorchSharp

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
        && PhiKernel.wholeStep phis.Head
        && tr.Problem.LossGrad.IsSome
        && (match tr.Opt.Memory with Recurrent _ -> true | _ -> false)
        && LstmKernel.supports (tr.Theta :: tr.Grad :: Phi.tensors phis.Head @ OptState.tensors tr.Opt)

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
                { H = [ for l in 0 .. k - 1 -> views t l ]; C = [ for l in 0 .. k - 1 -> views t (k + l) ]; Memory = []; Stats = []; Functions = 1 }
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
    let metaGradient (threads: int) (cfg: UnrollConfig) (phi: Phi) (tr: Trajectory) : Tensor * Tensor list * Trajectory =
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
        states[0] <- OptState.recurrent tr.Opt
        let mutable theta = tr.Theta.detach()
        let mutable grad = tr.Grad
        let mutable metaLoss = 0.0
        let mutable last = 0.0
        let stateful = not states[0].Stats.IsEmpty
        for j in 1 .. u do
            let w = MetaLoss.weight cfg.Weights j u
            let out =
                if j < u then ws.States[j - 1]
                else
                    // the carried state: h, c fresh; the preprocessing's state comes from the step
                    let z = LstmState.zeros phi states[0].Functions n
                    for t in z.Stats do
                        t.Dispose()
                    { z with Stats = [] }
            let theta', grad', dt, f, stats =
                Scope.run (fun (th: Tensor, gr: Tensor, dt: Tensor, _, stats: Tensor list) -> stats @ ([ th; gr; dt ] |> List.filter (isNull >> not))) (fun () ->
                    // a stateful preprocessing (the moments) is computed here, its features written
                    // where the kernel reads them
                    let input, stats =
                        if stateful then
                            let x, stats = Preprocess.step phi.Config.Preprocessing states[j - 1].Stats grad
                            ws.Features[j - 1].copy_(x) |> ignore
                            ws.Features[j - 1], stats
                        else grad, []
                    let g = LstmKernel.stepInto threads layers phi.WOut phi.BOut phi.Config.OutScale p states[j - 1].H states[j - 1].C input ws.Features[j - 1] out.H out.C
                    let theta' = Update.apply theta g
                    let losses, grad' = lossGrad (tr.Step + j) theta'
                    let f = losses.sum().ToDouble()
                    // dL/dθ_{s+j}
                    let dt = if w = 0.0 then null elif cfg.LogLoss then grad'.Mul(w / f) else grad'.Mul(w / b)
                    theta', grad', dt, f, stats)
            if j > 1 then
                theta.Dispose()
                grad.Dispose()
                // the averages of steps before this one are not needed again (the trajectory's own stay)
                for t in states[j - 1].Stats do
                    t.Dispose()
            if w <> 0.0 then metaLoss <- metaLoss + (if cfg.LogLoss then w * log (f / b) else w * f / b)
            states[j] <- { out with Stats = stats }
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
                    let dg' = if isNull dTheta[j - 1] then dg.clone() else dg.Add(dTheta[j - 1])
                    let dW =
                        LstmKernel.stepBackwardInto threads layers phi.WOut phi.Config.OutScale ws.Features[j - 1] states[j - 1].H states[j - 1].C states[j].H
                            dg' dIn.H dIn.C dOut.H dOut.C ws.Scratch
                    dg', List.map2 (fun (a: Tensor) (d: Tensor) -> a.Add(d)) dPhi dW)
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
                Opt = { Step = tr.Opt.Step + u; Memory = Recurrent states[u] }
                Loss = last / b }
        loss, dPhi, carried

module MetaGradient =
    /// Through autograd: `MetaLoss.unroll`'s graph, differentiated. phis: one φ per coordinate
    /// group of `task`.
    let autograd (backend: Backend) (unroll: UnrollConfig) (task: TaskSpec) (phis: Phi list) (tr: Trajectory) : Tensor * Tensor list * Trajectory =
        let loss, carried = MetaLoss.unroll unroll (TaskSpec.learned backend task phis) tr
        let grads = torch.autograd.grad([| loss |], List.toArray (Phis.tensors phis), allow_unused = true)
        let grads = Seq.zip (Phis.tensors phis) grads |> Seq.map (fun (p, g) -> if isNull g then torch.zeros_like(p) else g) |> List.ofSeq
        loss, grads, carried

    /// Whether `compute` takes the closed form for this truncation.
    let usesClosedForm (backend: Backend) (unroll: UnrollConfig) (phis: Phi list) (tr: Trajectory) =
        backend.MetaGradient = ClosedForm && backend.Cell = Fused && FirstOrder.applies unroll phis tr

    /// L(φ) of one truncation, dL/dφ (in `Phis.tensors` order) and the trajectory carried on: in
    /// closed form where `usesClosedForm`, else through autograd.
    let compute (backend: Backend) (unroll: UnrollConfig) (task: TaskSpec) (phis: Phi list) (tr: Trajectory) : Tensor * Tensor list * Trajectory =
        if usesClosedForm backend unroll phis tr then
            FirstOrder.metaGradient (Backend.kernelThreads backend) unroll phis.Head tr
        else
            autograd backend unroll task phis tr

/// Imitation of a hand-designed optimizer's updates (Chen et al. 2020): on an imitation trajectory
/// the optimizee follows the teacher (e.g. Adam), m_φ runs beside it on the same gradients, and the
/// truncation's loss is Σ_j w_j · ½‖g_φ − g_teacher‖² / ‖g_teacher‖²: relative, so it weighs alike on
/// every problem and at every step size, and mixes with the meta-loss of the other trajectories.
module Imitation =
    /// The learner beside the teacher: the teacher's step is the one applied; both states advance.
    let optimizer (learner: Optimizer) (teacher: Optimizer) : Optimizer =
        { Name = "imitation"
          Hyper = teacher.Hyper
          Init = fun functions theta -> { Step = 0; Memory = Imitating(learner.Init functions theta, teacher.Init functions theta) }
          Update =
            fun s grad ->
                match s.Memory with
                | Imitating(l, t) ->
                    // both have taken the outer state's steps (checkpoints keep that count only)
                    let struct (_, l') = learner.Update { l with Step = s.Step } grad
                    let struct (g, t') = teacher.Update { t with Step = s.Step } grad
                    struct (g, { Step = s.Step + 1; Memory = Imitating(l', t') })
                | other -> invalidArg "s" (sprintf "not an imitation state: %s" (other.GetType().Name)) }

    /// Whether a trajectory is an imitation one (its state holds a learner and a teacher).
    let applies (tr: Trajectory) = match tr.Opt.Memory with Imitating _ -> true | _ -> false

    /// The imitation loss of one truncation, its gradient in `parameters` (φ's tensors, in order) and
    /// the trajectory carried on (the teacher's). Through autograd; ∇ carries no graph.
    let metaGradient (unroll: UnrollConfig) (learner: Optimizer) (teacher: Optimizer) (parameters: Tensor list) (tr: Trajectory) : Tensor * Tensor list * Trajectory =
        // differentiated here, whatever the caller's autograd mode
        use _ = torch.enable_grad()
        let l0, t0 =
            match tr.Opt.Memory with
            | Imitating(l, t) -> l, t
            | _ -> invalidArg "tr" "not an imitation trajectory"
        let b = float tr.Problem.Functions
        let gradAt (t: int) (theta: Tensor) =
            match tr.Problem.LossGrad with
            | Some lossGrad ->
                use _ = torch.no_grad()
                lossGrad t theta
            | None ->
                let leaf = theta.detach().requires_grad_(true)
                let losses = tr.Problem.Losses t leaf
                let g = torch.autograd.grad([| losses.sum() |], [| leaf |])[0]
                losses.detach(), g.detach()
        let mutable theta = tr.Theta.detach()
        let mutable grad = tr.Grad
        let mutable l = l0
        let mutable t = t0
        let mutable loss = torch.zeros([||], dtype = theta.dtype, device = theta.device)
        let mutable last = tr.Loss
        for j in 1 .. unroll.Unroll do
            let step = tr.Opt.Step + j - 1
            let struct (gLearner, l') = learner.Update { l with Step = step } grad
            let struct (gTeacher, t') = (use _ = torch.no_grad() in teacher.Update { t with Step = step } grad)
            let w = MetaLoss.weight unroll.Weights j unroll.Unroll
            if w <> 0.0 then
                let d = gLearner.sub(gTeacher)
                let scale = gTeacher.mul(gTeacher).sum().ClampMin(1e-30)
                loss <- loss.Add(d.mul(d).sum().div(scale).Mul(0.5 * w))
            theta <- (use _ = torch.no_grad() in Update.apply theta gTeacher)
            let losses, grad' = gradAt (tr.Step + j) theta
            last <- losses.sum().ToDouble() / b
            grad <- grad'
            l <- l'
            t <- t'
        let grads = torch.autograd.grad([| loss |], List.toArray parameters, allow_unused = true)
        let grads = Seq.zip parameters grads |> Seq.map (fun (p, g) -> if isNull g then torch.zeros_like(p) else g) |> List.ofSeq
        let carried =
            { tr with
                Step = tr.Step + unroll.Unroll
                Theta = theta.detach().requires_grad_(true)
                Grad = grad
                Opt = OptState.detach { Step = tr.Opt.Step + unroll.Unroll; Memory = Imitating(l, t) }
                Loss = last }
        loss.detach(), grads, carried
