namespace L2L

    /// What happens when a meta-iteration's loss or meta-gradient is not finite: the update is discarded
    /// (φ and the meta-optimizer stay at the last good state), the trajectory is restarted on a fresh
    /// problem, and the meta-learning rate is multiplied by LrFactor. After MaxConsecutive such
    /// iterations in a row, training stops (the caller reports the run as failed).
    type FaultPolicy =
        {
          LrFactor: float
          MaxConsecutive: int
        }

    /// Everything that defines a meta-training run.
    type MetaConfig =
        {
          Task: TaskSpec
          Lstm: LstmConfig

          /// T: optimizee steps per trajectory.
          Horizon: int
          Unroll: UnrollConfig

          /// Functions optimised side by side in each meta-training problem.
          BatchFunctions: int

          /// Meta-iterations (= φ updates = truncations) to run.
          MetaIterations: int
          MetaLr: float

          /// Validate every this many meta-iterations (0: never; the last φ is then kept).
          ValidateEvery: int
          ValidationFunctions: int

          /// Portable-stream seed of the held-out validation functions.
          ValidationSeed: uint64
          Seed: int64
          Device: DeviceChoice
          DType: TorchSharp.torch.ScalarType
          Faults: FaultPolicy

          /// How it is computed (changes speed, not results beyond float32 rounding).
          Backend: Backend
        }

    module MetaConfig =

        val validate: c: MetaConfig -> Result<MetaConfig,string list>

    /// The whole meta-training state between two meta-iterations.
    type TrainState =
        {

          /// φ of each coordinate group of the task (TaskSpec.groups; one for most tasks).
          Phis: Phi list

          /// Adam's state for each of φ's tensors (in `Phis.tensors` order).
          MetaOpt: OptState list

          /// Meta-iterations done.
          Iteration: int

          /// The trajectory under way (None: the next iteration starts a new one).
          Trajectory: Trajectory option

          /// Trajectories started so far (the counter of the next meta-training problem).
          Trajectories: int64
          Best: Phi list
          BestLoss: float
          BestIteration: int

          /// The meta-learning rate now (reduced after each fault).
          MetaLr: float

          /// Non-finite meta-iterations in a row, and in all.
          ConsecutiveFaults: int
          Faults: int
        }

    module TrainState =

        val tensors: s: TrainState -> Tensor list

        val dispose: s: TrainState -> unit

        /// True when the fault policy stopped training.
        val failed: cfg: MetaConfig -> s: TrainState -> bool

    /// What one meta-iteration reports.
    type IterationReport =
        {
          Iteration: int

          /// L(φ) of the truncation just run.
          MetaLoss: float

          /// f(θ) per function at the end of the truncation.
          TrainLoss: float
          Trajectory: int64
          Step: int

          /// false: a non-finite loss or meta-gradient; the update was skipped.
          Finite: bool

          /// Mean f(θ_T) on the validation functions, when validated at this iteration.
          Validation: float option
          Seconds: float
        }

    module MetaTrain =

        /// The meta-optimizer: Adam on each of φ's tensors, at the given learning rate.
        val metaOptimizer: lr: float -> Optimizer

        /// A detached copy of φ that requires grad (for keeping the best φ).
        val snapshot: phis: Phi list -> Phi list

        val init: cfg: MetaConfig -> TrainState

        /// One meta-iteration: one truncation of the current trajectory (starting a new one when
        /// needed), then one Adam step on φ. Pure in the state: the old state's tensors are left as
        /// they were (the caller disposes what it no longer needs).
        val step:
          cfg: MetaConfig ->
            data: TaskData -> s: TrainState -> TrainState * IterationReport

        /// The validation problems: held-out functions from the portable stream (MNIST: networks on the
        /// training split, never the evaluation split).
        val validationProblem: cfg: MetaConfig -> data: TaskData -> Problem list

        /// Mean f(θ_T) of m_φ over the validation problems (each function's loss on all its data).
        val validate:
          cfg: MetaConfig -> problems: Problem list -> phis: Phi list -> float

        /// One meta-iteration in its own dispose scope, with validation when it is due (keeping the best
        /// φ); the replaced state's tensors are disposed. `validation` is the held-out problem (None when
        /// cfg.ValidateEvery = 0: the last φ is then the one kept).
        val iterate:
          cfg: MetaConfig ->
            data: TaskData ->
            validation: Problem list option ->
            s: TrainState -> TrainState * IterationReport

        /// True when training has nothing left to do: the budget is spent or the fault policy stopped it.
        val finished: cfg: MetaConfig -> s: TrainState -> bool

        /// Runs meta-iterations from `state` until cfg.MetaIterations are done, the fault policy stops
        /// training, or `stop ()` says so. `observe` sees every new state (valid until the next iteration)
        /// with its report. Returns the final state (its Best is the φ to keep).
        val runObserved:
          cfg: MetaConfig ->
            data: TaskData ->
            observe: (TrainState -> IterationReport -> unit) ->
            stop: (unit -> bool) -> state: TrainState -> TrainState

        /// `runObserved` with a report callback only.
        val run:
          cfg: MetaConfig ->
            data: TaskData ->
            report: (IterationReport -> unit) ->
            stop: (unit -> bool) -> state: TrainState -> TrainState

