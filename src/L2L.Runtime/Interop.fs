/// A C#-facing facade over the core for the worker: one meta-training job as an object that owns its
/// tensors. Use a session from one thread at a time (TorchSharp's dispose scopes are per thread).
namespace L2L

open System
open System.Security.Cryptography
open System.Text.Json.Nodes
open TorchSharp

/// One meta-iteration's numbers for the shell.
type IterationInfo =
    { Iteration: int
      MetaLoss: float
      TrainLoss: float
      /// NaN when not validated at this iteration.
      Validation: float
      Finite: bool
      MetaLr: float
      /// Optimizee steps per second of this iteration.
      StepsPerSecond: float }

/// A checkpoint that cannot be used.
exception CheckpointRejected of CheckpointError

/// The data a job's task needs, loaded for a session (an exception naming the problem when it cannot be).
module private SessionData =
    let load (spec: JobSpec) (settings: RuntimeSettings) =
        match Datasets.forTask spec.Meta.Task settings.DataDirectory spec.Meta.Device ignore with
        | Ok d -> d
        | Error e -> raise (IO.InvalidDataException e)

[<Sealed; AllowNullLiteral>]
type JobSession private (spec: JobSpec, data: TaskData, initial: TrainState, metrics: ResizeArray<Metric>) =
    let cfg = spec.Meta
    let mutable state = initial
    let mutable disposed = false
    let mutable compute = Shard.local cfg
    let validation = if cfg.ValidateEvery > 0 then Some(MetaTrain.validationProblem cfg data) else None

    /// Parses and validates a spec (the errors, each naming its field, as an exception message).
    static member ParseSpec(text: string) : JobSpec = JobSession.ParseSpec(text, [])

    /// ParseSpec with tasks of one's own (TaskCatalog.load) known by name.
    static member ParseSpec(text: string, catalog: TaskSpec seq) : JobSpec =
        match JobSpec.parseWith (List.ofSeq catalog) text with
        | Ok s -> s
        | Error errs -> raise (ArgumentException(String.concat "; " errs))

    /// The spec with the process's backend (how the worker computes; the spec says what).
    static member private WithBackend(spec: JobSpec, settings: RuntimeSettings) =
        { spec with
            Meta = { spec.Meta with Backend = settings.Backend }
            Evaluation = spec.Evaluation |> Option.map (fun e -> { e with Backend = settings.Backend }) }

    /// A fresh job (its data loaded from the settings' data directory).
    static member Start(spec: JobSpec, settings: RuntimeSettings) =
        let spec = JobSession.WithBackend(spec, settings)
        let data = SessionData.load spec settings
        let state =
            match spec.Init with
            | None -> MetaTrain.init spec.Meta
            | Some path ->
                let device = DeviceChoice.resolve spec.Meta.Device
                match OptimizerFile.loadGroups path device spec.Meta.DType with
                | Error e -> raise (ArgumentException(sprintf "init: %s" e))
                | Ok groups ->
                    try
                        match MetaTrain.initFrom spec.Meta data (groups |> List.map (fun (_, _, phi) -> phi)) with
                        | Ok s -> s
                        | Error e -> raise (ArgumentException(sprintf "init %s: %s" path e))
                    finally
                        OptimizerFile.disposeGroups groups
        new JobSession(spec, data, state, ResizeArray())

    /// A job resumed from checkpoint bytes; throws CheckpointRejected when they cannot be used.
    static member Resume(spec: JobSpec, settings: RuntimeSettings, checkpoint: byte[]) =
        let spec = JobSession.WithBackend(spec, settings)
        let data = SessionData.load spec settings
        match Checkpoint.decode spec.Meta data checkpoint with
        | Ok(s, m) -> new JobSession(spec, data, s, ResizeArray m)
        | Error e -> raise (CheckpointRejected e)

    /// Checks checkpoint bytes (magic, version, checksum) without loading them.
    static member Verify(checkpoint: byte[]) : string =
        match Checkpoint.verify checkpoint with
        | Ok() -> null
        | Error e -> CheckpointError.describe e

    static member Describe(e: CheckpointError) = CheckpointError.describe e

    /// The format version of checkpoint bytes when it is one this build does not read (an older
    /// or newer one), else 0: such a checkpoint is not damaged, and is kept.
    static member OtherFormatVersion(checkpoint: byte[]) : int =
        match Checkpoint.verify checkpoint with
        | Error(UnsupportedVersion v) -> v
        | _ -> 0

    member _.Spec = spec
    member _.Iteration = state.Iteration
    member _.MetaIterations = cfg.MetaIterations
    member _.BestLoss = state.BestLoss
    member _.BestIteration = state.BestIteration
    member _.MetaLr = state.MetaLr
    member _.Faults = state.Faults
    member _.IsDone = MetaTrain.finished cfg state
    member _.HasFailed = TrainState.failed cfg state

    member _.FailureReason =
        if TrainState.failed cfg state then
            sprintf "%d consecutive meta-iterations with a non-finite loss or meta-gradient (meta-lr reduced to %g)" state.ConsecutiveFaults state.MetaLr
        else null

    /// The job's shards (spec field distributed.shards; 1 when absent).
    member _.Shards = cfg.Shards

    /// Computes the shards of every later meta-iteration with `run`, which is given each shard's work
    /// (ShardWire, in shard order) and gives each one's result in the same order, wherever it computes
    /// them (a cluster's silos: ShardService.Compute there). Until then they are computed in turn here;
    /// either way the run is the same, bit for bit.
    member _.UseShards(run: Func<byte[][], byte[][]>) =
        compute <- ShardWire.remote cfg run.Invoke

    /// Runs one meta-iteration.
    member _.Step() : IterationInfo =
        let next, r = MetaTrain.iterateWith compute cfg data validation state
        state <- next
        let m =
            { Iteration = r.Iteration
              MetaLoss = r.MetaLoss
              TrainLoss = r.TrainLoss
              Validation = r.Validation |> Option.defaultValue nan }
        metrics.Add m
        { Iteration = r.Iteration
          MetaLoss = r.MetaLoss
          TrainLoss = r.TrainLoss
          Validation = m.Validation
          Finite = r.Finite
          MetaLr = next.MetaLr
          StepsPerSecond = if r.Seconds > 0.0 then float cfg.Unroll.Unroll / r.Seconds else nan }

    /// The full state as checkpoint bytes.
    member _.Checkpoint() : byte[] = Checkpoint.encode cfg state metrics

    /// SHA-256 (hex) of the current φ's values: equal for bit-identical φ.
    member _.PhiSha256() : string =
        let bytes =
            Phis.tensors state.Phis
            |> List.map (fun t -> Tensors.build (fun _ -> Seq.empty<Tensor>) (fun () -> t.detach().cpu().contiguous().bytes.ToArray()))
            |> Array.concat
        Convert.ToHexString(SHA256.HashData bytes).ToLowerInvariant()

    /// Writes the best φ to `path` (the optimizer file format).
    member _.SaveOptimizer(path: string) =
        OptimizerFile.saveFor path cfg.Task state.Best
            [ "task", JsonValue.Create(TaskSpec.name cfg.Task)
              "meta_iterations", JsonValue.Create(state.Iteration)
              "best_iteration", JsonValue.Create(state.BestIteration)
              "seed", JsonValue.Create(cfg.Seed)
              "init", (match spec.Init with Some path -> JsonValue.Create(path) :> JsonNode | None -> null) ]

    /// Runs the spec's evaluation on the best φ and writes `path` (the results format); false when the
    /// spec asks for none.
    member _.Evaluate(path: string, log: Action<string>) : bool =
        match spec.Evaluation with
        | None -> false
        | Some e ->
            let results = Evaluation.run e data state.Best log.Invoke
            for line in Report.table results do
                log.Invoke line
            ResultsFile.save path results []
            true

    interface IDisposable with
        member _.Dispose() =
            if not disposed then
                disposed <- true
                validation |> Option.iter (List.iter Problem.dispose)
                TrainState.dispose state

/// Computes shards of other processes' jobs (a cluster silo's shard grains): the job's spec says what
/// to compute, this process's settings how (its backend, its data directory). Data sets are loaded
/// once per task and kept. Safe to call from several threads at once.
[<Sealed>]
type ShardService(settings: RuntimeSettings, catalog: TaskSpec seq) =
    let catalog = List.ofSeq catalog
    let data = Collections.Concurrent.ConcurrentDictionary<string, Lazy<TaskData>>()

    /// Shard work bytes (ShardWire) of the job whose spec is `spec` (JSON) into result bytes.
    member _.Compute(spec: string, work: byte[]) : byte[] =
        let spec =
            match JobSpec.parseWith catalog spec with
            | Ok s -> { s with Meta = { s.Meta with Backend = settings.Backend } }
            | Error errs -> raise (ArgumentException(String.concat "; " errs))
        let key = sprintf "%s|%A" (TaskSpec.name spec.Meta.Task) spec.Meta.Device
        let d =
            let entry = data.GetOrAdd(key, fun _ -> lazy (SessionData.load spec settings))
            try entry.Value
            with _ ->
                // a load that failed is tried again by the next call (the data may have arrived)
                data.TryRemove(Collections.Generic.KeyValuePair(key, entry)) |> ignore
                reraise ()
        ShardWire.compute spec.Meta d work
