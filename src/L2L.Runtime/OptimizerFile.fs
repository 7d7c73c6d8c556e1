/// The saved form of a trained optimizer: one JSON document, versioned, that records m_φ's
/// hyper-parameters and φ's values.
///
///   { "format": "l2l-functional/optimizer", "version": 1,
///     "config": { "layers": 2, "hidden": 20, "preprocessing": "logsign", "p": 10,
///                 "out_scale": 0.1, "forget_bias": 1 },
///     "layout": "PyTorch LSTMCell: w_ih [4H,in], w_hh [4H,H], b [4H] (b_ih + b_hh), gates i,f,g,o; w_out [1,H]; b_out [1]; row-major",
///     "params": { "w_ih.0": { "shape": [80, 2], "data": [ ... ] }, ..., "b_out": { ... } },
///     "training": { ...free-form numbers and strings describing how φ was trained... } }
///
/// Values are float32 written in shortest round-trip form, so save → load is exact. The files of
/// the reference PyTorch implementation (`--save-lstm`, no "format" field) load too.
namespace L2L

open System
open System.IO
open System.Text
open System.Text.Json
open TorchSharp

module OptimizerFile =
    [<Literal>]
    let Format = "l2l-functional/optimizer"

    [<Literal>]
    let Version = 1

    let private layout =
        "PyTorch LSTMCell: w_ih [4H,in], w_hh [4H,H], b [4H] (b_ih + b_hh), gates i,f,g,o; w_out [1,H]; b_out [1]; row-major"

    /// config, layout and params of one φ, into the object being written.
    let private writePhi (w: Utf8JsonWriter) (phi: Phi) =
        w.WriteStartObject("config")
        let c = phi.Config
        w.WriteNumber("layers", c.Layers)
        w.WriteNumber("hidden", c.Hidden)
        match c.Preprocessing with
        | LogSign p ->
            w.WriteString("preprocessing", "logsign")
            w.WriteNumber("p", p)
        | Identity -> w.WriteString("preprocessing", "none")
        w.WriteNumber("out_scale", c.OutScale)
        w.WriteNumber("forget_bias", c.ForgetBias)
        w.WriteEndObject()
        w.WriteString("layout", layout)
        w.WriteStartObject("params")
        for name, shape, t in List.zip3 (Phi.names c) (Phi.savedShapes c) (Phi.tensors phi) do
            w.WriteStartObject(name)
            w.WriteStartArray("shape")
            for d in shape do
                w.WriteNumberValue(d)
            w.WriteEndArray()
            w.WriteStartArray("data")
            let values =
                Tensors.build (fun _ -> Seq.empty<Tensor>) (fun () ->
                    t.detach().to_type(torch.ScalarType.Float32).cpu().contiguous().data<float32>().ToArray())
            for v in values do
                w.WriteNumberValue(v)
            w.WriteEndArray()
            w.WriteEndObject()
        w.WriteEndObject()

    /// The JSON text of a learned optimizer (with optional training metadata): one φ as above, or
    /// several, one per coordinate group, as "groups": [ { "name", "coordinates", "config", "layout",
    /// "params" }, ... ] in θ's order.
    let toJsonGroups (groups: (string * int * Phi) list) (training: (string * Nodes.JsonNode) list) : string =
        use ms = new MemoryStream()
        (
            use w = new Utf8JsonWriter(ms, JsonWriterOptions(Indented = false))
            w.WriteStartObject()
            w.WriteString("format", Format)
            w.WriteNumber("version", Version)
            match groups with
            | [ _, _, phi ] -> writePhi w phi
            | _ ->
                w.WriteStartArray("groups")
                for name, coordinates, phi in groups do
                    w.WriteStartObject()
                    w.WriteString("name", name)
                    w.WriteNumber("coordinates", coordinates)
                    writePhi w phi
                    w.WriteEndObject()
                w.WriteEndArray()
            if not training.IsEmpty then
                w.WriteStartObject("training")
                for k, v in training do
                    w.WritePropertyName(k)
                    if isNull v then w.WriteNullValue() else v.WriteTo(w)
                w.WriteEndObject()
            w.WriteEndObject()
        )
        Encoding.UTF8.GetString(ms.ToArray())

    /// The JSON text of φ (with optional training metadata).
    let toJson (phi: Phi) (training: (string * Nodes.JsonNode) list) : string =
        toJsonGroups [ "all", 0, phi ] training

    let private writeAtomic (path: string) (text: string) = AtomicFile.writeText path text |> ignore

    /// Writes φ to `path` atomically.
    let save (path: string) (phi: Phi) (training: (string * Nodes.JsonNode) list) =
        writeAtomic path (toJson phi training)

    /// Writes a learned optimizer of one or more groups (name, coordinates, φ) to `path` atomically.
    let saveGroups (path: string) (groups: (string * int * Phi) list) (training: (string * Nodes.JsonNode) list) =
        writeAtomic path (toJsonGroups groups training)

    let private tryProp (e: JsonElement) (name: string) =
        match e.TryGetProperty(name) with
        | true, v -> Some v
        | _ -> None

    /// Frees the tensors of loaded groups that will not be returned.
    let private disposeGroups (groups: (string * int * Phi) list) =
        for _, _, phi in groups do
            Phi.tensors phi |> List.iter (fun t -> t.Dispose())

    /// One φ from an object with "config" and "params"; `at` prefixes the field names in messages.
    let private phiOf (root: JsonElement) (at: string) (device: torch.Device) (dtype: torch.ScalarType) : Result<Phi, string> =
        let fail fmt = Printf.kprintf (fun m -> Error(at + m)) fmt
        match tryProp root "config", tryProp root "params" with
        | None, _ -> fail "missing 'config'"
        | _, None -> fail "missing 'params'"
        | Some cfg, Some ps ->
            let num name dflt =
                match tryProp cfg name with
                | Some v when v.ValueKind = JsonValueKind.Number -> Ok(v.GetDouble())
                | Some _ -> Error(at + sprintf "config.%s is not a number" name)
                | None ->
                    match dflt with
                    | Some d -> Ok d
                    | None -> Error(at + sprintf "config.%s is missing" name)
            let pre =
                match tryProp cfg "preprocessing" |> Option.orElse (tryProp cfg "preproc") with
                | Some v when v.ValueKind = JsonValueKind.String && v.GetString() = "logsign" ->
                    num "p" (Some 10.0) |> Result.map LogSign
                | Some v when v.ValueKind = JsonValueKind.String && v.GetString() = "none" -> Ok Identity
                | Some v -> Error(at + sprintf "config.preprocessing '%s' is not 'logsign' or 'none'" (v.ToString()))
                | None -> Error(at + "config.preprocessing is missing")
            match num "layers" None, num "hidden" None, pre, num "out_scale" None, num "forget_bias" (Some 1.0) with
            | Error e, _, _, _, _
            | _, Error e, _, _, _
            | _, _, Error e, _, _
            | _, _, _, Error e, _
            | _, _, _, _, Error e -> Error e
            | Ok layers, Ok hidden, Ok pre, Ok outScale, Ok forget ->
                if not (Double.IsFinite layers && Double.IsFinite hidden) || layers <> floor layers || hidden <> floor hidden
                   || abs layers > 1e6 || abs hidden > 1e9 then
                    fail "config.layers and config.hidden must be integers"
                else
                let c =
                    { Layers = int layers
                      Hidden = int hidden
                      Preprocessing = pre
                      OutScale = outScale
                      ForgetBias = forget }
                match LstmConfig.validate c with
                | Error errs -> fail "config: %s" (String.concat "; " errs)
                | Ok c ->
                    let read (name: string) (shape: int64[]) : Result<float32[], string> =
                        match tryProp ps name with
                        | None -> fail "params.%s is missing" name
                        | Some p ->
                            match tryProp p "shape", tryProp p "data" with
                            | Some s, Some d when s.ValueKind = JsonValueKind.Array && d.ValueKind = JsonValueKind.Array ->
                                let got = [| for x in s.EnumerateArray() -> x.GetInt64() |]
                                if got <> shape then
                                    fail "params.%s has shape [%s], expected [%s]" name
                                        (got |> Array.map string |> String.concat ",")
                                        (shape |> Array.map string |> String.concat ",")
                                else
                                    let values = [| for x in d.EnumerateArray() -> if x.ValueKind = JsonValueKind.Number then x.GetDouble() else nan |]
                                    let expected = shape |> Array.fold (*) 1L
                                    if int64 values.Length <> expected then
                                        fail "params.%s has %d values, expected %d" name values.Length expected
                                    elif values |> Array.exists (Double.IsFinite >> not) then
                                        fail "params.%s holds a non-finite or non-numeric value" name
                                    elif values |> Array.exists (fun v -> not (Single.IsFinite(float32 v))) then
                                        fail "params.%s holds a value beyond float32's range" name
                                    else Ok(values |> Array.map float32)
                            | _ -> fail "params.%s needs 'shape' and 'data' arrays" name
                    let results = List.map2 read (Phi.names c) (Phi.savedShapes c)
                    match results |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
                    | Some e -> Error e
                    | None ->
                        let h = int64 c.Hidden
                        let internalShapes =
                            [ for k in 0 .. c.Layers - 1 do
                                  let inputs = if k = 0 then int64 (Preprocess.features c.Preprocessing) else h
                                  yield [| 4L * h; inputs |]
                                  yield [| 4L * h; h |]
                                  yield [| 4L * h; 1L |]
                              yield [| 1L; h |]
                              yield [| 1L; 1L |] ]
                        let tensors =
                          Tensors.build id (fun () ->
                            List.map2
                                (fun r (shape: int64[]) ->
                                    match r with
                                    | Ok (data: float32[]) ->
                                        let t = torch.tensor(data).reshape(shape)
                                        t.to_type(dtype).``to``(device).requires_grad_(true)
                                    | Error _ -> failwith "unreachable")
                                results internalShapes)
                        Ok(Phi.ofTensors c tensors)

    /// Reads a learned optimizer from JSON text: its groups (name, coordinates, φ), one group named
    /// "all" (coordinates 0: any number) for a single φ. Every problem is reported as a message
    /// naming the field.
    let ofJsonGroups (text: string) (device: torch.Device) (dtype: torch.ScalarType) : Result<(string * int * Phi) list, string> =
        let fail fmt = Printf.kprintf Error fmt
        try
            use doc = JsonDocument.Parse(text)
            let root = doc.RootElement
            if root.ValueKind <> JsonValueKind.Object then fail "not a JSON object"
            else
            match tryProp root "format" with
            | Some f when f.ValueKind <> JsonValueKind.String || f.GetString() <> Format ->
                fail "format is '%s', expected '%s'" (f.ToString()) Format
            | _ ->
            match tryProp root "version" with
            | Some v when v.ValueKind <> JsonValueKind.Number || v.GetInt32() <> Version ->
                fail "version %s is not supported (this build reads version %d)" (v.ToString()) Version
            | _ ->
            match tryProp root "groups" with
            | None -> phiOf root "" device dtype |> Result.map (fun phi -> [ "all", 0, phi ])
            | Some gs when gs.ValueKind <> JsonValueKind.Array || gs.GetArrayLength() < 1 -> fail "'groups' must be a non-empty array"
            | Some gs ->
                let parsed =
                    [ for i, g in Seq.indexed (gs.EnumerateArray()) ->
                          let at = sprintf "groups[%d]." i
                          match tryProp g "name", tryProp g "coordinates" with
                          | Some n, Some k when n.ValueKind = JsonValueKind.String && k.ValueKind = JsonValueKind.Number && k.GetInt32() > 0 ->
                              phiOf g at device dtype |> Result.map (fun phi -> n.GetString(), k.GetInt32(), phi)
                          | _ -> Error(at + "needs a 'name' string and a positive 'coordinates' count") ]
                match parsed |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
                | Some e ->
                    disposeGroups (parsed |> List.choose Result.toOption)
                    Error e
                | None -> Ok(parsed |> List.map (function Ok g -> g | Error _ -> failwith "unreachable"))
        with
        | :? JsonException as e -> fail "not valid JSON (%s)" e.Message
        | :? InvalidOperationException as e -> fail "unexpected JSON value (%s)" e.Message
        | :? FormatException as e -> fail "unexpected JSON value (%s)" e.Message


    /// Reads a single φ from JSON text (a file of several groups is an error naming them).
    let ofJson (text: string) (device: torch.Device) (dtype: torch.ScalarType) : Result<Phi, string> =
        match ofJsonGroups text device dtype with
        | Ok [ _, _, phi ] -> Ok phi
        | Ok groups ->
            disposeGroups groups
            Error(sprintf "it holds %d learned optimizers (groups %s), one per coordinate group of its task; load it as groups"
                      groups.Length (groups |> List.map (fun (n, _, _) -> n) |> String.concat ", "))
        | Error e -> Error e

    let private readWith (parse: string -> Result<'a, string>) (path: string) : Result<'a, string> =
        if not (File.Exists path) then
            Error(sprintf "optimizer file '%s' does not exist" path)
        else
            let text =
                try Ok(File.ReadAllText path)
                with e -> Error(sprintf "optimizer file '%s' cannot be read: %s" path e.Message)
            text
            |> Result.bind parse
            |> Result.mapError (fun e -> if e.StartsWith "optimizer file" then e else sprintf "optimizer file '%s': %s" path e)

    /// Loads φ from a file; errors name the file and what is wrong.
    let load (path: string) (device: torch.Device) (dtype: torch.ScalarType) : Result<Phi, string> =
        readWith (fun t -> ofJson t device dtype) path

    /// Loads a learned optimizer of one or more groups from a file (see `ofJsonGroups`).
    let loadGroups (path: string) (device: torch.Device) (dtype: torch.ScalarType) : Result<(string * int * Phi) list, string> =
        readWith (fun t -> ofJsonGroups t device dtype) path

    /// The φ of each of `task`'s coordinate groups, from a loaded optimizer: a single φ serves a task
    /// of one group; a grouped file must name the task's groups with their sizes, in order.
    let forTask (task: TaskSpec) (groups: (string * int * Phi) list) : Result<Phi list, string> =
        let expected = TaskSpec.groups task
        match groups with
        | [ _, 0, phi ] when expected.Length = 1 -> Ok [ phi ]
        | _ when groups |> List.map (fun (n, k, _) -> n, k) = expected -> Ok(groups |> List.map (fun (_, _, p) -> p))
        | _ ->
            let show (gs: (string * int) list) = gs |> List.map (fun (n, k) -> if k = 0 then n else sprintf "%s (%d)" n k) |> String.concat ", "
            Error(sprintf "its optimizer groups [%s] do not match the task %s, whose coordinate groups are [%s]"
                      (show (groups |> List.map (fun (n, k, _) -> n, k))) (TaskSpec.describe task) (show expected))

    /// Writes the learned optimizer of `task` (one φ per coordinate group) to `path` atomically.
    let saveFor (path: string) (task: TaskSpec) (phis: Phi list) (training: (string * Nodes.JsonNode) list) =
        saveGroups path (List.map2 (fun (n, k) p -> n, k, p) (TaskSpec.groups task) phis) training

    /// Loads the learned optimizer of `task` from a file (one φ per coordinate group).
    let loadFor (path: string) (task: TaskSpec) (device: torch.Device) (dtype: torch.ScalarType) : Result<Phi list, string> =
        loadGroups path device dtype
        |> Result.bind (fun groups ->
            match forTask task groups with
            | Ok phis -> Ok phis
            | Error e ->
                disposeGroups groups
                Error(sprintf "optimizer file '%s': %s" path e))
