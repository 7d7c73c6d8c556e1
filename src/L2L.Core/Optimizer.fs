/// One optimizer shape for the baselines and for m_φ, so any optimizer runs through the same loop
/// and the θ update exists in exactly one place (`Update.apply`).
namespace L2L

open TorchSharp

/// What an optimizer remembers between steps, per coordinate, by name.
type OptMemory =
    /// SGD: nothing.
    | Stateless
    /// Momentum and NAG: the velocity v.
    | Velocity of V: Tensor
    /// RMSprop: the running mean of ∇², r.
    | MeanSquare of R: Tensor
    /// Adam: the first and second moments m, v.
    | Moments of M: Tensor * V: Tensor
    /// m_φ: the LSTM's h and c per layer.
    | Recurrent of LstmState
    /// Several optimizers side by side, one per block of θ (Learned.grouped), in θ's order.
    | Groups of OptState list
    /// A learner run beside a teacher on the teacher's trajectory (imitation): both states.
    | Imitating of Learner: OptState * Teacher: OptState

/// An optimizer's state: its step count and its memory.
and OptState = { Step: int; Memory: OptMemory }

module OptState =
    /// The tensors of a state (for disposal and scopes), in the order of `named`.
    let rec tensors (s: OptState) : Tensor list =
        match s.Memory with
        | Stateless -> []
        | Velocity v -> [ v ]
        | MeanSquare r -> [ r ]
        | Moments(m, v) -> [ m; v ]
        | Recurrent l -> LstmState.tensors l
        | Groups gs -> gs |> List.collect tensors
        | Imitating(l, t) -> tensors l @ tensors t

    /// Each tensor with its name under `prefix` (`prefix.v`, `prefix.lstm.h.0`, `prefix.group.1.lstm.c.0`, ...).
    let rec named (prefix: string) (s: OptState) : (string * Tensor) list =
        match s.Memory with
        | Stateless -> []
        | Velocity v -> [ prefix + ".v", v ]
        | MeanSquare r -> [ prefix + ".r", r ]
        | Moments(m, v) -> [ prefix + ".m", m; prefix + ".v", v ]
        | Recurrent l ->
            [ for k, h in List.indexed l.H -> sprintf "%s.lstm.h.%d" prefix k, h ]
            @ [ for k, c in List.indexed l.C -> sprintf "%s.lstm.c.%d" prefix k, c ]
            @ [ for k, m in List.indexed l.Memory -> sprintf "%s.lstm.mem.%d" prefix k, m ]
            @ [ for k, m in List.indexed l.Stats -> sprintf "%s.lstm.stat.%d" prefix k, m ]
        | Groups gs -> gs |> List.mapi (fun i g -> named (sprintf "%s.group.%d" prefix i) g) |> List.concat
        | Imitating(l, t) -> named (prefix + ".learner") l @ named (prefix + ".teacher") t

    /// The same state with each tensor replaced by f (name, tensor): a detach, a copy, a tensor read
    /// back from a checkpoint by its name.
    let rec mapNamed (prefix: string) (f: string -> Tensor -> Tensor) (s: OptState) : OptState =
        let memory =
            match s.Memory with
            | Stateless -> Stateless
            | Velocity v -> Velocity(f (prefix + ".v") v)
            | MeanSquare r -> MeanSquare(f (prefix + ".r") r)
            | Moments(m, v) -> Moments(f (prefix + ".m") m, f (prefix + ".v") v)
            | Recurrent l ->
                Recurrent
                    { l with
                        H = l.H |> List.mapi (fun k h -> f (sprintf "%s.lstm.h.%d" prefix k) h)
                        C = l.C |> List.mapi (fun k c -> f (sprintf "%s.lstm.c.%d" prefix k) c)
                        Memory = l.Memory |> List.mapi (fun k m -> f (sprintf "%s.lstm.mem.%d" prefix k) m)
                        Stats = l.Stats |> List.mapi (fun k m -> f (sprintf "%s.lstm.stat.%d" prefix k) m) }
            | Groups gs -> Groups(gs |> List.mapi (fun i g -> mapNamed (sprintf "%s.group.%d" prefix i) f g))
            | Imitating(l, t) -> Imitating(mapNamed (prefix + ".learner") f l, mapNamed (prefix + ".teacher") f t)
        { s with Memory = memory }

    let map (f: Tensor -> Tensor) (s: OptState) = mapNamed "" (fun _ t -> f t) s

    let detach (s: OptState) = map (fun t -> t.detach()) s

    /// The LSTM state of m_φ's state (one φ).
    let recurrent (s: OptState) : LstmState =
        match s.Memory with
        | Recurrent l -> l
        | other -> invalidArg "s" (sprintf "not the state of one learned optimizer: %A" (other.GetType().Name))

/// An optimizer: ∇_t, state_t -> (g_t, state_{t+1}); the caller applies θ_{t+1} = θ_t + g_t.
type Optimizer =
    { Name: string
      /// The hyper-parameters that define it (for reports and results files).
      Hyper: (string * float) list
      /// The state for θ_0 (its shape, dtype and device) holding this many functions' coordinates in
      /// equal contiguous blocks (1 for one model; B for a meta-batch of B functions).
      Init: int -> Tensor -> OptState
      /// grad: [n] -> g: [n]
      Update: OptState -> Tensor -> struct (Tensor * OptState) }

module Update =
    /// θ_{t+1} = θ_t + g_t (paper eq. 1): the one place the optimizee's parameters move.
    let apply (theta: Tensor) (g: Tensor) : Tensor = theta.Add(g)

/// The hand-designed baselines, written out (the formulas of torch.optim / Torch7 defaults).
module Baselines =
    let private zerosLike (theta: Tensor) = torch.zeros_like(theta, requires_grad = false)

    let private moment (s: OptState) =
        match s.Memory with
        | Velocity v
        | MeanSquare v -> v
        | other -> invalidArg "s" (sprintf "expected one moment, got %s" (other.GetType().Name))

    /// g = −lr·∇
    let sgd (lr: float) : Optimizer =
        { Name = "sgd"
          Hyper = [ "lr", lr ]
          Init = fun _ _ -> { Step = 0; Memory = Stateless }
          Update = fun s grad -> struct (grad.Mul(-lr), { s with Step = s.Step + 1 }) }

    /// Heavy ball: v ← μv + ∇; g = −lr·v
    let momentum (lr: float) (mu: float) : Optimizer =
        { Name = "momentum"
          Hyper = [ "lr", lr; "mu", mu ]
          Init = fun _ theta -> { Step = 0; Memory = Velocity(zerosLike theta) }
          Update =
            fun s grad ->
                let v = (moment s).Mul(mu).Add(grad)
                struct (v.Mul(-lr), { Step = s.Step + 1; Memory = Velocity v }) }

    /// Nesterov (PyTorch form): v ← μv + ∇; g = −lr·(∇ + μv)
    let nag (lr: float) (mu: float) : Optimizer =
        { Name = "nag"
          Hyper = [ "lr", lr; "mu", mu ]
          Init = fun _ theta -> { Step = 0; Memory = Velocity(zerosLike theta) }
          Update =
            fun s grad ->
                let v = (moment s).Mul(mu).Add(grad)
                struct (grad.Add(v.Mul(mu)).Mul(-lr), { Step = s.Step + 1; Memory = Velocity v }) }

    /// RMSprop: r ← αr + (1−α)∇²; g = −lr·∇/(√r + ε)
    let rmsprop (lr: float) (alpha: float) (eps: float) : Optimizer =
        { Name = "rmsprop"
          Hyper = [ "lr", lr; "alpha", alpha; "eps", eps ]
          Init = fun _ theta -> { Step = 0; Memory = MeanSquare(zerosLike theta) }
          Update =
            fun s grad ->
                let r = (moment s).Mul(alpha).Addcmul(grad, grad, (1.0 - alpha))
                struct (grad.Mul(-lr).div(r.sqrt().Add(eps)), { Step = s.Step + 1; Memory = MeanSquare r }) }

    /// Adam: m ← β1m + (1−β1)∇; v ← β2v + (1−β2)∇²; g = −lr·m̂/(√v̂ + ε), bias-corrected.
    let adam (lr: float) (beta1: float) (beta2: float) (eps: float) : Optimizer =
        { Name = "adam"
          Hyper = [ "lr", lr; "beta1", beta1; "beta2", beta2; "eps", eps ]
          Init = fun _ theta -> { Step = 0; Memory = Moments(zerosLike theta, zerosLike theta) }
          Update =
            fun s grad ->
                let t = s.Step + 1
                let m0, v0 =
                    match s.Memory with
                    | Moments(m, v) -> m, v
                    | other -> invalidArg "s" (sprintf "expected Adam's moments, got %s" (other.GetType().Name))
                let m = m0.Mul(beta1).Add(grad.Mul(1.0 - beta1))
                let v = v0.Mul(beta2).Addcmul(grad, grad, (1.0 - beta2))
                let mhat = m.Div(1.0 - pown beta1 t)
                let vhat = v.Div(1.0 - pown beta2 t)
                struct (mhat.Mul(-lr).div(vhat.sqrt().Add(eps)), { Step = t; Memory = Moments(m, v) }) }

    /// The tuned baselines of the paper plus momentum; every one but its learning rate at the
    /// Torch7/PyTorch defaults (NAG and momentum μ = 0.9).
    let names = [ "sgd"; "momentum"; "nag"; "rmsprop"; "adam" ]

    let byName (name: string) (lr: float) : Optimizer =
        match name with
        | "sgd" -> sgd lr
        | "momentum" -> momentum lr 0.9
        | "nag" -> nag lr 0.9
        | "rmsprop" -> rmsprop lr 0.99 1e-8
        | "adam" -> adam lr 0.9 0.999 1e-8
        | other -> invalidArg "name" (sprintf "unknown baseline '%s' (expected one of %s)" other (String.concat ", " names))

/// m_φ as an ordinary optimizer: the learned and the hand-designed ones are interchangeable.
module Learned =
    let optimizer (backend: Backend) (phi: Phi) : Optimizer =
        let backend = Backend.resolve backend
        { Name = "lstm"
          Hyper =
            [ "layers", float phi.Config.Layers
              "hidden", float phi.Config.Hidden
              "out_scale", phi.Config.OutScale
              match phi.Config.Preprocessing with
              | LogSign p -> "p", p
              | Identity -> "p", 0.0
              | NormalizedMoments(betas, beta2) ->
                  yield! betas |> List.mapi (fun i b -> sprintf "beta%d" (i + 1), b)
                  "beta2", beta2 ]
          Init = fun functions theta -> { Step = 0; Memory = Recurrent(LstmState.zeros phi functions (theta.numel())) }
          Update =
            fun s grad ->
                let g, state = Lstm.step backend phi (OptState.recurrent s) grad
                struct (g, { Step = s.Step + 1; Memory = Recurrent state }) }

    /// Several coordinatewise LSTMs, each on its own contiguous block of θ (paper §3.4: one for a
    /// conv net's conv parameters, one for its fully connected ones). groups: (name, coordinates) in
    /// θ's order, one φ each. With one φ it is `optimizer` itself, on any number of coordinates.
    let grouped (backend: Backend) (groups: (string * int) list) (phis: Phi list) : Optimizer =
        if groups.Length <> phis.Length then
            invalidArg "phis" (sprintf "%d coordinate groups but %d learned optimizers" groups.Length phis.Length)
        match phis with
        | [ phi ] -> optimizer backend phi
        | _ ->
            let parts = List.map (optimizer backend) phis
            let sizes = groups |> List.map (snd >> int64)
            let offsets = List.scan (+) 0L sizes
            let total = List.last offsets
            let slice (t: Tensor) = List.map2 (fun o n -> t.narrow(0L, o, n)) (List.take sizes.Length offsets) sizes
            let split (s: OptState) =
                match s.Memory with
                | Groups gs when gs.Length = parts.Length -> gs
                | _ -> invalidArg "s" (sprintf "expected the states of %d learned optimizers" parts.Length)
            { Name = "lstm"
              Hyper = (List.head parts).Hyper @ [ "groups", float phis.Length ]
              Init =
                fun functions theta ->
                    if functions <> 1 then
                        invalidArg "functions" (sprintf "learned optimizers on coordinate groups take one function at a time, not %d" functions)
                    if theta.numel() <> total then
                        invalidArg "theta" (sprintf "θ has %d coordinates, the groups (%s) %d" (theta.numel())
                                                (groups |> List.map (fun (n, k) -> sprintf "%s %d" n k) |> String.concat ", ") total)
                    { Step = 0; Memory = Groups(List.map2 (fun (o: Optimizer) th -> o.Init 1 th) parts (slice theta)) }
              Update =
                fun s grad ->
                    let results = List.map3 (fun (o: Optimizer) st g -> o.Update st g) parts (split s) (slice grad)
                    let g = torch.cat(results |> List.map (fun (struct (g, _)) -> g) |> List.toArray, 0L)
                    struct (g, { Step = s.Step + 1; Memory = Groups(results |> List.map (fun (struct (_, st)) -> st)) }) }
