namespace L2L

    /// The meta-gradient of one truncation in closed form when second derivatives are dropped (the
    /// paper's setting): ∇_t carries no graph, so L = Σ_j w_j·f(θ_{s+j}) reaches φ only through the
    /// steps g, with θ_{s+j} = θ_s + Σ_{i<j} g_i. Hence dL/dθ_{s+j} = w_j·∇_{s+j} (w_j·∇/f with Σ log f;
    /// the mean over functions divides by B), the adjoint of g_i is the reverse cumulative sum
    /// Σ_{j>i} dL/dθ_{s+j}, and what is left is backpropagation through m_φ alone (`LstmKernel.stepBackward`),
    /// step by step from the last. No autograd graph is built: the forward pass keeps only each step's
    /// features and states. The same function as `MetaLoss.unroll` followed by autograd (a test pins
    /// them together to float32 rounding).
    module FirstOrder =

        /// Whether `metaGradient` computes this truncation: first order, one φ of the paper's LSTM on
        /// the fused kernel, and a problem with a hand-derived ∇.
        val applies:
          cfg: UnrollConfig -> phis: Phi list -> tr: Trajectory -> bool

        /// Frees this thread's buffers (the next closed-form meta-gradient allocates them again).
        val releaseWorkspace: unit -> unit

        /// L(φ) of one truncation, dL/dφ (in `Phi.tensors` order) and the trajectory carried on.
        /// Memory: the steps' features and states live in this thread's workspace, reused from one
        /// truncation to the next (`releaseWorkspace` frees it); what is returned lives in the caller's
        /// dispose scope.
        val metaGradient:
          threads: int ->
            cfg: UnrollConfig ->
            phi: Phi -> tr: Trajectory -> Tensor * Tensor list * Trajectory

    module MetaGradient =

        /// Through autograd: `MetaLoss.unroll`'s graph, differentiated. phis: one φ per coordinate
        /// group of `task`.
        val autograd:
          backend: Backend ->
            unroll: UnrollConfig ->
            task: TaskSpec ->
            phis: Phi list ->
            tr: Trajectory -> Tensor * Tensor list * Trajectory

        /// Whether `compute` takes the closed form for this truncation.
        val usesClosedForm:
          backend: Backend ->
            unroll: UnrollConfig -> phis: Phi list -> tr: Trajectory -> bool

        /// L(φ) of one truncation, dL/dφ (in `Phis.tensors` order) and the trajectory carried on: in
        /// closed form where `usesClosedForm`, else through autograd.
        val compute:
          backend: Backend ->
            unroll: UnrollConfig ->
            task: TaskSpec ->
            phis: Phi list ->
            tr: Trajectory -> Tensor * Tensor list * Trajectory


    /// Imitation of a hand-designed optimizer's updates (Chen et al. 2020): on an imitation trajectory
    /// the optimizee follows the teacher (e.g. Adam), m_φ runs beside it on the same gradients, and the
    /// truncation's loss is Σ_j w_j · ½‖g_φ − g_teacher‖² / ‖g_teacher‖²: relative, so it weighs alike
    /// on every problem and at every step size, and mixes with the meta-loss of the other trajectories.
    module Imitation =

        /// The learner beside the teacher: the teacher's step is the one applied; both states advance.
        val optimizer: learner: Optimizer -> teacher: Optimizer -> Optimizer

        /// Whether a trajectory is an imitation one (its state holds a learner and a teacher).
        val applies: tr: Trajectory -> bool

        /// The imitation loss of one truncation, its gradient in `parameters` (φ's tensors, in order)
        /// and the trajectory carried on (the teacher's). Through autograd; ∇ carries no graph.
        val metaGradient:
          unroll: UnrollConfig ->
            learner: Optimizer ->
            teacher: Optimizer -> parameters: Tensor list -> tr: Trajectory -> Tensor * Tensor list * Trajectory
