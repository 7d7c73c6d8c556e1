/// Damaged input: every reader of a file meets truncations, flipped and inserted bytes, wrong header
/// fields, random JSON edits, wrong types, huge numbers and non-finite values, and answers with its
/// documented error, never an unhandled exception; a damaged checkpoint never resumes a different φ.
module L2L.Tests.FuzzTests

open System
open System.IO
open System.IO.Compression
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open L2L
open L2L.Tests.Helpers

/// A byte edit: (kind, position in millionths of the length, value).
type ByteEdit = int * int * int

let byteEdits : Gen<ByteEdit list> =
    Gen.map3 (fun k p v -> (k, p, v)) (Gen.choose (0, 4)) (Gen.choose (0, 999_999)) (Gen.choose (0, 255))
    |> Gen.listOf
    |> Gen.filter (fun l -> not l.IsEmpty)
    |> Gen.resize 4

/// Applies edits: 0 truncate, 1 flip a bit, 2 set a byte, 3 insert a byte, 4 delete a byte.
let applyBytes (bytes: byte[]) (edits: ByteEdit list) =
    edits
    |> List.fold
        (fun (b: byte[]) (kind, pos, value) ->
            if b.Length = 0 then b
            else
                let i = int (int64 pos * int64 b.Length / 1_000_000L)
                match kind with
                | 0 -> b[0 .. i - 1]
                | 1 ->
                    let c = Array.copy b
                    c[i] <- c[i] ^^^ (1uy <<< (value % 8))
                    c
                | 2 ->
                    let c = Array.copy b
                    c[i] <- byte value
                    c
                | 3 -> Array.concat [ b[0 .. i - 1]; [| byte value |]; b[i..] ]
                | _ -> Array.append b[0 .. i - 1] b[i + 1 ..])
        bytes

/// Values a JSON field may be replaced by: other types, huge and negative numbers, non-finite
/// values spelled as strings and as bare (invalid) JSON.
let replacements : (unit -> JsonNode) list =
    [ (fun () -> JsonValue.Create("x"))
      (fun () -> JsonValue.Create(""))
      (fun () -> JsonValue.Create(0))
      (fun () -> JsonValue.Create(-1))
      (fun () -> JsonValue.Create(1.5))
      (fun () -> JsonValue.Create(1e308))
      (fun () -> JsonValue.Create(-1e308))
      (fun () -> JsonValue.Create(3000000000L))
      (fun () -> JsonValue.Create(Int64.MaxValue))
      (fun () -> JsonValue.Create(true))
      (fun () -> JsonValue.Create("NaN"))
      (fun () -> JsonValue.Create("Infinity"))
      (fun () -> null)
      (fun () -> JsonArray())
      (fun () -> JsonArray(JsonValue.Create(1), JsonValue.Create("a")))
      (fun () -> JsonObject()) ]

/// A JSON edit: (kind, which node in millionths, which replacement).
let jsonEdits : Gen<(int * int * int) list> =
    Gen.map3 (fun k p v -> (k, p, v)) (Gen.choose (0, 3)) (Gen.choose (0, 999_999)) (Gen.choose (0, replacements.Length - 1))
    |> Gen.listOf
    |> Gen.filter (fun l -> not l.IsEmpty)
    |> Gen.resize 3

/// Every (parent, key or index) slot of a document, depth first.
let rec slots (node: JsonNode) : (JsonNode * Choice<string, int>) list =
    match node with
    | :? JsonObject as o -> [ for kv in List.ofSeq o -> (node, Choice1Of2 kv.Key) :: (if isNull kv.Value then [] else slots kv.Value) ] |> List.concat
    | :? JsonArray as a -> [ for i in 0 .. a.Count - 1 -> (node, Choice2Of2 i) :: (if isNull a[i] then [] else slots a[i]) ] |> List.concat
    | _ -> []

/// Applies edits to JSON text: 0 replace a value, 1 remove a field (or element), 2 rename a field,
/// 3 spell a number as NaN / Infinity / 1e400 in the text.
let applyJson (text: string) (edits: (int * int * int) list) =
    let root = JsonNode.Parse text
    let mutable bare: string option = None
    for kind, pos, v in edits do
        let all = slots root
        if not all.IsEmpty then
            let parent, key = all[int (int64 pos * int64 all.Length / 1_000_000L)]
            match kind, key with
            | 0, Choice1Of2 k -> parent.AsObject()[k] <- replacements[v] ()
            | 0, Choice2Of2 i -> parent.AsArray()[i] <- replacements[v] ()
            | 1, Choice1Of2 k -> parent.AsObject().Remove k |> ignore
            | 1, Choice2Of2 i -> parent.AsArray().RemoveAt i
            | 2, Choice1Of2 k ->
                let o = parent.AsObject()
                let value = o[k]
                o.Remove k |> ignore
                o[k + "_"] <- value
            | _, Choice1Of2 k -> bare <- Some k
            | _ -> ()
    let out = root.ToJsonString()
    match bare with
    | Some k ->
        // the first number of that field spelled as JSON cannot hold it
        let i = out.IndexOf("\"" + k + "\":")
        if i < 0 then out
        else
            let j = i + k.Length + 3
            if j < out.Length && (Char.IsDigit out[j] || out[j] = '-') then
                let e = out.IndexOfAny([| ','; '}'; ']' |], j)
                out.Substring(0, j) + [| "NaN"; "Infinity"; "1e400"; "-1e400" |][k.Length % 4] + out.Substring(e)
            else out
    | None -> out

let private fuzz (maxTest: int) = { FsCheckConfig.defaultConfig with maxTest = maxTest }

let be32 (v: int) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]
let images = Array.concat [ be32 2051; be32 3; be32 28; be32 28; Array.init (3 * 784) byte ]
let labels = Array.concat [ be32 2049; be32 3; [| 1uy; 7uy; 9uy |] ]

let gzip (b: byte[]) =
    use ms = new MemoryStream()
    (
        use gz = new GZipStream(ms, CompressionLevel.Fastest, true)
        gz.Write(b, 0, b.Length)
    )
    ms.ToArray()

/// The optimizer file of a small φ.
let optimizerText = lazy (scoped (fun () -> OptimizerFile.toJson (phiOf tinyLstm 3L f32) []))

let specText =
    """{"id":"q1","task":{"name":"mnist","hidden":[20,20],"activation":"relu","batch":64},"metaIterations":60,"seed":11,"checkpointEvery":5,"horizon":20,"unroll":5,"optimizer":{"layers":2,"hidden":8,"preprocessing":"logsign","p":10,"outScale":0.1},"faults":{"lrFactor":0.5,"maxConsecutive":3},"evaluation":{"steps":50,"runs":4,"tuneBaselines":true,"tuneRuns":2,"tuneSeed":5,"tuneSteps":20}}"""

/// A checkpoint taken mid-trajectory, and its φ.
let checkpointCfg = { smallMeta with MetaIterations = 6; ValidateEvery = 3 }

let checkpoint =
    lazy
        (let s = MetaTrain.run checkpointCfg TaskData.none ignore (fun () -> false) (MetaTrain.init checkpointCfg)
         let bytes = Checkpoint.encode checkpointCfg s []
         let phi = Phis.tensors s.Phis |> List.map toArray |> Array.concat
         TrainState.dispose s
         bytes, phi)

/// The checkpoint's parts: the header's JSON and the tensor data.
let split (bytes: byte[]) =
    let headerLen = int (BitConverter.ToUInt64(bytes, 12))
    let dataLen = int (BitConverter.ToUInt64(bytes, 20))
    Encoding.UTF8.GetString(bytes, 28, headerLen), bytes[28 + headerLen .. 28 + headerLen + dataLen - 1]

/// A checkpoint rebuilt around another header, with correct lengths and checksum: what only a
/// deliberate forgery or a bug could produce, so the decoder must check every field itself.
let resign (header: string) (data: byte[]) =
    let h = Encoding.UTF8.GetBytes header
    let body =
        Array.concat
            [ Encoding.ASCII.GetBytes "L2LCKPT\n"; BitConverter.GetBytes(uint32 Checkpoint.Version)
              BitConverter.GetBytes(uint64 h.Length); BitConverter.GetBytes(uint64 data.Length); h; data ]
    Array.append body (SHA256.HashData body)

/// Decoding damaged checkpoint bytes gives an error, or (only if nothing that matters changed)
/// the original φ.
let decodes (bytes: byte[]) (originalPhi: float[]) =
    match Checkpoint.decode checkpointCfg TaskData.none bytes with
    | Error _ -> true
    | Ok(s, _) ->
        let phi = Phis.tensors s.Phis |> List.map toArray |> Array.concat
        TrainState.dispose s
        phi = originalPhi

[<Tests>]
let tests =
    testList "fuzz" [
        testPropertyWithConfig (fuzz 2000) "IDX files: damaged bytes give an error naming the file, never an exception" <| fun () ->
            Prop.forAll (Arb.fromGen (Gen.zip byteEdits (Gen.elements [ 0; 1; 2; 3 ]))) (fun (edits, which) ->
                let damaged (b: byte[]) = applyBytes b edits
                match which with
                | 0 ->
                    match Idx.images "f.idx" (damaged images) with
                    | Ok(n, r, c, px) -> px.Length = n * r * c
                    | Error e -> e.Contains "f.idx"
                | 1 ->
                    match Idx.labels "f.idx" (damaged labels) with
                    | Ok(n, l) -> l.Length = n && l |> Array.forall (fun x -> x <= 9uy)
                    | Error e -> e.Contains "f.idx"
                | _ ->
                    // gzipped, through the whole reader: the four files are checked in turn
                    let files =
                        [ for name, _, _ in Mnist.files ->
                              name, "/data/" + name, (if which = 2 then damaged (gzip images) else gzip (damaged labels)) ]
                    match Mnist.parse files with
                    | Ok _ -> false
                    | Error e -> e.Contains "/data/")

        testPropertyWithConfig (fuzz 1000) "optimizer files: damaged text and edited fields give an error, never an exception" <| fun () ->
            Prop.forAll (Arb.fromGen (Gen.zip jsonEdits byteEdits)) (fun (edits, bytes) ->
                let text = applyJson optimizerText.Value edits
                let text = if (let k, _, _ = List.head bytes in k) < 2 then text else Encoding.UTF8.GetString(applyBytes (Encoding.UTF8.GetBytes text) bytes)
                scoped (fun () ->
                    match OptimizerFile.ofJsonGroups text torch.CPU f32 with
                    | Ok groups ->
                        groups |> List.forall (fun (_, _, phi) -> Phi.tensors phi |> List.forall Tensors.isFinite)
                    | Error e -> not (String.IsNullOrWhiteSpace e)))

        testPropertyWithConfig (fuzz 2000) "job specs: damaged text and edited fields give errors naming fields, never an exception" <| fun () ->
            Prop.forAll (Arb.fromGen (Gen.zip jsonEdits byteEdits)) (fun (edits, bytes) ->
                let text = applyJson specText edits
                let text = if (let k, _, _ = List.head bytes in k) < 2 then text else Encoding.UTF8.GetString(applyBytes (Encoding.UTF8.GetBytes text) bytes)
                match JobSpec.parse text with
                | Ok s -> s.Meta.MetaIterations >= 0 && (MetaConfig.validate s.Meta |> Result.isOk)
                | Error errs -> not errs.IsEmpty && errs |> List.forall (String.IsNullOrWhiteSpace >> not))

        testPropertyWithConfig (fuzz 500) "checkpoints: damaged bytes are refused, never an exception, never a different φ" <| fun () ->
            let bytes, phi = checkpoint.Value
            Prop.forAll (Arb.fromGen byteEdits) (fun edits ->
                let damaged = applyBytes bytes edits
                scoped (fun () -> if damaged = bytes then decodes damaged phi else Result.isError (Checkpoint.decode checkpointCfg TaskData.none damaged)))

        testPropertyWithConfig (fuzz 1000) "checkpoints: edited header fields behind a valid checksum give an error or the same φ, never an exception" <| fun () ->
            let bytes, phi = checkpoint.Value
            let header, data = split bytes
            Prop.forAll (Arb.fromGen jsonEdits) (fun edits ->
                let edited = applyJson header edits
                scoped (fun () -> decodes (resign edited data) phi))

        testPropertyWithConfig (fuzz 1000) "status files: damaged text and edited fields give an error naming the field, never an exception" <| fun () ->
            let status =
                JobStatus.toJson
                    { Id = "q1"; State = Running; Reason = Some "why"; Iteration = 3; MetaIterations = 9; BestValidation = Some 0.25
                      MetaLr = Some 0.003; Updated = DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero); Silo = Some "S127.0.0.1:11111:1" }
            Prop.forAll (Arb.fromGen (Gen.zip jsonEdits byteEdits)) (fun (edits, bytes) ->
                let text = applyJson status edits
                let text = if (let k, _, _ = List.head bytes in k) < 2 then text else Encoding.UTF8.GetString(applyBytes (Encoding.UTF8.GetBytes text) bytes)
                match JobStatus.parse text with
                | Ok s -> s.Iteration >= 0 && s.MetaIterations >= 0
                | Error e -> e.StartsWith "status field" || e.StartsWith "the status is")

        testCaseSequenced "configuration: random values of the environment's settings give an error naming the variable, never an exception" <| fun () ->
            let names = [ "L2L_TORCH_THREADS"; "L2L_STEP_TORCH_THREADS"; "L2L_MIN_CHUNK"; "L2L_META_GRADIENT"; "L2L_CELL"; "L2L_KERNEL_TEAM" ]
            let values = [ ""; " "; "0"; "1"; "-1"; "2"; "x"; "1.5"; "99999999999"; "NaN"; "autograd"; "closed-form"; "fused"; "reference"; "\u00e9" ]
            let rng = Random(7)
            try
                for _ in 1..300 do
                    let name = names[rng.Next names.Length]
                    let value = values[rng.Next values.Length]
                    Environment.SetEnvironmentVariable(name, value)
                    try
                        match Runtime.configure (Some 1) None with
                        | Ok s -> Expect.isOk (Backend.validate s.Backend) (sprintf "%s=%s: a valid backend" name value)
                        | Error e -> Expect.stringContains e name (sprintf "%s=%s: the error names the variable" name value)
                    finally
                        Environment.SetEnvironmentVariable(name, null)
            finally
                Runtime.configureOrFail (Some 1) None |> ignore
                L2L.Kernels.CoordinatewiseLstm.UseTeam <- true
                L2L.Kernels.CoordinatewiseLstm.MinChunk <- L2L.Kernels.CoordinatewiseLstm.DefaultMinChunk
    ]
