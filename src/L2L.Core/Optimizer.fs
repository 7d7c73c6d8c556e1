/// One optimizer shape for the baselines and for m_φ, so any optimizer runs through the same loop
/// and the θ update exists in exactly one place (`Update.apply`).
namespace L2L

open TorchSharp

/// An optimizer's state: its step count and its per-coordinate tensors (moments, LSTM h and c).
type OptState = { Step: int; Slots: Tensor list }

/// An optimizer: ∇_t, state_t -> (g_t, state_{t+1}); the caller applies θ_{t+1} = θ_t + g_t.
type Optimizer =
    { Name: string
      /// The hyper-parameters that define it (for reports and results files).
      Hyper: (string * float) list
      /// The state for a given θ_0 (its shape, dtype and device).
      Init: Tensor -> OptState
      /// grad: [n] -> g: [n]
      Update: OptState -> Tensor -> struct (Tensor * OptState) }

module Update =
    /// θ_{t+1} = θ_t + g_t (paper eq. 1): the one place the optimizee's parameters move.
    let apply (theta: Tensor) (g: Tensor) : Tensor = theta.add(g)

/// The hand-designed baselines, written out (the formulas of torch.optim / Torch7 defaults).
module Baselines =
    let private zerosLike (theta: Tensor) = torch.zeros_like(theta, requires_grad = false)

    let private init k (theta: Tensor) =
        { Step = 0; Slots = [ for _ in 1..k -> zerosLike theta ] }

    /// g = −lr·∇
    let sgd (lr: float) : Optimizer =
        { Name = "sgd"
          Hyper = [ "lr", lr ]
          Init = init 0
          Update = fun s grad -> struct (grad.mul(sc -lr), { s with Step = s.Step + 1 }) }

    /// Heavy ball: v ← μv + ∇; g = −lr·v
    let momentum (lr: float) (mu: float) : Optimizer =
        { Name = "momentum"
          Hyper = [ "lr", lr; "mu", mu ]
          Init = init 1
          Update =
            fun s grad ->
                let v = s.Slots[0].mul(sc mu).add(grad)
                struct (v.mul(sc -lr), { Step = s.Step + 1; Slots = [ v ] }) }

    /// Nesterov (PyTorch form): v ← μv + ∇; g = −lr·(∇ + μv)
    let nag (lr: float) (mu: float) : Optimizer =
        { Name = "nag"
          Hyper = [ "lr", lr; "mu", mu ]
          Init = init 1
          Update =
            fun s grad ->
                let v = s.Slots[0].mul(sc mu).add(grad)
                struct (grad.add(v.mul(sc mu)).mul(sc -lr), { Step = s.Step + 1; Slots = [ v ] }) }

    /// RMSprop: r ← αr + (1−α)∇²; g = −lr·∇/(√r + ε)
    let rmsprop (lr: float) (alpha: float) (eps: float) : Optimizer =
        { Name = "rmsprop"
          Hyper = [ "lr", lr; "alpha", alpha; "eps", eps ]
          Init = init 1
          Update =
            fun s grad ->
                let r = s.Slots[0].mul(sc alpha).addcmul(grad, grad, sc (1.0 - alpha))
                struct (grad.mul(sc -lr).div(r.sqrt().add(sc eps)), { Step = s.Step + 1; Slots = [ r ] }) }

    /// Adam: m ← β1m + (1−β1)∇; v ← β2v + (1−β2)∇²; g = −lr·m̂/(√v̂ + ε), bias-corrected.
    let adam (lr: float) (beta1: float) (beta2: float) (eps: float) : Optimizer =
        { Name = "adam"
          Hyper = [ "lr", lr; "beta1", beta1; "beta2", beta2; "eps", eps ]
          Init = init 2
          Update =
            fun s grad ->
                let t = s.Step + 1
                let m = s.Slots[0].mul(sc beta1).add(grad.mul(sc (1.0 - beta1)))
                let v = s.Slots[1].mul(sc beta2).addcmul(grad, grad, sc (1.0 - beta2))
                let mhat = m.div(sc (1.0 - pown beta1 t))
                let vhat = v.div(sc (1.0 - pown beta2 t))
                struct (mhat.mul(sc -lr).div(vhat.sqrt().add(sc eps)), { Step = t; Slots = [ m; v ] }) }

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
    let optimizer (phi: Phi) : Optimizer =
        let layers = phi.Config.Layers
        { Name = "lstm"
          Hyper =
            [ "layers", float phi.Config.Layers
              "hidden", float phi.Config.Hidden
              "out_scale", phi.Config.OutScale
              match phi.Config.Preprocessing with
              | LogSign p -> "p", p
              | Identity -> "p", 0.0 ]
          Init = fun theta -> { Step = 0; Slots = LstmState.tensors (LstmState.zeros phi (theta.numel())) }
          Update =
            fun s grad ->
                let g, state = Lstm.step phi (LstmState.ofTensors layers s.Slots) grad
                struct (g, { Step = s.Step + 1; Slots = LstmState.tensors state }) }

    /// Several coordinatewise LSTMs, each on its own contiguous block of θ (paper §3.4: one for a
    /// conv net's conv parameters, one for its fully connected ones). groups: (name, coordinates) in
    /// θ's order, one φ each. With one φ it is `optimizer` itself, on any number of coordinates.
    let grouped (groups: (string * int) list) (phis: Phi list) : Optimizer =
        if groups.Length <> phis.Length then
            invalidArg "phis" (sprintf "%d coordinate groups but %d learned optimizers" groups.Length phis.Length)
        match phis with
        | [ phi ] -> optimizer phi
        | _ ->
            let parts = List.map optimizer phis
            let sizes = groups |> List.map (snd >> int64)
            let offsets = List.scan (+) 0L sizes
            let total = List.last offsets
            let slots = phis |> List.map (fun p -> 2 * p.Config.Layers)
            let slice (t: Tensor) = List.map2 (fun o n -> t.narrow(0L, o, n)) (List.take sizes.Length offsets) sizes
            let split (s: OptState) =
                let bounds = List.scan (+) 0 slots
                List.map2 (fun a k -> { Step = s.Step; Slots = s.Slots |> List.skip a |> List.take k }) (List.take slots.Length bounds) slots
            { Name = "lstm"
              Hyper = (List.head parts).Hyper @ [ "groups", float phis.Length ]
              Init =
                fun theta ->
                    if theta.numel() <> total then
                        invalidArg "theta" (sprintf "θ has %d coordinates, the groups (%s) %d" (theta.numel())
                                                (groups |> List.map (fun (n, k) -> sprintf "%s %d" n k) |> String.concat ", ") total)
                    let states = List.map2 (fun (o: Optimizer) th -> o.Init th) parts (slice theta)
                    { Step = 0; Slots = states |> List.collect (fun s -> s.Slots) }
              Update =
                fun s grad ->
                    let results = List.map3 (fun (o: Optimizer) st g -> o.Update st g) parts (split s) (slice grad)
                    let g = torch.cat(results |> List.map (fun (struct (g, _)) -> g) |> List.toArray, 0L)
                    struct (g, { Step = s.Step + 1; Slots = results |> List.collect (fun (struct (_, st)) -> st.Slots) }) }
