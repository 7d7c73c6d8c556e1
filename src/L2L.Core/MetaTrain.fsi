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

    /// The unroll-length curriculum (Chen et al. 2020): meta-training starts at the run's horizon; after
    /// Patience validations in a row without a new best, it moves on to the next of Horizons from the
    /// best φ so far, with a fresh meta-optimizer; when the last stage stalls, training ends. Horizons
    /// empty: no curriculum (the paper's setting).
    type Curriculum =
        {
          Horizons: int list
          Patience: int

          /// Validate φ at every horizon reached so far (the geometric mean of the mean f(θ_T) at each
          /// stage's horizon), so that the φ kept is good at all of them, not at the current one only
          /// (false: the current horizon, Chen et al.'s).
          ValidateAll: bool
        }

    module Curriculum =

        /// No curriculum.
        val none: Curriculum

    /// Imitation of Adam's updates (Chen et al. 2020): each trajectory is an imitation one with
    /// probability Probability (drawn from its seed and counter), the optimizee then following Adam
    /// with learning rate Lr and m_φ learning to match its steps (`Imitation.metaGradient`).
    type ImitationConfig =
        {
          Probability: float
          Lr: float
        }

    module ImitationConfig =

        /// No imitation.
        val none: ImitationConfig

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

          /// Shards of the meta-batch: each meta-iteration's BatchFunctions functions are drawn as this
          /// many problems of BatchFunctions / Shards functions (each from a seed of its own), whose
          /// meta-gradients are computed apart (on a cluster's machines, or in turn) and averaged in
          /// shard order. 1: the unsharded run.
          Shards: int

          /// Random scaling of the meta-training problems' coordinates (0: none): each trajectory's
          /// function is f(c ⊙ θ) with log c uniform in [−A, A] per coordinate, from θ_0 / c (so m_φ
          /// meets many curvatures and step sizes; Lv et al. 2017). Evaluation and validation are
          /// never scaled.
          RandomScaling: float

          /// Later horizons, entered when validation stalls (none: one horizon throughout).
          Curriculum: Curriculum

          /// Trajectories spent imitating Adam (none: every trajectory runs m_φ).
          Imitation: ImitationConfig

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

        /// Horizons in the run: 1, or 1 + the curriculum's.
        val stages: c: MetaConfig -> int

        /// The horizon of curriculum stage `stage` (0: the run's Horizon).
        val horizon: c: MetaConfig -> stage: int -> int

        /// The longest horizon the run reaches (problems are drawn for it, so that a stage's
        /// trajectories and validation functions are the prefixes of the same draws).
        val maxHorizon: c: MetaConfig -> int

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

          /// The trajectory under way (None: the next iteration starts a new one); shard 0's when sharded.
          Trajectory: Trajectory option

          /// The trajectories under way of shards 1 .. Shards − 1, in order (empty when Trajectory is
          /// None or the run has one shard).
          ShardTrajectories: Trajectory list

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

          /// The curriculum stage (0: the run's horizon; MetaConfig.stages: the last stage has
          /// stalled and training is over).
          Stage: int

          /// Validations in a row without a new best.
          Stale: int
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

          /// The horizon of the trajectory (the curriculum's stage's).
          Horizon: int
          Seconds: float
        }

    /// Computes a meta-iteration's shards: given φ and each shard's trajectory (in shard order), each
    /// shard's L(φ), dL/dφ (in `Phis.tensors` order) and trajectory carried on, in the same order.
    type ShardCompute = Phi list -> Trajectory list -> (Tensor * Tensor list * Trajectory) list

    module Shard =

        /// The seed of shard k's meta-training problems: shard 0's is the run's, so that a run of one
        /// shard is the unsharded run.
        val seed: cfg: MetaConfig -> k: int -> int64

        /// Functions in each shard's problem.
        val functions: cfg: MetaConfig -> int

        /// Shard k's meta-training problem number `index` (see TaskSpec.trainProblem), its coordinates
        /// randomly scaled when cfg.RandomScaling > 0 (the factors drawn from the same seed and counter).
        val problem: cfg: MetaConfig -> data: TaskData -> k: int -> index: int64 -> Problem

        /// The teacher of imitation trajectories: Adam at the configured learning rate.
        val teacher: cfg: MetaConfig -> Optimizer

        /// Whether shard k's trajectory number `index` imitates Adam (drawn from the shard's seed and
        /// the counter; never when the probability is 0).
        val imitating: cfg: MetaConfig -> k: int -> index: int64 -> bool

        /// The optimizer of shard k's trajectory `index`: m_φ, or m_φ beside Adam when it imitates.
        val optimizer: cfg: MetaConfig -> backend: Backend -> phis: Phi list -> k: int -> index: int64 -> Optimizer

        /// One shard's truncation in this process: `MetaGradient.compute` (or, on an imitation
        /// trajectory, `Imitation.metaGradient`) with libtorch's step threads.
        val computeOne: cfg: MetaConfig -> phis: Phi list -> tr: Trajectory -> Tensor * Tensor list * Trajectory

        /// Every shard in this process, one after another.
        val local: cfg: MetaConfig -> ShardCompute

        /// The shards' results as one: L and dL/dφ averaged over the shards, summed in shard order
        /// (one shard: its own, untouched).
        val reduce: results: (Tensor * Tensor list * Trajectory) list -> Tensor * Tensor list

    module MetaTrain =

        /// The meta-optimizer: Adam on each of φ's tensors, at the given learning rate.
        val metaOptimizer: lr: float -> Optimizer

        /// A detached copy of φ that requires grad (for keeping the best φ).
        val snapshot: phis: Phi list -> Phi list

        val init: cfg: MetaConfig -> TrainState

        /// One meta-iteration: one truncation of the current trajectory of every shard (starting new
        /// ones when needed), computed by `compute`, then one Adam step on φ. Pure in the state: the old
        /// state's tensors are left as they were (the caller disposes what it no longer needs).
        val stepWith:
          compute: ShardCompute ->
            cfg: MetaConfig ->
            data: TaskData -> s: TrainState -> TrainState * IterationReport

        /// `stepWith` every shard in this process.
        val step:
          cfg: MetaConfig ->
            data: TaskData -> s: TrainState -> TrainState * IterationReport

        /// The validation problems: held-out functions from the portable stream (MNIST: networks on the
        /// training split, never the evaluation split).
        val validationProblem: cfg: MetaConfig -> data: TaskData -> Problem list

        /// Mean f(θ_T) of m_φ over the validation problems at horizon T (each function's loss on all its data;
        /// problems of different sizes, a mixture's, are averaged per problem).
        val validateAt:
          cfg: MetaConfig -> horizon: int -> problems: Problem list -> phis: Phi list -> float

        /// The validation loss at curriculum stage `stage` (its last stage when past it): `validateAt` the
        /// stage's horizon or, with Curriculum.ValidateAll, the geometric mean of the mean f(θ_T) at the
        /// horizons of stages 0..stage (one run to the last).
        val validateStage:
          cfg: MetaConfig -> stage: int -> problems: Problem list -> phis: Phi list -> float

        /// Mean f(θ_T) of m_φ over the validation problems at the run's horizon.
        val validate:
          cfg: MetaConfig -> problems: Problem list -> phis: Phi list -> float

        /// The state of a run that starts from trained φ instead of a fresh draw (a warm start: a
        /// pretrained optimizer fine-tuned on another task): copies of `phis` on cfg's device and dtype,
        /// one per coordinate group (a single φ starts every group), and a fresh meta-optimizer. With
        /// validation, the starting φ's validation loss is the one to beat (it is kept if training never
        /// does better). Error when their count does not fit the task or an m_φ is not the configured
        /// one (cfg.Lstm).
        val initFrom: cfg: MetaConfig -> data: TaskData -> phis: Phi list -> Result<TrainState,string>

        /// One meta-iteration in its own dispose scope, with validation when it is due (keeping the best
        /// φ); the replaced state's tensors are disposed. `validation` is the held-out problem (None when
        /// cfg.ValidateEvery = 0: the last φ is then the one kept). With a curriculum, a stale validation may move
        /// training to its next stage.
        val iterateWith:
          compute: ShardCompute ->
            cfg: MetaConfig ->
            data: TaskData ->
            validation: Problem list option ->
            s: TrainState -> TrainState * IterationReport

        /// `iterateWith` every shard in this process.
        val iterate:
          cfg: MetaConfig ->
            data: TaskData ->
            validation: Problem list option ->
            s: TrainState -> TrainState * IterationReport

        /// True when training has nothing left to do: the budget is spent, the fault policy stopped it, or
        /// the curriculum's last stage has stalled.
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

