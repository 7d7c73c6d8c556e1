namespace L2L

    /// The weights w_t of the meta-loss.
    type StepWeights =

        /// w_t = 1 for every t (the paper's choice).
        | Uniform

        /// w_t = 1 at the last step of each truncation only.
        | LastOnly

    /// Settings of the unrolled inner loop.
    type UnrollConfig =
        {

          /// Optimizee steps per truncation (the BPTT length).
          Unroll: int
          Weights: StepWeights

          /// Keep ∂∇_t/∂φ (create_graph). The paper drops it (false).
          SecondOrder: bool

          /// Sum log f(θ_t) instead of f(θ_t): scale-free, so the late steps of a trajectory (small f)
          /// weigh as much as the early ones. The paper sums f (false).
          LogLoss: bool
        }

    /// What crosses a truncation: θ, ∇ at θ and the optimizer state, all cut from φ's graph.
    type Trajectory =
        {
          Problem: Problem

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
          Loss: float
        }

    module Trajectory =

        /// The tensors a trajectory holds (the problem's included).
        val tensors: tr: Trajectory -> Tensor list

    module Gradient =

        /// f at step t and ∇_θ f. With `secondOrder = false` the gradient is detached: the optimizer's
        /// input carries no graph, i.e. ∂∇_t/∂φ = 0 (paper §2.1). `retain` keeps f's graph for a later
        /// backward through it (the meta-loss).
        val at:
          problem: Problem ->
            t: int ->
            theta: Tensor ->
            retain: bool -> secondOrder: bool -> Tensor * Tensor

    module MetaLoss =

        val weight: w: StepWeights -> j: int -> unroll: int -> float

        /// The start of a trajectory: θ_0, ∇_0 and a fresh optimizer state.
        val start:
          opt: Optimizer -> problem: Problem -> index: int64 -> Trajectory

        /// One truncation: `cfg.Unroll` steps of θ_{t+1} = θ_t + g_t from the carried trajectory.
        /// Returns L = Σ_j w_j · mean_b f_b(θ_{s+j}) (or its log, see LogLoss; a scalar in φ's graph) and the trajectory carried on,
        /// cut from the graph.
        val unroll:
          cfg: UnrollConfig ->
            opt: Optimizer -> tr: Trajectory -> Tensor * Trajectory

