/// Meta-training: Adam on φ by truncated backpropagation through the unrolled inner loop
/// (paper §2, Fig. 2), with validation on held-out functions and the best φ kept.
namespace L2L

open System
open System.Diagnostics
open TorchSharp

/// What happens when a meta-iteration's loss or meta-gradient is not finite: the update is discarded
/// (φ and the meta-optimizer stay at the last good state), the trajectory is restarted on a fresh
/// problem, and the meta-learning rate is multiplied by LrFactor. After MaxConsecutive such
/// iterations in a row, training stops (the caller reports the run as failed).
type FaultPolicy = { LrFactor: float; MaxConsecutive: int }

/// The unroll-length curriculum (Chen et al. 2020): meta-training starts at the run's horizon; after
/// Patience validations in a row without a new best, it moves on to the next of Horizons from the best
/// φ so far, with a fresh meta-optimizer; when the last stage stalls, training ends. Horizons empty:
/// no curriculum (the paper's setting). ValidateAll: φ is validated at every horizon reached so far
/// (the geometric mean of the mean f(θ_T) at each), not at the current one only.
type Curriculum = { Horizons: int list; Patience: int; ValidateAll: bool }

module Curriculum =
    /// No curriculum.
    let none = { Horizons = []; Patience = 3; ValidateAll = false }

/// Imitation of Adam's updates (Chen et al. 2020): each trajectory is an imitation one with
/// probability Probability (drawn from its seed and counter), the optimizee then following Adam with
/// learning rate Lr and m_φ learning to match its steps (`Imitation.metaGradient`).
type ImitationConfig = { Probability: float; Lr: float }

module ImitationConfig =
    /// No imitation.
    let none = { Probability = 0.0; Lr = 0.01 }

/// Everything that defines a meta-training run.
type MetaConfig =
    { Task: TaskSpec
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
      DType: torch.ScalarType
      Faults: FaultPolicy
      /// How it is computed (changes speed, not results beyond float32 rounding).
      Backend: Backend }

module MetaConfig =
    /// Horizons in the run: 1, or 1 + the curriculum's.
    let stages (c: MetaConfig) = 1 + c.Curriculum.Horizons.Length

    /// The horizon of curriculum stage `stage` (0: the run's Horizon).
    let horizon (c: MetaConfig) (stage: int) =
        if stage <= 0 then c.Horizon else c.Curriculum.Horizons[min stage c.Curriculum.Horizons.Length - 1]

    /// The longest horizon the run reaches (problems are drawn for it, so that a stage's trajectories
    /// and validation functions are the prefixes of the same draws).
    let maxHorizon (c: MetaConfig) = horizon c (stages c - 1)

    let validate (c: MetaConfig) : Result<MetaConfig, string list> =
        [ match TaskSpec.validate c.Task with
          | Error e -> yield! e
          | Ok _ -> ()
          match LstmConfig.validate c.Lstm with
          | Error e -> yield! e
          | Ok _ -> ()
          if c.Horizon < 1 then "steps (horizon) must be ≥ 1"
          if c.Unroll.Unroll < 1 then "unroll must be ≥ 1"
          elif c.Horizon % c.Unroll.Unroll <> 0 then
              sprintf "unroll %d does not divide the horizon %d" c.Unroll.Unroll c.Horizon
          let hs = c.Curriculum.Horizons
          if not hs.IsEmpty then
              if List.pairwise (c.Horizon :: hs) |> List.exists (fun (a, b) -> b <= a) then
                  sprintf "curriculum horizons must increase from the horizon %d: %s" c.Horizon (hs |> List.map string |> String.concat ", ")
              match hs |> List.tryFind (fun h -> c.Unroll.Unroll >= 1 && h % c.Unroll.Unroll <> 0) with
              | Some h -> sprintf "unroll %d does not divide the curriculum horizon %d" c.Unroll.Unroll h
              | None -> ()
              if c.ValidateEvery < 1 then "a curriculum advances on validation: validate-every must be ≥ 1"
          if c.Curriculum.Patience < 1 then "curriculum patience must be ≥ 1"
          if not (c.Imitation.Probability >= 0.0 && c.Imitation.Probability <= 1.0) then
              sprintf "imitation probability must be in [0, 1], not %g" c.Imitation.Probability
          if not (Double.IsFinite c.Imitation.Lr) || c.Imitation.Lr <= 0.0 then "imitation lr (Adam's) must be a positive number"
          if c.Imitation.Probability > 0.0 then
              if (TaskSpec.groups c.Task).Length > 1 then "imitation is for tasks of one coordinate group"
              if c.Unroll.SecondOrder then "imitation is first order (its trajectories are the teacher's)"
          if c.BatchFunctions < 1 then "batch functions must be ≥ 1"
          if c.Shards < 1 then "shards must be ≥ 1"
          elif c.BatchFunctions >= 1 && c.BatchFunctions % c.Shards <> 0 then
              sprintf "shards %d do not divide the batch functions %d" c.Shards c.BatchFunctions
          if not (Double.IsFinite c.RandomScaling) || c.RandomScaling < 0.0 || c.RandomScaling > 10.0 then
              sprintf "random scaling must be in [0, 10] (log c is uniform in [−A, A]), not %g" c.RandomScaling
          if (TaskSpec.groups c.Task).Length > 1 && c.BatchFunctions <> 1 then
              "a task with several coordinate groups trains on one function at a time (batch functions 1)"
          match c.Task with
          | Custom t when c.Unroll.SecondOrder && not t.SecondOrder ->
              sprintf "task '%s' gives f and ∇ only: meta-train it first order (second order needs ∂∇/∂θ)" t.Name
          | _ -> ()
          if c.MetaIterations < 0 then "meta-iterations must be ≥ 0"
          if not (Double.IsFinite c.MetaLr) || c.MetaLr <= 0.0 then "meta-lr must be a positive number"
          if c.ValidateEvery < 0 then "validate-every must be ≥ 0"
          if c.ValidateEvery > 0 && c.ValidationFunctions < 1 then "validation functions must be ≥ 1"
          if not (c.Faults.LrFactor > 0.0 && c.Faults.LrFactor <= 1.0) then "fault lr factor must be in (0, 1]"
          if c.Faults.MaxConsecutive < 1 then "max consecutive faults must be ≥ 1"
          match Backend.validate c.Backend with
          | Error e -> yield! e
          | Ok _ -> () ]
        |> function
            | [] -> Ok c
            | errs -> Error errs

/// The whole meta-training state between two meta-iterations.
type TrainState =
    { /// φ of each coordinate group of the task (TaskSpec.groups; one for most tasks).
      Phis: Phi list
      /// Adam's state for each of φ's tensors (in `Phis.tensors` order).
      MetaOpt: OptState list
      /// Meta-iterations done.
      Iteration: int
      /// The trajectory under way (None: the next iteration starts a new one); shard 0's when sharded.
      Trajectory: Trajectory option
      /// The trajectories under way of shards 1 .. Shards − 1, in order (empty when Trajectory is None
      /// or the run has one shard).
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
      /// The curriculum stage (0: the run's horizon; MetaConfig.stages: the last stage has stalled and
      /// training is over).
      Stage: int
      /// Validations in a row without a new best.
      Stale: int }

module TrainState =
    let tensors (s: TrainState) =
        Phis.tensors s.Phis
        @ (s.MetaOpt |> List.collect OptState.tensors)
        @ (s.Trajectory |> Option.map Trajectory.tensors |> Option.defaultValue [])
        @ (s.ShardTrajectories |> List.collect Trajectory.tensors)
        @ Phis.tensors s.Best

    let dispose (s: TrainState) = Scope.disposeReplaced (tensors s) []

    /// True when the fault policy stopped training.
    let failed (cfg: MetaConfig) (s: TrainState) = s.ConsecutiveFaults >= cfg.Faults.MaxConsecutive

/// What one meta-iteration reports.
type IterationReport =
    { Iteration: int
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
      Seconds: float }

/// Computes a meta-iteration's shards: given φ and each shard's trajectory (in shard order), each
/// shard's L(φ), dL/dφ (in `Phis.tensors` order) and trajectory carried on, in the same order.
type ShardCompute = Phi list -> Trajectory list -> (Tensor * Tensor list * Trajectory) list

module Shard =
    /// The seed of shard k's meta-training problems: shard 0's is the run's, so that a run of one
    /// shard is the unsharded run.
    let seed (cfg: MetaConfig) (k: int) : int64 =
        if k = 0 then cfg.Seed else Seeds.derive cfg.Seed 0x5348415244UL (int64 k)

    /// Functions in each shard's problem.
    let functions (cfg: MetaConfig) = cfg.BatchFunctions / cfg.Shards

    /// Shard k's meta-training problem number `index` (see TaskSpec.trainProblem), its coordinates
    /// randomly scaled when cfg.RandomScaling > 0 (the factors drawn from the same seed and counter).
    let problem (cfg: MetaConfig) (data: TaskData) (k: int) (index: int64) : Problem =
        let p = TaskSpec.trainProblem data cfg.Task (seed cfg k) index (functions cfg) (MetaConfig.maxHorizon cfg) (DeviceChoice.resolve cfg.Device) cfg.DType
        if cfg.RandomScaling = 0.0 then p
        else
            use gen = Seeds.generator (seed cfg k) 0x5CA1EUL index
            let u = torch.rand(p.Theta0.shape, dtype = torch.ScalarType.Float64, generator = gen)
            let c = u.Mul(2.0 * cfg.RandomScaling).Sub(float cfg.RandomScaling).exp().to_type(p.Theta0.dtype).``to``(p.Theta0.device)
            Problem.scaled c p

    /// The teacher of imitation trajectories: Adam at the configured learning rate.
    let teacher (cfg: MetaConfig) = Baselines.adam cfg.Imitation.Lr 0.9 0.999 1e-8

    /// Whether shard k's trajectory number `index` imitates Adam (drawn from the shard's seed and the
    /// counter; never when the probability is 0).
    let imitating (cfg: MetaConfig) (k: int) (index: int64) =
        cfg.Imitation.Probability > 0.0
        && (use gen = Seeds.generator (seed cfg k) 0x494D4954UL index
            torch.rand([| 1L |], dtype = torch.ScalarType.Float64, generator = gen).ToDouble() < cfg.Imitation.Probability)

    /// The optimizer of shard k's trajectory `index`: m_φ, or m_φ beside Adam when it imitates.
    let optimizer (cfg: MetaConfig) (backend: Backend) (phis: Phi list) (k: int) (index: int64) : Optimizer =
        let learned = TaskSpec.learned backend cfg.Task phis
        if imitating cfg k index then Imitation.optimizer learned (teacher cfg) else learned

    /// One shard's truncation in this process: `MetaGradient.compute` (or, on an imitation trajectory,
    /// `Imitation.metaGradient`) with libtorch's step threads.
    let computeOne (cfg: MetaConfig) (phis: Phi list) (tr: Trajectory) : Tensor * Tensor list * Trajectory =
        let backend = Backend.resolve cfg.Backend
        Backend.inSteps backend (fun () ->
            if Imitation.applies tr then
                Imitation.metaGradient cfg.Unroll (TaskSpec.learned backend cfg.Task phis) (teacher cfg) (Phis.tensors phis) tr
            else MetaGradient.compute backend cfg.Unroll cfg.Task phis tr)

    /// Every shard in this process, one after another.
    let local (cfg: MetaConfig) : ShardCompute = fun phis trs -> trs |> List.map (computeOne cfg phis)

    /// The shards' results as one: L and dL/dφ averaged over the shards, summed in shard order (one
    /// shard: its own, untouched).
    let reduce (results: (Tensor * Tensor list * Trajectory) list) : Tensor * Tensor list =
        match results with
        | [ l, g, _ ] -> l, g
        | (l0, g0, _) :: rest ->
            let k = float results.Length
            let l, g =
                rest |> List.fold (fun (l: Tensor, g) (l': Tensor, g', _) -> l.Add(l'), List.map2 (fun (a: Tensor) (b: Tensor) -> a.Add(b)) g g') (l0, g0)
            l.Div(k), g |> List.map (fun t -> t.Div(k))
        | [] -> invalidArg "results" "no shard"

module MetaTrain =
    /// The meta-optimizer: Adam on each of φ's tensors, at the given learning rate.
    let metaOptimizer (lr: float) = Baselines.adam lr 0.9 0.999 1e-8

    /// A detached copy of φ that requires grad (for keeping the best φ).
    let snapshot (phis: Phi list) = phis |> List.map (Phi.map (fun t -> t.detach().clone().requires_grad_(true)))

    /// The state before the first meta-iteration, from φ made by `phis` (inside the state's scope).
    let private startAt (cfg: MetaConfig) (phis: unit -> Phi list) : TrainState =
      match cfg.Task with
      | Custom t when cfg.Unroll.SecondOrder && not t.SecondOrder ->
          invalidArg "cfg" (sprintf "task '%s' gives f and ∇ only: meta-train it first order (second order needs ∂∇/∂θ)" t.Name)
      | _ -> ()
      Tensors.build TrainState.tensors (fun () ->
        let phis = phis ()
        let adam = metaOptimizer cfg.MetaLr
        { Phis = phis
          MetaOpt = Phis.tensors phis |> List.map (adam.Init 1)
          Iteration = 0
          Trajectory = None
          ShardTrajectories = []
          Trajectories = 0L
          Best = snapshot phis
          BestLoss = Double.PositiveInfinity
          BestIteration = 0
          MetaLr = cfg.MetaLr
          ConsecutiveFaults = 0
          Faults = 0
          Stage = 0
          Stale = 0 })

    let init (cfg: MetaConfig) : TrainState =
      startAt cfg (fun () ->
        let device = DeviceChoice.resolve cfg.Device
        use gen = Seeds.generator cfg.Seed 0UL 0L
        // one φ per coordinate group, drawn in turn from the same generator
        [ for _ in TaskSpec.groups cfg.Task -> Phi.init cfg.Lstm device cfg.DType gen ])

    /// One meta-iteration: one truncation of the current trajectory of every shard (starting new ones
    /// when needed), computed by `compute`, then one Adam step on φ. Pure in the state: the old state's
    /// tensors are left as they were (the caller disposes what it no longer needs).
    let stepWith (compute: ShardCompute) (cfg: MetaConfig) (data: TaskData) (s: TrainState) : TrainState * IterationReport =
        let sw = Stopwatch.StartNew()
        let backend = Backend.resolve cfg.Backend
        let trs =
            match s.Trajectory with
            | Some tr -> tr :: s.ShardTrajectories
            | None ->
                [ for k in 0 .. cfg.Shards - 1 ->
                    MetaLoss.start (Shard.optimizer cfg backend s.Phis k s.Trajectories) (Shard.problem cfg data k s.Trajectories) s.Trajectories ]
        let results = compute s.Phis trs
        if results.Length <> trs.Length then
            invalidOp (sprintf "the shard computation gave %d results for %d shards" results.Length trs.Length)
        let loss, grads = Shard.reduce results
        let carried = results |> List.map (fun (_, _, c) -> c)
        let lossValue = loss.ToDouble()
        let finite = Double.IsFinite lossValue && grads |> List.forall Tensors.isFinite
        let phi, metaOpt =
            if finite then
                use _ = torch.no_grad()
                let adam = metaOptimizer s.MetaLr
                let updated =
                    List.map3
                        (fun (p: Tensor) (g: Tensor) (o: OptState) ->
                            let struct (d, o') = adam.Update o g
                            (Update.apply p d).requires_grad_(true), o')
                        (Phis.tensors s.Phis) grads s.MetaOpt
                Phis.ofTensors cfg.Lstm s.Phis.Length (List.map fst updated), List.map snd updated
            else
                s.Phis, s.MetaOpt
        let first = List.head carried
        // after a fault θ may be unusable: the next iteration starts fresh trajectories
        let horizon = MetaConfig.horizon cfg s.Stage
        let finished = first.Step >= horizon || not finite
        let next =
            { s with
                Phis = phi
                MetaOpt = metaOpt
                Iteration = s.Iteration + 1
                Trajectory = if finished then None else Some first
                ShardTrajectories = if finished then [] else List.tail carried
                Trajectories = if s.Trajectory.IsNone then s.Trajectories + 1L else s.Trajectories
                MetaLr = if finite then s.MetaLr else s.MetaLr * cfg.Faults.LrFactor
                ConsecutiveFaults = if finite then 0 else s.ConsecutiveFaults + 1
                Faults = if finite then s.Faults else s.Faults + 1 }
        next,
        { Iteration = next.Iteration
          MetaLoss = lossValue
          TrainLoss = (match carried with [ c ] -> c.Loss | _ -> carried |> List.averageBy (fun c -> c.Loss))
          Trajectory = first.Index
          Step = first.Step
          Finite = finite
          Validation = None
          Horizon = horizon
          Seconds = sw.Elapsed.TotalSeconds }

    /// `stepWith` every shard in this process.
    let step (cfg: MetaConfig) (data: TaskData) (s: TrainState) : TrainState * IterationReport =
        stepWith (Shard.local cfg) cfg data s

    /// The validation problems: held-out functions from the portable stream (MNIST: networks on the
    /// training split, never the evaluation split).
    let validationProblem (cfg: MetaConfig) (data: TaskData) : Problem list =
        TaskSpec.heldOut data cfg.Task TrainSplit cfg.ValidationSeed cfg.ValidationFunctions (MetaConfig.maxHorizon cfg) (DeviceChoice.resolve cfg.Device) cfg.DType

    /// The mean of per-function losses over the validation problems (problems of different sizes, a
    /// mixture's, are averaged per problem); +∞ when not finite.
    let private meanOver (problems: Problem list) (full: float array) =
        let sizes = problems |> List.map (fun p -> p.Functions)
        let v =
            if List.distinct sizes |> List.length <= 1 then Evaluate.mean full
            else
                // problems of different sizes (a mixture's tasks): each problem's mean counts once
                let offsets = List.scan (+) 0 sizes
                List.map2 (fun o n -> Evaluate.mean full[o .. o + n - 1]) (List.take sizes.Length offsets) sizes |> List.average
        if Double.IsFinite v then v else Double.PositiveInfinity

    /// Mean f(θ_T) of m_φ over the validation problems at horizon T (each function's loss on all its data;
    /// problems of different sizes, a mixture's, are averaged per problem).
    let validateAt (cfg: MetaConfig) (horizon: int) (problems: Problem list) (phis: Phi list) =
        let r = Evaluate.run cfg.Backend (TaskSpec.learned cfg.Backend cfg.Task phis) problems horizon
        meanOver problems r.Full[horizon]

    let validateStage (cfg: MetaConfig) (stage: int) (problems: Problem list) (phis: Phi list) =
        let stage = min stage (MetaConfig.stages cfg - 1)
        if not cfg.Curriculum.ValidateAll || stage = 0 then validateAt cfg (MetaConfig.horizon cfg stage) problems phis
        else
            // one run to the stage's horizon, f taken at every horizon so far
            let horizons = [ for k in 0..stage -> MetaConfig.horizon cfg k ]
            let r = Evaluate.runAt cfg.Backend (TaskSpec.learned cfg.Backend cfg.Task phis) problems (List.last horizons) horizons
            let vs = horizons |> List.map (fun h -> meanOver problems r.Full[h])
            if vs |> List.forall (fun v -> Double.IsFinite v && v > 0.0) then exp (vs |> List.averageBy log)
            else Double.PositiveInfinity

    /// Mean f(θ_T) of m_φ over the validation problems at the run's horizon.
    let validate (cfg: MetaConfig) (problems: Problem list) (phis: Phi list) = validateAt cfg cfg.Horizon problems phis

    let initFrom (cfg: MetaConfig) (data: TaskData) (phis: Phi list) : Result<TrainState, string> =
      let groups = TaskSpec.groups cfg.Task
      let given = List.length phis
      if given <> 1 && given <> groups.Length then
          Error(sprintf "the starting optimizer has %d m_φ but task '%s' has %d coordinate groups (give 1, for all of them, or %d)"
                    given (TaskSpec.name cfg.Task) groups.Length groups.Length)
      else
      match phis |> List.tryFind (fun p -> p.Config <> cfg.Lstm) with
      | Some p ->
          Error(sprintf "the starting optimizer's m_φ (%d×%d %s, %s) is not the one configured (%d×%d %s, %s)"
                    p.Config.Layers p.Config.Hidden (Architecture.name p.Config.Architecture) (Preprocess.describe p.Config.Preprocessing)
                    cfg.Lstm.Layers cfg.Lstm.Hidden (Architecture.name cfg.Lstm.Architecture) (Preprocess.describe cfg.Lstm.Preprocessing))
      | None ->
          let device = DeviceChoice.resolve cfg.Device
          let copy (p: Phi) = p |> Phi.map (fun t -> t.detach().clone().``to``(cfg.DType).``to``(device).requires_grad_(true))
          let s = startAt cfg (fun () -> [ for k in 0 .. groups.Length - 1 -> copy (if given = 1 then phis.Head else phis[k]) ])
          if cfg.ValidateEvery = 0 then Ok s
          else
              // the starting φ is the one to beat: kept if training never validates better
              let problems = validationProblem cfg data
              try Ok { s with BestLoss = validate cfg problems s.Phis }
              finally problems |> List.iter Problem.dispose

    /// After Patience stale validations: the next curriculum stage from the best φ, with a fresh
    /// meta-optimizer, fresh trajectories and the best φ's validation at the new horizon as the loss
    /// to beat; after the last stage, the end of training.
    let private advance (cfg: MetaConfig) (problems: Problem list) (s: TrainState) : TrainState =
        if s.Stage + 1 < MetaConfig.stages cfg then
            let stage = s.Stage + 1
            let phis = snapshot s.Best
            let adam = metaOptimizer s.MetaLr
            { s with
                Stage = stage
                Phis = phis
                MetaOpt = Phis.tensors phis |> List.map (adam.Init 1)
                Trajectory = None
                ShardTrajectories = []
                BestLoss = validateStage cfg stage problems phis
                Stale = 0 }
        else
            { s with Stage = MetaConfig.stages cfg }

    /// One meta-iteration in its own dispose scope, with validation when it is due (keeping the best
    /// φ); the replaced state's tensors are disposed. `validation` is the held-out problem (None when
    /// cfg.ValidateEvery = 0: the last φ is then the one kept). With a curriculum, a stale validation may move
    /// training to its next stage.
    let iterateWith (compute: ShardCompute) (cfg: MetaConfig) (data: TaskData) (validation: Problem list option) (s: TrainState) : TrainState * IterationReport =
        let next, r =
            Scope.run (fun (n: TrainState, _) -> TrainState.tensors n) (fun () ->
                let n, r = stepWith compute cfg data s
                match validation with
                | Some vp when n.Iteration % cfg.ValidateEvery = 0 || n.Iteration = cfg.MetaIterations ->
                    let v = validateStage cfg n.Stage vp n.Phis
                    let n =
                        if v < n.BestLoss then
                            { n with Best = snapshot n.Phis; BestLoss = v; BestIteration = n.Iteration; Stale = 0 }
                        else { n with Stale = n.Stale + 1 }
                    let n =
                        if not cfg.Curriculum.Horizons.IsEmpty && n.Stale >= cfg.Curriculum.Patience then advance cfg vp n
                        else n
                    n, { r with Validation = Some v }
                | Some _ -> n, r
                | None -> { n with Best = snapshot n.Phis; BestIteration = n.Iteration }, r)
        Scope.disposeReplaced (TrainState.tensors s) (TrainState.tensors next)
        next, r

    /// `iterateWith` every shard in this process.
    let iterate (cfg: MetaConfig) (data: TaskData) (validation: Problem list option) (s: TrainState) : TrainState * IterationReport =
        iterateWith (Shard.local cfg) cfg data validation s

    /// True when training has nothing left to do: the budget is spent or the fault policy stopped it.
    let finished (cfg: MetaConfig) (s: TrainState) =
        s.Iteration >= cfg.MetaIterations || TrainState.failed cfg s || s.Stage >= MetaConfig.stages cfg

    /// Runs meta-iterations from `state` until cfg.MetaIterations are done, the fault policy stops
    /// training, or `stop ()` says so. `observe` sees every new state (valid until the next iteration)
    /// with its report. Returns the final state (its Best is the φ to keep).
    let runObserved (cfg: MetaConfig) (data: TaskData) (observe: TrainState -> IterationReport -> unit) (stop: unit -> bool) (state: TrainState) : TrainState =
        let validation = if cfg.ValidateEvery > 0 then Some(validationProblem cfg data) else None
        try
            let mutable s = state
            while not (finished cfg s) && not (stop ()) do
                let next, r = iterate cfg data validation s
                s <- next
                observe s r
            s
        finally
            validation |> Option.iter (List.iter Problem.dispose)
            FirstOrder.releaseWorkspace ()

    /// `runObserved` with a report callback only.
    let run (cfg: MetaConfig) (data: TaskData) (report: IterationReport -> unit) (stop: unit -> bool) (state: TrainState) : TrainState =
        runObserved cfg data (fun _ r -> report r) stop state
