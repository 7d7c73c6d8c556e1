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
/// "architecture" is lstm (the default, written as no field), gru (GRUCell's layout: w_ih [3H,in], w_hh [3H,H],
/// b [3H], b_hn [H]), lstm-gac (the LSTM's tensors, and "averaged": the averaging cells per layer) or
/// ntm-bfgs (an LSTM+GAC controller: "averaged", "reads", "writes", "memory_steps"; w_ih takes the read
/// results after the gradient's features, and w_heads [R+2W,H], b_heads [R+2W] give the heads).
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

    let private layout (a: Architecture) =
        match a with
        | Architecture.Lstm ->
            "PyTorch LSTMCell: w_ih [4H,in], w_hh [4H,H], b [4H] (b_ih + b_hh), gates i,f,g,o; w_out [1,H]; b_out [1]; row-major"
        | Architecture.LstmGac ->
            "PyTorch LSTMCell: w_ih [4H,in], w_hh [4H,H], b [4H] (b_ih + b_hh), gates i,f,g,o; the first 'averaged' cells of each layer pass on the mean of h over a function's coordinates; w_out [1,H]; b_out [1]; row-major"
        | Architecture.Gru ->
            "PyTorch GRUCell: w_ih [3H,in], w_hh [3H,H], b [3H] (b_ih + b_hh for r and z, b_ih for n), b_hn [H] (b_hh of n), gates r,z,n; w_out [1,H]; b_out [1]; row-major"
        | Architecture.NtmBfgs ->
            "PyTorch LSTMCell controller: w_ih [4H,features+reads] (the last read results after the gradient's features), w_hh [4H,H], b [4H] (b_ih + b_hh), gates i,f,g,o; the first 'averaged' cells of each layer pass on the mean of h over a function's coordinates; w_out [1,H]; b_out [1]; heads w_heads [reads+2*writes,H], b_heads [reads+2*writes] (read vectors, then write vectors a, then b); row-major"

    /// config, layout and params of one φ, into the object being written. The paper's LSTM writes no
    /// "architecture" (absent means lstm): its files stay as they were before the choice existed.
    let private writeConfigBody (w: Utf8JsonWriter) (c: LstmConfig) =
        if c.Architecture <> Architecture.Lstm then w.WriteString("architecture", Architecture.name c.Architecture)
        if Architecture.averages c.Architecture then w.WriteNumber("averaged", c.Averaged)
        if c.Architecture = Architecture.NtmBfgs then
            w.WriteNumber("reads", c.Reads)
            w.WriteNumber("writes", c.Writes)
            w.WriteNumber("memory_steps", c.MemorySteps)
        w.WriteNumber("layers", c.Layers)
        w.WriteNumber("hidden", c.Hidden)
        match c.Preprocessing with
        | LogSign p ->
            w.WriteString("preprocessing", "logsign")
            w.WriteNumber("p", p)
        | Identity -> w.WriteString("preprocessing", "none")
        | NormalizedMoments(betas, beta2) ->
            w.WriteString("preprocessing", "moments")
            w.WriteStartArray("betas")
            for b in betas do
                w.WriteNumberValue(b)
            w.WriteEndArray()
            w.WriteNumber("beta2", beta2)
        w.WriteNumber("out_scale", c.OutScale)
        w.WriteNumber("forget_bias", c.ForgetBias)

    let private writePhi (w: Utf8JsonWriter) (phi: Phi) =
        w.WriteStartObject("config")
        let c = phi.Config
        writeConfigBody w c
        w.WriteEndObject()
        w.WriteString("layout", layout c.Architecture)
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

    /// Frees the tensors of loaded groups (those that will not be returned, or whose use is over).
    let disposeGroups (groups: (string * int * Phi) list) =
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
                | Some v when v.ValueKind = JsonValueKind.String && v.GetString() = "moments" ->
                    match tryProp cfg "betas" with
                    | Some b when b.ValueKind = JsonValueKind.Array && b.EnumerateArray() |> Seq.forall (fun x -> x.ValueKind = JsonValueKind.Number) ->
                        num "beta2" None
                        |> Result.map (fun beta2 -> NormalizedMoments([ for x in b.EnumerateArray() -> x.GetDouble() ], beta2))
                        |> Result.bind (fun pre ->
                            match Preprocess.problems pre with
                            | [] -> Ok pre
                            | e :: _ -> Error(at + "config: " + e))
                    | _ -> Error(at + "config.betas (the moments' time scales) is missing or not an array of numbers")
                | Some v -> Error(at + sprintf "config.preprocessing '%s' is not 'logsign', 'none' or 'moments'" (v.ToString()))
                | None -> Error(at + "config.preprocessing is missing")
            let arch =
                match tryProp cfg "architecture" with
                | None -> Ok Architecture.Lstm
                | Some v when v.ValueKind = JsonValueKind.String ->
                    Architecture.parse (v.GetString()) |> Result.mapError (fun e -> at + "config.architecture: " + e)
                | Some v -> Error(at + sprintf "config.architecture '%s' is not a string" (v.ToString()))
            match num "layers" None, num "hidden" None, pre, num "out_scale" None, num "forget_bias" (Some 1.0) with
            | Error e, _, _, _, _
            | _, Error e, _, _, _
            | _, _, Error e, _, _
            | _, _, _, Error e, _
            | _, _, _, _, Error e -> Error e
            | Ok layers, Ok hidden, Ok pre, Ok outScale, Ok forget ->
            let counts = [ "averaged"; "reads"; "writes"; "memory_steps" ] |> List.map (fun k -> num k (Some 0.0))
            match arch, counts |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
            | Error e, _
            | _, Some e -> Error e
            | Ok arch, None ->
                let counts = counts |> List.map (function Ok v -> v | Error _ -> nan)
                let averaged, reads, writes, memorySteps = counts[0], counts[1], counts[2], counts[3]
                let integral (v: float) = Double.IsFinite v && v = floor v && abs v <= 1e9
                if not (integral layers && integral hidden && List.forall integral counts) then
                    fail "config.layers, config.hidden, config.averaged, config.reads, config.writes and config.memory_steps must be integers"
                else
                let c =
                    { Architecture = arch
                      Layers = int layers
                      Hidden = int hidden
                      Preprocessing = pre
                      OutScale = outScale
                      ForgetBias = forget
                      Averaged = int averaged
                      Reads = int reads
                      Writes = int writes
                      MemorySteps = int memorySteps }
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
                        let internalShapes = Phi.shapes c
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
                          | Some n, Some k when n.ValueKind = JsonValueKind.String && k.ValueKind = JsonValueKind.Number && (match k.TryGetInt32() with | true, v -> v > 0 | _ -> false) ->
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

    // ---- PyTorch's layout, as safetensors -------------------------------------------------------

    let private configJson (c: LstmConfig) =
        use ms = new MemoryStream()
        (
            use w = new Utf8JsonWriter(ms)
            w.WriteStartObject()
            writeConfigBody w c
            w.WriteEndObject()
        )
        Encoding.UTF8.GetString(ms.ToArray())

    /// Whether the safetensors form holds φ of this architecture: PyTorch's LSTMCell and Linear layout
    /// fits the LSTMs (lstm-gac's averaging is configuration, recorded in the metadata).
    let private inSafetensors (a: Architecture) = a = Architecture.Lstm || a = Architecture.LstmGac

    /// What the safetensors form says of its layout (metadata "layout").
    [<Literal>]
    let SafetensorsLayout =
        "PyTorch nn.LSTMCell per layer k (cells.k.weight_ih [4H,in], cells.k.weight_hh [4H,H], cells.k.bias_ih [4H], cells.k.bias_hh [4H]; gates i,f,g,o; m_phi uses bias_ih + bias_hh) and nn.Linear out (out.weight [1,H], out.bias [1]); "
        + "the update is out_scale * out(h of the last layer); the first cell's input is the preprocessed gradient: logsign p gives 2 features per coordinate, "
        + "(log(|g|)/p, sign(g)) where |g| >= exp(-p), else (-1, exp(p) g); none gives the gradient itself; the state starts at zero. A grouped optimizer prefixes each key with its group's name and a dot."

    /// PyTorch's keys for one of φ's saved tensors (a name of `Phi.names`): w_ih.k → cells.k.weight_ih,
    /// w_hh.k → cells.k.weight_hh, b.k → cells.k.bias_ih and cells.k.bias_hh (m_φ's one bias is their
    /// sum; export writes bias_hh as zeros), w_out → out.weight, b_out → out.bias.
    let private torchKeys (name: string) : string list =
        match name.Split('.') with
        | [| "w_ih"; k |] -> [ sprintf "cells.%s.weight_ih" k ]
        | [| "w_hh"; k |] -> [ sprintf "cells.%s.weight_hh" k ]
        | [| "b"; k |] -> [ sprintf "cells.%s.bias_ih" k; sprintf "cells.%s.bias_hh" k ]
        | [| "w_out" |] -> [ "out.weight" ]
        | [| "b_out" |] -> [ "out.bias" ]
        | _ -> invalidArg "name" (sprintf "'%s' is not one of φ's tensors" name)

    let private trainingNodes (text: string) : (string * Nodes.JsonNode) list =
        match (try Nodes.JsonNode.Parse(text) with _ -> null) with
        | :? Nodes.JsonObject as root ->
            match root["training"] with
            | :? Nodes.JsonObject as t ->
                (try [ for kv in List.ofSeq t -> kv.Key, (if isNull kv.Value then null else kv.Value.DeepClone()) ] with _ -> [])
            | _ -> []
        | _ -> []

    /// The safetensors bytes of a learned optimizer file's text: φ in PyTorch's LSTMCell and Linear
    /// layout (keys above), float32, with the configuration, the groups and the training record in
    /// the metadata. Errors are those of reading the optimizer file.
    let toSafetensors (text: string) : Result<byte[], string> =
        match ofJsonGroups text torch.CPU torch.ScalarType.Float32 with
        | Error e -> Error e
        | Ok groups when groups |> List.exists (fun (_, _, phi) -> not (inSafetensors phi.Config.Architecture)) ->
            disposeGroups groups
            Error "the safetensors form holds LSTM cells (architectures lstm and lstm-gac); a gru or ntm-bfgs optimizer stays in the JSON form"
        | Ok groups ->
            try
              try
                let single = match groups with [ _ ] -> true | _ -> false
                let tensors =
                    [ for name, _, phi in groups do
                          let prefix = if single then "" else name + "."
                          let c = phi.Config
                          for name, shape, t in List.zip3 (Phi.names c) (Phi.savedShapes c) (Phi.tensors phi) do
                              let values =
                                  Tensors.build (fun _ -> Seq.empty<Tensor>) (fun () ->
                                      t.detach().to_type(torch.ScalarType.Float32).cpu().contiguous().data<float32>().ToArray())
                                  |> Array.map float
                              match torchKeys name with
                              | key :: zeros ->
                                  yield prefix + key, "F32", shape, values
                                  for z in zeros do
                                      yield prefix + z, "F32", shape, Array.zeroCreate values.Length
                              | [] -> () ]
                let training = Nodes.JsonNode.Parse(text).["training"]
                let metadata =
                    [ yield "format", Format
                      yield "version", string Version
                      yield "layout", SafetensorsLayout
                      match groups with
                      | [ _, _, phi ] -> yield "config", configJson phi.Config
                      | _ ->
                          let gs = Nodes.JsonArray()
                          for name, coordinates, phi in groups do
                              let g = Nodes.JsonObject()
                              g["name"] <- Nodes.JsonValue.Create(name)
                              g["coordinates"] <- Nodes.JsonValue.Create(coordinates)
                              g["config"] <- Nodes.JsonNode.Parse(configJson phi.Config)
                              gs.Add(g)
                          yield "groups", gs.ToJsonString()
                      if not (isNull training) then yield "training", training.ToJsonString() ]
                Ok(Safetensors.write tensors metadata)
              with
              | :? ArgumentException
              | :? InvalidOperationException
              | :? JsonException as e -> Error(sprintf "the file cannot be converted: %s" ((e.Message.Split('\n')[0]).Trim()))
            finally
                disposeGroups groups

    let private ofSafetensorsUnchecked (bytes: byte[]) : Result<string, string> =
        match Safetensors.read bytes with
        | Error e -> Error e
        | Ok(tensors, metadata) ->
            let fail fmt = Printf.kprintf Error fmt
            let meta k = Map.tryFind k metadata
            match meta "format", meta "version" with
            | Some f, _ when f <> Format -> fail "metadata format is '%s', expected '%s'" f Format
            | _, Some v when v <> string Version -> fail "metadata version %s is not supported (this build reads version %d)" v Version
            | _ ->
            let parse (what: string) (json: string) : Result<JsonElement, string> =
                try
                    use doc = JsonDocument.Parse(json)
                    Ok(doc.RootElement.Clone())
                with :? JsonException -> fail "metadata %s is not valid JSON" what
            let groupsMeta : Result<(string * int * JsonElement) list, string> =
                match meta "groups", meta "config" with
                | Some g, _ ->
                    parse "groups" g
                    |> Result.bind (fun g ->
                        if g.ValueKind <> JsonValueKind.Array || g.GetArrayLength() < 1 then fail "metadata groups must be a non-empty array"
                        else
                            let parsed =
                                [ for i, e in Seq.indexed (g.EnumerateArray()) ->
                                      match e.ValueKind with
                                      | JsonValueKind.Object ->
                                          match e.TryGetProperty "name", e.TryGetProperty "coordinates", e.TryGetProperty "config" with
                                          | (true, n), (true, k), (true, c) when n.ValueKind = JsonValueKind.String && k.ValueKind = JsonValueKind.Number && (match k.TryGetInt32() with | true, v -> v > 0 | _ -> false) ->
                                              Ok(n.GetString(), k.GetInt32(), c)
                                          | _ -> fail "metadata groups[%d] needs a 'name' string, a positive 'coordinates' count and a 'config'" i
                                      | _ -> fail "metadata groups[%d] is not an object" i ]
                            match parsed |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
                            | Some e -> Error e
                            | None -> Ok(parsed |> List.choose Result.toOption))
                | None, Some c -> parse "config" c |> Result.map (fun c -> [ "all", 0, c ])
                | None, None -> fail "metadata has neither 'config' nor 'groups'"
            match groupsMeta with
            | Error e -> Error e
            | Ok groupsMeta ->
            // keys without a group prefix exactly when the metadata has a single "config"
            let single = not (metadata.ContainsKey "groups")
            let known = Collections.Generic.HashSet<string>()
            use ms = new MemoryStream()
            let problem =
                use w = new Utf8JsonWriter(ms)
                w.WriteStartObject()
                w.WriteString("format", Format)
                w.WriteNumber("version", Version)
                let mutable problem = None
                let writeGroup (prefix: string) (config: JsonElement) =
                    w.WritePropertyName("config")
                    config.WriteTo(w)
                    w.WriteStartObject("params")
                    let layers =
                        match config.ValueKind, (if config.ValueKind = JsonValueKind.Object then config.TryGetProperty "layers" else (false, JsonElement())) with
                        | JsonValueKind.Object, (true, l) when l.ValueKind = JsonValueKind.Number && l.GetDouble() >= 1.0 && l.GetDouble() <= 1000.0 -> int (l.GetDouble())
                        | _ -> 0
                    if layers = 0 && problem.IsNone then
                        problem <- Some(sprintf "metadata %sconfig.layers must be an integer from 1 to 1000" (if prefix = "" then "" else "groups." + prefix))
                    match config.ValueKind, (if config.ValueKind = JsonValueKind.Object then config.TryGetProperty "architecture" else (false, JsonElement())) with
                    | JsonValueKind.Object, (true, a) when a.ValueKind = JsonValueKind.String && problem.IsNone
                                                            && not (Architecture.parse (a.GetString()) |> Result.map inSafetensors |> Result.defaultValue true) ->
                        problem <- Some(sprintf "the safetensors form holds LSTM cells (architectures lstm and lstm-gac), not %s" (a.GetString()))
                    | _ -> ()
                    // the names of φ's tensors depend only on the layer count
                    let ours =
                        if layers = 0 then []
                        else [ for name in Phi.names { LstmConfig.paper with Layers = layers } -> name, torchKeys name ]
                    for name, keys in ours do
                        match keys |> List.map (fun k -> prefix + k) |> List.map (fun k -> k, Map.tryFind k tensors) with
                        | found when found |> List.forall (snd >> Option.isSome) ->
                            let ts = found |> List.map (snd >> Option.get)
                            for k, _ in found do
                                known.Add k |> ignore
                            let first = ts.Head
                            if ts |> List.exists (fun t -> t.Shape <> first.Shape) then
                                if problem.IsNone then problem <- Some(sprintf "%s: the shapes of %s differ" name (keys |> String.concat " and "))
                            w.WriteStartObject(name)
                            w.WriteStartArray("shape")
                            for d in first.Shape do
                                w.WriteNumberValue d
                            w.WriteEndArray()
                            w.WriteStartArray("data")
                            for i in 0 .. first.Values.Length - 1 do
                                // one tensor: its value; bias_ih + bias_hh: their float32 sum, as m_φ's one bias
                                let v =
                                    match ts with
                                    | [ t ] -> t.Values[i]
                                    | _ -> float (ts |> List.fold (fun (acc: float32) t -> acc + float32 t.Values[i]) 0.0f)
                                if Double.IsFinite v then w.WriteNumberValue v else w.WriteStringValue "non-finite"
                            w.WriteEndArray()
                            w.WriteEndObject()
                        | found ->
                            let missing = found |> List.find (snd >> Option.isNone) |> fst
                            if problem.IsNone then problem <- Some(sprintf "tensor %s is missing" missing)
                    w.WriteEndObject()
                if single then
                    let _, _, c = groupsMeta.Head
                    writeGroup "" c
                else
                    w.WriteStartArray("groups")
                    for name, coordinates, c in groupsMeta do
                        w.WriteStartObject()
                        w.WriteString("name", name)
                        w.WriteNumber("coordinates", coordinates)
                        writeGroup (name + ".") c
                        w.WriteEndObject()
                    w.WriteEndArray()
                match meta "training" with
                | Some t ->
                    match parse "training" t with
                    | Ok e when e.ValueKind = JsonValueKind.Object ->
                        w.WritePropertyName("training")
                        e.WriteTo(w)
                    | Ok _ -> if problem.IsNone then problem <- Some "metadata training is not a JSON object"
                    | Error e -> if problem.IsNone then problem <- Some e
                | None -> ()
                w.WriteEndObject()
                problem
            match problem, tensors |> Map.toList |> List.map fst |> List.tryFind (known.Contains >> not) with
            | Some p, _ -> Error p
            | None, Some extra -> fail "tensor %s is not part of m_phi" extra
            | None, None ->
                let text = Encoding.UTF8.GetString(ms.ToArray())
                match ofJsonGroups text torch.CPU torch.ScalarType.Float32 with
                | Error e -> Error e
                | Ok groups ->
                    try Ok(toJsonGroups groups (trainingNodes text))
                    finally disposeGroups groups

    /// A learned optimizer file's text from safetensors bytes written by `toSafetensors` or by
    /// PyTorch with the same keys and metadata (`config`, or `groups` with a config each); a layer's
    /// bias is bias_ih + bias_hh. Every problem is a message naming the key or the field.
    let ofSafetensors (bytes: byte[]) : Result<string, string> =
        try
            ofSafetensorsUnchecked bytes
        with
        | :? ArgumentException
        | :? InvalidOperationException
        | :? FormatException
        | :? JsonException as e -> Error(sprintf "the file cannot be read: %s" ((e.Message.Split('\n')[0]).Trim()))
