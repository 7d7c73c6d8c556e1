namespace L2L

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
    and OptState =
        {
          Step: int
          Memory: OptMemory
        }

    module OptState =

        /// The tensors of a state (for disposal and scopes), in the order of `named`.
        val tensors: s: OptState -> Tensor list

        /// Each tensor with its name under `prefix` (`prefix.v`, `prefix.lstm.h.0`, `prefix.group.1.lstm.c.0`, ...).
        val named: prefix: string -> s: OptState -> (string * Tensor) list

        /// The same state with each tensor replaced by f (name, tensor): a detach, a copy, a tensor read
        /// back from a checkpoint by its name.
        val mapNamed:
          prefix: string ->
            f: (string -> Tensor -> Tensor) -> s: OptState -> OptState

        val map: f: (Tensor -> Tensor) -> s: OptState -> OptState

        val detach: s: OptState -> OptState

        /// The LSTM state of m_φ's state (one φ).
        val recurrent: s: OptState -> LstmState

    /// An optimizer: ∇_t, state_t -> (g_t, state_{t+1}); the caller applies θ_{t+1} = θ_t + g_t.
    type Optimizer =
        {
          Name: string

          /// The hyper-parameters that define it (for reports and results files).
          Hyper: (string * float) list

          /// The state for θ_0 (its shape, dtype and device) holding this many functions' coordinates in
          /// equal contiguous blocks (1 for one model; B for a meta-batch of B functions).
          Init: (int -> Tensor -> OptState)

          /// grad: [n] -> g: [n]
          Update: (OptState -> Tensor -> struct (Tensor * OptState))
        }

    module Update =

        /// θ_{t+1} = θ_t + g_t (paper eq. 1): the one place the optimizee's parameters move.
        val apply: theta: Tensor -> g: Tensor -> Tensor

    /// The hand-designed baselines, written out (the formulas of torch.optim / Torch7 defaults).
    module Baselines =

        /// g = −lr·∇
        val sgd: lr: float -> Optimizer

        /// Heavy ball: v ← μv + ∇; g = −lr·v
        val momentum: lr: float -> mu: float -> Optimizer

        /// Nesterov (PyTorch form): v ← μv + ∇; g = −lr·(∇ + μv)
        val nag: lr: float -> mu: float -> Optimizer

        /// RMSprop: r ← αr + (1−α)∇²; g = −lr·∇/(√r + ε)
        val rmsprop: lr: float -> alpha: float -> eps: float -> Optimizer

        /// Adam: m ← β1m + (1−β1)∇; v ← β2v + (1−β2)∇²; g = −lr·m̂/(√v̂ + ε), bias-corrected.
        val adam:
          lr: float -> beta1: float -> beta2: float -> eps: float -> Optimizer

        /// The tuned baselines of the paper plus momentum; every one but its learning rate at the
        /// Torch7/PyTorch defaults (NAG and momentum μ = 0.9).
        val names: string list

        val byName: name: string -> lr: float -> Optimizer

    /// m_φ as an ordinary optimizer: the learned and the hand-designed ones are interchangeable.
    module Learned =

        val optimizer: backend: Backend -> phi: Phi -> Optimizer

        /// Several coordinatewise LSTMs, each on its own contiguous block of θ (paper §3.4: one for a
        /// conv net's conv parameters, one for its fully connected ones). groups: (name, coordinates) in
        /// θ's order, one φ each. With one φ it is `optimizer` itself, on any number of coordinates.
        val grouped:
          backend: Backend ->
            groups: (string * int) list -> phis: Phi list -> Optimizer

