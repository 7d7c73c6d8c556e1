/// The full meta-training state as bytes, for exact resume: φ, Adam's moments and step counts, the
/// iteration and trajectory counters, the mid-trajectory θ, ∇ and LSTM state, the best φ so far and its
/// validation loss, the fault counters and the metrics so far. Meta-training problems are not stored:
/// they are rebuilt from (seed, counter).
///
///   "L2LCKPT\n" | u32 version | u64 header length | u64 data length | header (UTF-8 JSON) | tensor data | SHA-256
///
/// Tensor data is the raw little-endian values of each tensor listed in the header, in order; the
/// SHA-256 covers every byte before it.
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

module Checkpoint =
    let private magic = Encoding.ASCII.GetBytes "L2LCKPT\n"

    [<Literal>]
    let Version = 1

    /// What must match between a checkpoint and the configuration resuming it.
    let fingerprint (cfg: MetaConfig) =
        sprintf "%s|%A|%A|T%d|U%d|B%d|S%d|%A|second-order:%b|%A|log:%b" (TaskSpec.name cfg.Task) cfg.Task cfg.Lstm cfg.Horizon
            cfg.Unroll.Unroll cfg.BatchFunctions cfg.Seed cfg.DType cfg.Unroll.SecondOrder cfg.Unroll.Weights cfg.Unroll.LogLoss

    let private stateTensors (s: TrainState) =
        [ yield! Phis.tensors s.Phis |> List.mapi (fun i t -> sprintf "phi.%d" i, t)
          yield! Phis.tensors s.Best |> List.mapi (fun i t -> sprintf "best.%d" i, t)
          for i, o in List.indexed s.MetaOpt do
              yield! o.Slots |> List.mapi (fun j t -> sprintf "adam.%d.%d" i j, t)
          match s.Trajectory with
          | Some tr ->
              yield "traj.theta", tr.Theta
              yield "traj.grad", tr.Grad
              yield! tr.Opt.Slots |> List.mapi (fun j t -> sprintf "traj.slot.%d" j, t)
          | None -> () ]

    let private bytesOf (t: Tensor) : byte[] =
        Tensors.build (fun _ -> Seq.empty<Tensor>) (fun () ->
            let c = t.detach().cpu().contiguous()
            c.bytes.ToArray())

    let encode (cfg: MetaConfig) (s: TrainState) (metrics: Metric seq) : byte[] =
        let named = stateTensors s
        let data = named |> List.map (snd >> bytesOf)
        let header =
            use ms = new MemoryStream()
            (
                use w = new Utf8JsonWriter(ms)
                let num (name: string) (v: float) =
                    if Double.IsFinite v then w.WriteNumber(name, v) else w.WriteNull(name)
                w.WriteStartObject()
                w.WriteString("fingerprint", fingerprint cfg)
                w.WriteNumber("iteration", s.Iteration)
                w.WriteNumber("trajectories", s.Trajectories)
                w.WriteNumber("meta_lr", s.MetaLr)
                w.WriteNumber("consecutive_faults", s.ConsecutiveFaults)
                w.WriteNumber("faults", s.Faults)
                num "best_loss" s.BestLoss
                w.WriteNumber("best_iteration", s.BestIteration)
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

    let decode (cfg: MetaConfig) (bytes: byte[]) : Result<TrainState * Metric[], CheckpointError> =
        match verify bytes with
        | Error e -> Error e
        | Ok() ->
            try
                let headerLen = int (BitConverter.ToUInt64(bytes, magic.Length + 4))
                let headerStart = preamble
                use doc = JsonDocument.Parse(ReadOnlyMemory(bytes, headerStart, headerLen))
                let h = doc.RootElement
                let fp = h.GetProperty("fingerprint").GetString()
                if fp <> fingerprint cfg then
                    Error(Malformed "it was written for other settings (task, optimizer, horizon, unroll, batch or seed differ)")
                else
                let device = DeviceChoice.resolve cfg.Device
                let mutable offset = headerStart + headerLen
                let tensors =
                    Tensors.build (fun (m: Map<string, Tensor>) -> m |> Map.toSeq |> Seq.map snd) (fun () ->
                        [ for e in h.GetProperty("tensors").EnumerateArray() ->
                              let name = e.GetProperty("name").GetString()
                              let shape = [| for d in e.GetProperty("shape").EnumerateArray() -> d.GetInt64() |]
                              let n = e.GetProperty("bytes").GetInt32()
                              let raw = bytes[offset .. offset + n - 1]
                              offset <- offset + n
                              let t =
                                  if cfg.DType = torch.ScalarType.Float64 then
                                      torch.tensor(Array.init (n / 8) (fun i -> BitConverter.ToDouble(raw, 8 * i)))
                                  else
                                      torch.tensor(Array.init (n / 4) (fun i -> BitConverter.ToSingle(raw, 4 * i)))
                              name, t.reshape(shape).``to``(device) ]
                        |> Map.ofList)
                let get name =
                    match tensors.TryFind name with
                    | Some t -> t
                    | None -> raise (InvalidDataException(sprintf "tensor %s is missing" name))
                let groups = (TaskSpec.groups cfg.Task).Length
                let count = groups * (3 * cfg.Lstm.Layers + 2)
                let leaf (t: Tensor) = t.requires_grad_(true)
                let phi = Phis.ofTensors cfg.Lstm groups [ for i in 0 .. count - 1 -> leaf (get (sprintf "phi.%d" i)) ]
                let best = Phis.ofTensors cfg.Lstm groups [ for i in 0 .. count - 1 -> leaf (get (sprintf "best.%d" i)) ]
                let steps = [ for x in h.GetProperty("meta_opt_steps").EnumerateArray() -> x.GetInt32() ]
                let metaOpt = steps |> List.mapi (fun i st -> { Step = st; Slots = [ get (sprintf "adam.%d.0" i); get (sprintf "adam.%d.1" i) ] })
                let numOr (e: JsonElement) (name: string) =
                    let v = e.GetProperty(name)
                    if v.ValueKind = JsonValueKind.Null then Double.PositiveInfinity else v.GetDouble()
                let trajectory =
                    let t = h.GetProperty("trajectory")
                    if t.ValueKind = JsonValueKind.Null then None
                    else
                        let index = t.GetProperty("index").GetInt64()
                        let problem = TaskSpec.trainProblem cfg.Task cfg.Seed index cfg.BatchFunctions cfg.Horizon device cfg.DType
                        Some
                            { Problem = problem
                              Index = index
                              Step = t.GetProperty("step").GetInt32()
                              Theta = (get "traj.theta").requires_grad_(true)
                              Grad = get "traj.grad"
                              Opt = { Step = t.GetProperty("opt_step").GetInt32(); Slots = [ for j in 0 .. groups * 2 * cfg.Lstm.Layers - 1 -> get (sprintf "traj.slot.%d" j) ] }
                              Loss = numOr t "loss" }
                let m = h.GetProperty("metrics")
                let arr (name: string) = [| for x in m.GetProperty(name).EnumerateArray() -> if x.ValueKind = JsonValueKind.Null then nan else x.GetDouble() |]
                let its = [| for x in m.GetProperty("iteration").EnumerateArray() -> x.GetInt32() |]
                let ml, tl, vl = arr "meta_loss", arr "train_loss", arr "validation"
                let metrics = Array.init its.Length (fun i -> { Iteration = its[i]; MetaLoss = ml[i]; TrainLoss = tl[i]; Validation = vl[i] })
                let state =
                    { Phis = phi
                      MetaOpt = metaOpt
                      Iteration = h.GetProperty("iteration").GetInt32()
                      Trajectory = trajectory
                      Trajectories = h.GetProperty("trajectories").GetInt64()
                      Best = best
                      BestLoss = numOr h "best_loss"
                      BestIteration = h.GetProperty("best_iteration").GetInt32()
                      MetaLr = h.GetProperty("meta_lr").GetDouble()
                      ConsecutiveFaults = h.GetProperty("consecutive_faults").GetInt32()
                      Faults = h.GetProperty("faults").GetInt32() }
                Ok(state, metrics)
            with
            | :? JsonException as e -> Error(Malformed e.Message)
            | :? Collections.Generic.KeyNotFoundException as e -> Error(Malformed e.Message)
            | :? InvalidDataException as e -> Error(Malformed e.Message)
            | :? InvalidOperationException as e -> Error(Malformed e.Message)
            | :? ArgumentException as e -> Error(Malformed e.Message)
