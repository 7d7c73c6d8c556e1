/// The full meta-training state as bytes, for exact resume: φ, Adam's moments and step counts, the
/// iteration and trajectory counters, the mid-trajectory θ, ∇ and LSTM state, the best φ so far and its
/// validation loss, the fault counters and the metrics so far. Meta-training problems are not stored:
/// they are rebuilt from (seed, counter).
///
///   "L2LCKPT\n" | u32 version | u64 header length | u64 data length | header (UTF-8 JSON) | tensor data | SHA-256
///
/// The header names every tensor (`phi.0.w_ih.0`, `adam.phi.0.w_ih.0.m`, `traj.opt.lstm.h.0`, ...)
/// and records the settings the state belongs to, field by field; tensor data is the raw
/// little-endian values of each tensor listed in the header, in order; the SHA-256 covers every byte
/// before it. A state is rebuilt by name into the shapes the settings give (typed optimizer states),
/// and a checkpoint resumes only settings equal, as values, to those it records.
namespace L2L

open System
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open TorchSharp

/// One meta-iteration's numbers, as kept in a checkpoint.
type Metric =
    { Iteration: int
      MetaLoss: float
      TrainLoss: float
      /// NaN when the iteration was not validated.
      Validation: float }

type CheckpointError =
    | BadMagic
    | UnsupportedVersion of int
    | Truncated
    | ChecksumMismatch
    | Malformed of string

module CheckpointError =
    let describe =
        function
        | BadMagic -> "not a checkpoint (bad magic)"
        | UnsupportedVersion v -> sprintf "checkpoint format version %d is not supported" v
        | Truncated -> "truncated"
        | ChecksumMismatch -> "checksum mismatch (corrupt)"
        | Malformed m -> sprintf "malformed: %s" m

/// The header's fields, read by name: a field that is missing or of the wrong kind is an
/// InvalidDataException naming it (reported as a malformed checkpoint).
module private Field =
    let private bad (name: string) (what: string) = raise (InvalidDataException(sprintf "header field '%s' %s" name what))

    let get (e: JsonElement) (name: string) : JsonElement =
        if e.ValueKind <> JsonValueKind.Object then bad name "is inside something that is not an object"
        match e.TryGetProperty name with
        | true, v -> v
        | _ -> bad name "is missing"

    let int32 (e: JsonElement) (name: string) =
        let v = get e name
        match v.ValueKind, (if v.ValueKind = JsonValueKind.Number then v.TryGetInt32() else (false, 0)) with
        | JsonValueKind.Number, (true, x) -> x
        | _ -> bad name "is not a 32-bit integer"

    let int64 (e: JsonElement) (name: string) =
        let v = get e name
        match v.ValueKind, (if v.ValueKind = JsonValueKind.Number then v.TryGetInt64() else (false, 0L)) with
        | JsonValueKind.Number, (true, x) -> x
        | _ -> bad name "is not an integer"

    let double (e: JsonElement) (name: string) =
        let v = get e name
        if v.ValueKind = JsonValueKind.Number then v.GetDouble() else bad name "is not a number"

    let string (e: JsonElement) (name: string) =
        let v = get e name
        if v.ValueKind = JsonValueKind.String then v.GetString() else bad name "is not a string"

    let bool (e: JsonElement) (name: string) =
        match (get e name).ValueKind with
        | JsonValueKind.True -> true
        | JsonValueKind.False -> false
        | _ -> bad name "is not true or false"

    let array (e: JsonElement) (name: string) =
        let v = get e name
        if v.ValueKind = JsonValueKind.Array then [ for x in v.EnumerateArray() -> x ] else bad name "is not an array"

    /// The elements of an array field as 32-bit integers.
    let int32s (e: JsonElement) (name: string) =
        array e name
        |> List.map (fun x ->
            match x.ValueKind, (if x.ValueKind = JsonValueKind.Number then x.TryGetInt32() else (false, 0)) with
            | JsonValueKind.Number, (true, v) -> v
            | _ -> bad name "holds something that is not a 32-bit integer")

/// What must be equal between a checkpoint and the configuration resuming it: everything that
/// decides the state's shapes and the sequence of meta-training problems.
type CheckpointSettings =
    { Task: TaskSpec
      Lstm: LstmConfig
      Horizon: int
      Unroll: UnrollConfig
      BatchFunctions: int
      Shards: int
      RandomScaling: float
      Curriculum: Curriculum
      Imitation: ImitationConfig
      Seed: int64
      DType: string }

module CheckpointSettings =
    let ofConfig (cfg: MetaConfig) =
        { Task = cfg.Task
          Lstm = cfg.Lstm
          Horizon = cfg.Horizon
          Unroll = cfg.Unroll
          BatchFunctions = cfg.BatchFunctions
          Shards = cfg.Shards
          RandomScaling = cfg.RandomScaling
          Curriculum = cfg.Curriculum
          Imitation = cfg.Imitation
          Seed = cfg.Seed
          DType = string cfg.DType }

    let write (w: Utf8JsonWriter) (s: CheckpointSettings) =
        w.WriteStartObject("settings")
        w.WriteStartObject("task")
        w.WriteString("name", TaskSpec.name s.Task)
        let ints (name: string) (xs: int list) =
            w.WriteStartArray(name)
            for x in xs do
                w.WriteNumberValue(x)
            w.WriteEndArray()
        match s.Task with
        | Quadratic d -> w.WriteNumber("dim", d)
        | Mlp m ->
            ints "hidden" m.Hidden
            w.WriteString("activation", (match m.Activation with Sigmoid -> "sigmoid" | Relu -> "relu"))
            w.WriteNumber("batch", m.Batch)
        | Conv c ->
            ints "channels" c.Channels
            w.WriteNumber("dense", c.Dense)
            w.WriteNumber("batch", c.Batch)
        | Custom c ->
            w.WriteBoolean("custom", true)
            w.WriteString("description", (if isNull c.Description then "" else c.Description))
            w.WriteNumber("coordinates", c.Coordinates)
            w.WriteStartArray("groups")
            for name, k in c.Groups do
                w.WriteStartObject()
                w.WriteString("name", name)
                w.WriteNumber("coordinates", k)
                w.WriteEndObject()
            w.WriteEndArray()
        w.WriteEndObject()
        w.WriteStartObject("lstm")
        // the paper's LSTM: the header as before the choice of architecture existed
        if s.Lstm.Architecture <> Architecture.Lstm then
            w.WriteString("architecture", Architecture.name s.Lstm.Architecture)
            w.WriteNumber("averaged", s.Lstm.Averaged)
            w.WriteNumber("reads", s.Lstm.Reads)
            w.WriteNumber("writes", s.Lstm.Writes)
            w.WriteNumber("memory_steps", s.Lstm.MemorySteps)
        w.WriteNumber("layers", s.Lstm.Layers)
        w.WriteNumber("hidden", s.Lstm.Hidden)
        match s.Lstm.Preprocessing with
        | LogSign p -> w.WriteNumber("logsign_p", p)
        | Identity -> w.WriteNull("logsign_p")
        | NormalizedMoments(betas, beta2) ->
            w.WriteNull("logsign_p")
            w.WriteStartObject("moments")
            w.WriteStartArray("betas")
            for b in betas do
                w.WriteNumberValue(b)
            w.WriteEndArray()
            w.WriteNumber("beta2", beta2)
            w.WriteEndObject()
        w.WriteNumber("out_scale", s.Lstm.OutScale)
        w.WriteNumber("forget_bias", s.Lstm.ForgetBias)
        w.WriteEndObject()
        w.WriteNumber("horizon", s.Horizon)
        w.WriteNumber("unroll", s.Unroll.Unroll)
        w.WriteString("weights", (match s.Unroll.Weights with Uniform -> "uniform" | LastOnly -> "last"))
        w.WriteBoolean("second_order", s.Unroll.SecondOrder)
        w.WriteBoolean("log_loss", s.Unroll.LogLoss)
        w.WriteNumber("batch_functions", s.BatchFunctions)
        // written only when sharded, so an unsharded run's checkpoint is what it always was
        if s.Shards <> 1 then w.WriteNumber("shards", s.Shards)
        if s.RandomScaling <> 0.0 then w.WriteNumber("random_scaling", s.RandomScaling)
        if not s.Curriculum.Horizons.IsEmpty then
            w.WriteStartObject("curriculum")
            ints "horizons" s.Curriculum.Horizons
            w.WriteNumber("patience", s.Curriculum.Patience)
            // written only when set, so that other runs' checkpoints are what they always were
            if s.Curriculum.ValidateAll then w.WriteBoolean("validate_all", true)
            w.WriteEndObject()
        if s.Imitation.Probability > 0.0 then
            w.WriteStartObject("imitation")
            w.WriteNumber("probability", s.Imitation.Probability)
            w.WriteNumber("lr", s.Imitation.Lr)
            w.WriteEndObject()
        w.WriteNumber("seed", s.Seed)
        w.WriteString("dtype", s.DType)
        w.WriteEndObject()

    /// Reads what `write` wrote (KeyNotFoundException / InvalidOperationException when a field is
    /// missing or of the wrong kind: the caller reports the checkpoint as malformed).
    let read (e: JsonElement) : CheckpointSettings =
        let t = (Field.get e "task")
        let ints (name: string) = Field.int32s t name
        let custom =
            match t.TryGetProperty("custom") with
            | true, v -> v.ValueKind = JsonValueKind.True
            | _ -> false
        let task =
            match Field.string t "name" with
            | name when custom ->
                let groups =
                    [ for g in (Field.get t "groups").EnumerateArray() -> Field.string g "name", Field.int32 g "coordinates" ]
                Custom(CustomTask.recorded name (Field.string t "description") (Field.int32 t "coordinates") groups)
            | "quadratic" -> Quadratic(Field.int32 t "dim")
            | "mnist" ->
                Mlp
                    { Hidden = ints "hidden"
                      Activation =
                        match Field.string t "activation" with
                        | "relu" -> Relu
                        | "sigmoid" -> Sigmoid
                        | other -> raise (InvalidDataException(sprintf "header field 'activation' is '%s', not sigmoid or relu" other))
                      Batch = Field.int32 t "batch" }
            | "mnist-conv" -> Conv { Channels = ints "channels"; Dense = Field.int32 t "dense"; Batch = Field.int32 t "batch" }
            | other -> raise (InvalidDataException(sprintf "unknown task '%s'" other))
        let l = (Field.get e "lstm")
        // fields later than the first checkpoints: absent means 0
        let orZero (o: JsonElement) (name: string) = match o.TryGetProperty name with | true, _ -> Field.int32 o name | _ -> 0
        let p = (Field.get l "logsign_p")
        { Task = task
          Lstm =
            // checkpoints written before m_φ had a choice of architecture hold the LSTM's
            { Architecture =
                match l.TryGetProperty "architecture" with
                | true, _ ->
                    match Architecture.parse (Field.string l "architecture") with
                    | Ok a -> a
                    | Error e -> raise (InvalidDataException(sprintf "header field 'architecture': %s" e))
                | _ -> Architecture.Lstm
              Layers = Field.int32 l "layers"
              Hidden = Field.int32 l "hidden"
              Preprocessing =
                match l.TryGetProperty "moments" with
                | true, m -> NormalizedMoments([ for b in (Field.get m "betas").EnumerateArray() -> b.GetDouble() ], Field.double m "beta2")
                | _ -> if p.ValueKind = JsonValueKind.Null then Identity else LogSign(Field.double l "logsign_p")
              OutScale = Field.double l "out_scale"
              ForgetBias = Field.double l "forget_bias"
              Averaged = orZero l "averaged"
              Reads = orZero l "reads"
              Writes = orZero l "writes"
              MemorySteps = orZero l "memory_steps" }
          Horizon = Field.int32 e "horizon"
          Unroll =
            { Unroll = Field.int32 e "unroll"
              Weights =
                match Field.string e "weights" with
                | "last" -> LastOnly
                | "uniform" -> Uniform
                | other -> raise (InvalidDataException(sprintf "header field 'weights' is '%s', not uniform or last" other))
              SecondOrder = Field.bool e "second_order"
              LogLoss = Field.bool e "log_loss" }
          BatchFunctions = Field.int32 e "batch_functions"
          Shards = (match e.TryGetProperty "shards" with | true, _ -> Field.int32 e "shards" | _ -> 1)
          RandomScaling = (match e.TryGetProperty "random_scaling" with | true, _ -> Field.double e "random_scaling" | _ -> 0.0)
          Curriculum =
            match e.TryGetProperty "curriculum" with
            | true, c ->
                { Horizons = Field.int32s c "horizons"
                  Patience = Field.int32 c "patience"
                  ValidateAll = (match c.TryGetProperty "validate_all" with | true, v -> v.GetBoolean() | _ -> false) }
            | _ -> Curriculum.none
          Imitation =
            match e.TryGetProperty "imitation" with
            | true, m -> { Probability = Field.double m "probability"; Lr = Field.double m "lr" }
            | _ -> ImitationConfig.none
          Seed = Field.int64 e "seed"
          DType = Field.string e "dtype" }

    /// The fields in which two settings differ, by name.
    let differences (a: CheckpointSettings) (b: CheckpointSettings) : string list =
        [ if a.Task <> b.Task then "task"
          if a.Lstm <> b.Lstm then "optimizer"
          if a.Horizon <> b.Horizon then "horizon"
          if a.Unroll <> b.Unroll then "unroll"
          if a.BatchFunctions <> b.BatchFunctions then "batch functions"
          if a.Shards <> b.Shards then "shards"
          if a.RandomScaling <> b.RandomScaling then "random scaling"
          if a.Curriculum <> b.Curriculum then "curriculum"
          // the learning rate matters only when there is imitation
          if a.Imitation.Probability <> b.Imitation.Probability || (a.Imitation.Probability > 0.0 && a.Imitation.Lr <> b.Imitation.Lr) then "imitation"
          if a.Seed <> b.Seed then "seed"
          if a.DType <> b.DType then "dtype" ]

module Checkpoint =
    let private magic = Encoding.ASCII.GetBytes "L2LCKPT\n"

    [<Literal>]
    let Version = 2

    /// The state's tensors by name (see the format above), for a configuration of `layers` layers.
    let private stateTensors (cfg: MetaConfig) (s: TrainState) : (string * Tensor) list =
        let phiNames prefix (phis: Phi list) =
            [ for g, phi in List.indexed phis do
                  for name, t in List.zip (Phi.names cfg.Lstm) (Phi.tensors phi) -> sprintf "%s.%d.%s" prefix g name, t ]
        let phis = phiNames "phi" s.Phis
        [ yield! phis
          yield! phiNames "best" s.Best
          for (name, _), o in List.zip phis s.MetaOpt do
              yield! OptState.named ("adam." + name) o
          match s.Trajectory with
          | Some tr ->
              yield "traj.theta", tr.Theta
              yield "traj.grad", tr.Grad
              yield! OptState.named "traj.opt" tr.Opt
          | None -> ()
          // shards 1 .. K − 1: traj<k>.*
          for k, tr in List.indexed s.ShardTrajectories do
              yield sprintf "traj%d.theta" (k + 1), tr.Theta
              yield sprintf "traj%d.grad" (k + 1), tr.Grad
              yield! OptState.named (sprintf "traj%d.opt" (k + 1)) tr.Opt ]

    let private bytesOf (t: Tensor) : byte[] =
        Tensors.build (fun _ -> Seq.empty<Tensor>) (fun () ->
            let c = t.detach().cpu().contiguous()
            c.bytes.ToArray())

    let encode (cfg: MetaConfig) (s: TrainState) (metrics: Metric seq) : byte[] =
        let named = stateTensors cfg s
        let data = named |> List.map (snd >> bytesOf)
        let header =
            use ms = new MemoryStream()
            (
                use w = new Utf8JsonWriter(ms)
                let num (name: string) (v: float) =
                    if Double.IsFinite v then w.WriteNumber(name, v) else w.WriteNull(name)
                w.WriteStartObject()
                CheckpointSettings.write w (CheckpointSettings.ofConfig cfg)
                w.WriteNumber("iteration", s.Iteration)
                w.WriteNumber("trajectories", s.Trajectories)
                w.WriteNumber("meta_lr", s.MetaLr)
                w.WriteNumber("consecutive_faults", s.ConsecutiveFaults)
                w.WriteNumber("faults", s.Faults)
                num "best_loss" s.BestLoss
                w.WriteNumber("best_iteration", s.BestIteration)
                // the curriculum's position, written only when there is one
                if s.Stage <> 0 || s.Stale <> 0 then
                    w.WriteNumber("stage", s.Stage)
                    w.WriteNumber("stale", s.Stale)
                w.WriteStartArray("meta_opt_steps")
                for o in s.MetaOpt do
                    w.WriteNumberValue(o.Step)
                w.WriteEndArray()
                match s.Trajectory with
                | Some tr ->
                    w.WriteStartObject("trajectory")
                    w.WriteNumber("index", tr.Index)
                    w.WriteNumber("step", tr.Step)
                    num "loss" tr.Loss
                    w.WriteNumber("opt_step", tr.Opt.Step)
                    if not s.ShardTrajectories.IsEmpty then
                        w.WriteStartArray("shards")
                        for other in s.ShardTrajectories do
                            w.WriteStartObject()
                            num "loss" other.Loss
                            w.WriteNumber("opt_step", other.Opt.Step)
                            w.WriteEndObject()
                        w.WriteEndArray()
                    w.WriteEndObject()
                | None -> w.WriteNull("trajectory")
                w.WriteStartArray("tensors")
                for (name, t), b in List.zip named data do
                    w.WriteStartObject()
                    w.WriteString("name", name)
                    w.WriteStartArray("shape")
                    for d in t.shape do
                        w.WriteNumberValue(d)
                    w.WriteEndArray()
                    w.WriteNumber("bytes", b.Length)
                    w.WriteEndObject()
                w.WriteEndArray()
                let ms' = metrics |> Array.ofSeq
                w.WriteStartObject("metrics")
                for field, pick in [ "meta_loss", (fun m -> m.MetaLoss); "train_loss", (fun m -> m.TrainLoss); "validation", (fun m -> m.Validation) ] do
                    w.WriteStartArray(field)
                    for m in ms' do
                        let v = pick m
                        if Double.IsFinite v then w.WriteNumberValue(v) else w.WriteNullValue()
                    w.WriteEndArray()
                w.WriteStartArray("iteration")
                for m in ms' do
                    w.WriteNumberValue(m.Iteration)
                w.WriteEndArray()
                w.WriteEndObject()
                w.WriteEndObject()
            )
            ms.ToArray()
        use out = new MemoryStream()
        out.Write(magic, 0, magic.Length)
        let write (b: byte[]) = out.Write(b, 0, b.Length)
        write (BitConverter.GetBytes(uint32 Version))
        write (BitConverter.GetBytes(uint64 header.Length))
        write (BitConverter.GetBytes(uint64 (data |> List.sumBy (fun b -> int64 b.Length))))
        out.Write(header, 0, header.Length)
        for b in data do
            out.Write(b, 0, b.Length)
        let body = out.ToArray()
        Array.append body (SHA256.HashData body)

    /// Checks magic, version, length and checksum without building any tensor.
    let private preamble = magic.Length + 20

    let verify (bytes: byte[]) : Result<unit, CheckpointError> =
        if bytes.Length < magic.Length || bytes[0 .. magic.Length - 1] <> magic then Error BadMagic
        elif bytes.Length < preamble then Error Truncated
        else
            let version = int (BitConverter.ToUInt32(bytes, magic.Length))
            if version <> Version then Error(UnsupportedVersion version)
            else
                let headerLen = BitConverter.ToUInt64(bytes, magic.Length + 4)
                let dataLen = BitConverter.ToUInt64(bytes, magic.Length + 12)
                let expected = uint64 preamble + headerLen + dataLen + 32UL
                if uint64 bytes.Length < expected then Error Truncated
                elif uint64 bytes.Length > expected then Error ChecksumMismatch
                else
                    let body = bytes.AsSpan(0, bytes.Length - 32)
                    let sum = bytes.AsSpan(bytes.Length - 32)
                    if SHA256.HashData(body).AsSpan().SequenceEqual(sum) then Ok() else Error ChecksumMismatch

    /// The state in checkpoint bytes, for `cfg` (whose settings must equal those the checkpoint
    /// records) and the task's data (the trajectory's problem is rebuilt from its counter).
    let decode (cfg: MetaConfig) (data: TaskData) (bytes: byte[]) : Result<TrainState * Metric[], CheckpointError> =
        match verify bytes with
        | Error e -> Error e
        | Ok() ->
            try
                let headerLen = int (BitConverter.ToUInt64(bytes, magic.Length + 4))
                let headerStart = preamble
                use doc = JsonDocument.Parse(ReadOnlyMemory(bytes, headerStart, headerLen))
                let h = doc.RootElement
                let recorded = CheckpointSettings.read ((Field.get h "settings"))
                match CheckpointSettings.differences recorded (CheckpointSettings.ofConfig cfg) with
                | _ :: _ as differ ->
                    Error(Malformed(sprintf "it was written for other settings (%s differ)" (String.concat ", " differ)))
                | [] ->
                let device = DeviceChoice.resolve cfg.Device
                let mutable offset = headerStart + headerLen
                let raw =
                    [ for e in Field.array h "tensors" ->
                          let name = Field.string e "name"
                          let shape = Field.array e "shape" |> List.map (fun d -> if d.ValueKind = JsonValueKind.Number && fst (d.TryGetInt64()) then d.GetInt64() else raise (InvalidDataException(sprintf "tensor %s: its shape is not a list of integers" name))) |> Array.ofList
                          let n = Field.int32 e "bytes"
                          if n < 0 || int64 offset + int64 n > int64 (bytes.Length - 32) then
                              raise (InvalidDataException(sprintf "tensor %s: its %d bytes at byte offset %d run past the data section (which ends at %d)" name n offset (bytes.Length - 32)))
                          let start = offset
                          offset <- offset + n
                          name, (shape, start, n) ]
                    |> Map.ofList
                let numOr (e: JsonElement) (name: string) =
                    let v = Field.get e name
                    if v.ValueKind = JsonValueKind.Null then Double.PositiveInfinity else Field.double e name
                let groups = (TaskSpec.groups cfg.Task).Length
                let state =
                    Tensors.build TrainState.tensors (fun () ->
                        /// The tensor `name` of the shape of `like` (a template of the expected state).
                        let get (name: string) (like: Tensor) =
                            match raw.TryFind name with
                            | None -> raise (InvalidDataException(sprintf "tensor %s is missing" name))
                            | Some(shape, start, n) ->
                                if shape <> like.shape then
                                    raise (InvalidDataException(sprintf "tensor %s has shape %A, expected %A" name shape like.shape))
                                let t =
                                    if cfg.DType = torch.ScalarType.Float64 then
                                        torch.tensor(Array.init (n / 8) (fun i -> BitConverter.ToDouble(bytes, start + 8 * i)))
                                    else
                                        torch.tensor(Array.init (n / 4) (fun i -> BitConverter.ToSingle(bytes, start + 4 * i)))
                                if t.numel() <> like.numel() then
                                    raise (InvalidDataException(sprintf "tensor %s has %d values, expected %d" name (t.numel()) (like.numel())))
                                t.reshape(shape).to_type(like.dtype).``to``(device)
                        let leaf (t: Tensor) = t.requires_grad_(true)
                        // templates of the expected shapes: a fresh φ per group, and the states its
                        // optimizers give a θ of the task's size
                        use gen = Seeds.generator cfg.Seed 0UL 0L
                        let template = [ for _ in 1..groups -> Phi.init cfg.Lstm device cfg.DType gen ]
                        let phisNamed prefix =
                            template
                            |> List.mapi (fun g phi ->
                                Phi.ofTensors cfg.Lstm
                                    (List.map2 (fun name t -> leaf (get (sprintf "%s.%d.%s" prefix g name) t)) (Phi.names cfg.Lstm) (Phi.tensors phi)))
                        let phi = phisNamed "phi"
                        let best = phisNamed "best"
                        let steps = Field.int32s h "meta_opt_steps"
                        let names = [ for g in 0 .. groups - 1 do for n in Phi.names cfg.Lstm -> sprintf "phi.%d.%s" g n ]
                        if steps.Length <> names.Length then
                            raise (InvalidDataException(sprintf "%d meta-optimizer states, expected %d" steps.Length names.Length))
                        let adam = MetaTrain.metaOptimizer cfg.MetaLr
                        let metaOpt =
                            List.map3
                                (fun name (p: Tensor) st -> { OptState.mapNamed ("adam." + name) get (adam.Init 1 p) with Step = st })
                                names (Phis.tensors template) steps
                        let trajectories =
                            let t = (Field.get h "trajectory")
                            if t.ValueKind = JsonValueKind.Null then []
                            else
                                let index = Field.int64 t "index"
                                let step = Field.int32 t "step"
                                let others =
                                    match t.TryGetProperty "shards" with
                                    | true, _ -> Field.array t "shards"
                                    | _ -> []
                                if others.Length <> cfg.Shards - 1 then
                                    raise (InvalidDataException(sprintf "%d shard trajectories, expected %d" (others.Length + 1) cfg.Shards))
                                [ for k, e in List.indexed (t :: others) ->
                                    // shard k's problem, rebuilt from its counter; shard 0's tensors are traj.*
                                    let problem = Shard.problem cfg data k index
                                    let opt = Shard.optimizer cfg cfg.Backend template k index
                                    let prefix = if k = 0 then "traj" else sprintf "traj%d" k
                                    { Problem = problem
                                      Index = index
                                      Step = step
                                      Theta = (get (prefix + ".theta") problem.Theta0).requires_grad_(true)
                                      Grad = get (prefix + ".grad") problem.Theta0
                                      Opt = { OptState.mapNamed (prefix + ".opt") get (opt.Init problem.Functions problem.Theta0) with Step = Field.int32 e "opt_step" }
                                      Loss = numOr e "loss" } ]
                        { Phis = phi
                          MetaOpt = metaOpt
                          Iteration = Field.int32 h "iteration"
                          Trajectory = List.tryHead trajectories
                          ShardTrajectories = (match trajectories with _ :: rest -> rest | [] -> [])
                          Trajectories = Field.int64 h "trajectories"
                          Best = best
                          BestLoss = numOr h "best_loss"
                          BestIteration = Field.int32 h "best_iteration"
                          MetaLr = Field.double h "meta_lr"
                          ConsecutiveFaults = Field.int32 h "consecutive_faults"
                          Faults = Field.int32 h "faults"
                          Stage =
                            match h.TryGetProperty "stage" with
                            | true, _ ->
                                let stage = Field.int32 h "stage"
                                if stage < 0 || stage > MetaConfig.stages cfg then
                                    raise (InvalidDataException(sprintf "curriculum stage %d of a run of %d stages" stage (MetaConfig.stages cfg)))
                                stage
                            | _ -> 0
                          Stale = (match h.TryGetProperty "stale" with | true, _ -> Field.int32 h "stale" | _ -> 0) })
                let m = (Field.get h "metrics")
                let arr (name: string) =
                    [| for x in Field.array m name ->
                           match x.ValueKind with
                           | JsonValueKind.Null -> nan
                           | JsonValueKind.Number -> x.GetDouble()
                           | _ -> raise (InvalidDataException(sprintf "header field '%s' holds something that is not a number" name)) |]
                let its = Field.int32s m "iteration" |> Array.ofList
                let ml, tl, vl = arr "meta_loss", arr "train_loss", arr "validation"
                let metrics = Array.init its.Length (fun i -> { Iteration = its[i]; MetaLoss = ml[i]; TrainLoss = tl[i]; Validation = vl[i] })
                Ok(state, metrics)
            with
            | :? JsonException as e -> Error(Malformed e.Message)
            | :? Collections.Generic.KeyNotFoundException as e -> Error(Malformed e.Message)
            | :? InvalidDataException as e -> Error(Malformed e.Message)
            | :? InvalidOperationException as e -> Error(Malformed e.Message)
            | :? ArgumentException as e -> Error(Malformed e.Message)
            | :? FormatException as e -> Error(Malformed e.Message)
            | :? OverflowException as e -> Error(Malformed e.Message)
            | :? IndexOutOfRangeException as e -> Error(Malformed e.Message)
