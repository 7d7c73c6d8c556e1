/// Meta-training jobs as the worker runs them: the job spec (JSON) and the job's status file.
///
/// A complete spec (every other field has a default):
///   {"id":"q1","task":{"name":"quadratic","dim":10},"metaIterations":60,"seed":11,"checkpointEvery":5}
/// Optional fields: horizon, unroll, batchFunctions, metaLr, validateEvery, validationFunctions,
/// secondOrder, optimizer {architecture (lstm, gru, lstm-gac, ntm-bfgs), averaged, reads, writes,
/// memorySteps, layers, hidden, preprocessing, p, outScale, forgetBias},
/// faults {lrFactor, maxConsecutive}, evaluation (false, or {steps, runs, seed, tuneBaselines,
/// tuneRuns, tuneSeed, tuneSteps}).
namespace L2L

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open System.Text.RegularExpressions

type JobSpec =
    { Id: string
      Meta: MetaConfig
      /// Checkpoint every this many meta-iterations.
      CheckpointEvery: int
      /// The evaluation run when training ends (None: none).
      Evaluation: EvalSettings option
      /// The optimizer file meta-training starts from (a warm start; None: a fresh φ). Meta.Lstm is
      /// its m_φ's settings.
      Init: string option }

/// A job's lifecycle as recorded in DIR/<id>/status.json.
type JobState =
    | Queued
    | Running
    | Completed
    | Failed
    | Cancelled

module JobState =
    let name =
        function
        | Queued -> "queued"
        | Running -> "running"
        | Completed -> "completed"
        | Failed -> "failed"
        | Cancelled -> "cancelled"

    let parse =
        function
        | "queued" -> Some Queued
        | "running" -> Some Running
        | "completed" -> Some Completed
        | "failed" -> Some Failed
        | "cancelled" -> Some Cancelled
        | _ -> None

    let isFinal s = s = Completed || s = Failed || s = Cancelled

module JobSpec =
    let private idPattern = Regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

    let validId (id: string) = not (isNull id) && idPattern.IsMatch id

    /// The names of the built-in tasks a spec may give.
    let builtInTasks = [ Defaults.quadratic.Task; Defaults.mnistTask; Defaults.convTask ] |> List.map TaskSpec.name

    let private topFields =
        set [ "id"; "task"; "metaIterations"; "seed"; "checkpointEvery"; "horizon"; "unroll"; "batchFunctions"; "metaLr"
              "validateEvery"; "validationFunctions"; "secondOrder"; "logLoss"; "optimizer"; "faults"; "evaluation"; "distributed"; "randomScaling"
              "curriculum"; "imitation"; "init" ]

    /// Parses and validates a spec; every problem found is reported, each naming its field. A task
    /// is one of the built-in ones or, by its name, one of `catalog` (tasks of one's own, e.g.
    /// `Task.ofModule`'s, that the worker was given).
    let parseWith (catalog: TaskSpec list) (text: string) : Result<JobSpec, string list> =
        let errors = ResizeArray<string>()
        try
            use doc = JsonDocument.Parse(text, JsonDocumentOptions(CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true))
            let root = doc.RootElement
            if root.ValueKind <> JsonValueKind.Object then Error [ "the spec is not a JSON object" ]
            else
            let prop (e: JsonElement) (name: string) =
                match e.TryGetProperty name with
                | true, v when v.ValueKind <> JsonValueKind.Null -> Some v
                | _ -> None
            let unknown (e: JsonElement) (allowed: Set<string>) (where: string) =
                for p in e.EnumerateObject() do
                    if not (allowed.Contains p.Name) then errors.Add(sprintf "unknown field '%s%s'" where p.Name)
            let integer (e: JsonElement) (where: string) (name: string) (dflt: 'T) (read: JsonElement -> bool * 'T) =
                match prop e name with
                | None -> dflt
                | Some v ->
                    match (if v.ValueKind = JsonValueKind.Number then read v else (false, dflt)) with
                    | true, i -> i
                    | _ ->
                        errors.Add(sprintf "%s%s must be an integer" where name)
                        dflt
            let intField e where name (dflt: int) = integer e where name dflt (fun v -> v.TryGetInt32())
            let int64Field e where name (dflt: int64) = integer e where name dflt (fun v -> v.TryGetInt64())
            let floatField (e: JsonElement) (where: string) (name: string) (dflt: float) =
                match prop e name with
                | None -> dflt
                | Some v when v.ValueKind = JsonValueKind.Number -> v.GetDouble()
                | Some _ ->
                    errors.Add(sprintf "%s%s must be a number" where name)
                    dflt
            let boolField (e: JsonElement) (where: string) (name: string) (dflt: bool) =
                match prop e name with
                | None -> dflt
                | Some v when v.ValueKind = JsonValueKind.True -> true
                | Some v when v.ValueKind = JsonValueKind.False -> false
                | Some _ ->
                    errors.Add(sprintf "%s%s must be true or false" where name)
                    dflt
            /// A non-empty array of positive integers (None: absent or anything else).
            let positiveInts (e: JsonElement option) =
                match e with
                | Some h when h.ValueKind = JsonValueKind.Array && h.GetArrayLength() > 0
                              && (h.EnumerateArray() |> Seq.forall (fun x -> x.ValueKind = JsonValueKind.Number && (let ok, v = x.TryGetInt32() in ok && v >= 1))) ->
                    Some [ for x in h.EnumerateArray() -> x.GetInt32() ]
                | _ -> None
            /// A top-level object of settings: absent, the default; an object, `parse` of it (fields
            /// outside `fields` reported); anything else, "NAME must be an object SHAPE".
            let section (name: string) (fields: string list) (shape: string) (dflt: 'T) (parse: JsonElement -> 'T) =
                match prop root name with
                | None -> dflt
                | Some v when v.ValueKind = JsonValueKind.Object ->
                    unknown v (set fields) (name + ".")
                    parse v
                | Some _ ->
                    errors.Add(sprintf "%s must be an object%s" name shape)
                    dflt
            unknown root topFields ""
            let id =
                match prop root "id" with
                | Some v when v.ValueKind = JsonValueKind.String && validId (v.GetString()) -> v.GetString()
                | Some _ ->
                    errors.Add "id must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
                    ""
                | None ->
                    errors.Add "id is missing"
                    ""
            let known = String.concat ", " (builtInTasks @ (catalog |> List.map TaskSpec.name))
            let ofCatalog (name: string) = catalog |> List.tryFind (fun t -> TaskSpec.name t = name)
            let task =
                match prop root "task" with
                | None ->
                    errors.Add "task is missing"
                    Quadratic 10
                | Some t when t.ValueKind = JsonValueKind.String ->
                    if t.GetString() = "quadratic" then Defaults.quadratic.Task
                    elif t.GetString() = "mnist" then Defaults.mnistTask
                    elif t.GetString() = "mnist-conv" then Defaults.convTask
                    else
                        match ofCatalog (t.GetString()) with
                        | Some task -> task
                        | None ->
                            errors.Add(sprintf "unknown task '%s' (known: %s)" (t.GetString()) known)
                            Quadratic 10
                | Some t when t.ValueKind = JsonValueKind.Object
                              && (match prop t "name" with
                                  | Some n when n.ValueKind = JsonValueKind.String -> (ofCatalog (n.GetString())).IsSome
                                  | _ -> false) ->
                    unknown t (set [ "name" ]) "task."
                    (ofCatalog ((prop t "name").Value.GetString())).Value
                | Some t when t.ValueKind = JsonValueKind.Object ->
                    unknown t (set [ "name"; "dim"; "hidden"; "activation"; "batch"; "channels"; "dense" ]) "task."
                    match prop t "name" with
                    | Some n when n.ValueKind = JsonValueKind.String && n.GetString() = "quadratic" ->
                        Quadratic(intField t "task." "dim" 10)
                    | Some n when n.ValueKind = JsonValueKind.String && n.GetString() = "mnist" ->
                        let hidden =
                            match prop t "hidden", positiveInts (prop t "hidden") with
                            | None, _ -> [ 20 ]
                            | Some _, Some widths -> widths
                            | Some _, None ->
                                errors.Add "task.hidden must be a non-empty array of positive widths"
                                [ 20 ]
                        let activation =
                            match prop t "activation" with
                            | None -> Sigmoid
                            | Some a when a.ValueKind = JsonValueKind.String && a.GetString() = "sigmoid" -> Sigmoid
                            | Some a when a.ValueKind = JsonValueKind.String && a.GetString() = "relu" -> Relu
                            | Some a ->
                                errors.Add(sprintf "task.activation '%s' is not sigmoid or relu" (a.ToString()))
                                Sigmoid
                        Mlp { Hidden = hidden; Activation = activation; Batch = intField t "task." "batch" 128 }
                    | Some n when n.ValueKind = JsonValueKind.String && n.GetString() = "mnist-conv" ->
                        let d = TaskSpec.convDefault
                        let channels =
                            match prop t "channels" with
                            | None -> d.Channels
                            | Some h when h.ValueKind = JsonValueKind.Array && h.GetArrayLength() > 0
                                          && (h.EnumerateArray() |> Seq.forall (fun x -> x.ValueKind = JsonValueKind.Number && (let ok, v = x.TryGetInt32() in ok && v >= 1))) ->
                                [ for x in h.EnumerateArray() -> x.GetInt32() ]
                            | Some _ ->
                                errors.Add "task.channels must be a non-empty array of positive channel counts"
                                d.Channels
                        Conv { Channels = channels; Dense = intField t "task." "dense" d.Dense; Batch = intField t "task." "batch" d.Batch }
                    | Some n ->
                        errors.Add(sprintf "unknown task '%s' (known: %s)" (n.ToString()) known)
                        Quadratic 10
                    | None ->
                        errors.Add "task.name is missing"
                        Quadratic 10
                | Some _ ->
                    errors.Add "task must be an object {\"name\":..}"
                    Quadratic 10
            let d = Defaults.meta task
            // a warm start: m_φ's settings are those of the optimizer file it starts from
            let init, initLstm =
                match prop root "init" with
                | None -> None, None
                | Some v when v.ValueKind = JsonValueKind.String ->
                    let path = v.GetString()
                    if (prop root "optimizer").IsSome then
                        errors.Add "init takes m_φ's settings from its optimizer file: give no optimizer section with it"
                    match OptimizerFile.loadGroups path TorchSharp.torch.CPU TorchSharp.torch.ScalarType.Float32 with
                    | Ok groups ->
                        let config = groups |> List.map (fun (_, _, phi) -> phi.Config) |> List.head
                        OptimizerFile.disposeGroups groups
                        Some path, Some config
                    | Error e ->
                        errors.Add(sprintf "init: %s" e)
                        Some path, None
                | Some _ ->
                    errors.Add "init must be the path of an optimizer file"
                    None, None
            let lstm =
                match prop root "optimizer" with
                | _ when initLstm.IsSome -> initLstm.Value
                | None -> d.Lstm
                | Some o when o.ValueKind = JsonValueKind.Object ->
                    unknown o (set [ "architecture"; "averaged"; "reads"; "writes"; "memorySteps"; "layers"; "hidden"; "preprocessing"; "p"; "betas"; "beta2"; "outScale"; "forgetBias" ]) "optimizer."
                    let arch =
                        match prop o "architecture" with
                        | None -> d.Lstm.Architecture
                        | Some v when v.ValueKind = JsonValueKind.String ->
                            match Architecture.parse (v.GetString()) with
                            | Ok a -> a
                            | Error e ->
                                errors.Add("optimizer.architecture: " + e)
                                d.Lstm.Architecture
                        | Some v ->
                            errors.Add(sprintf "optimizer.architecture '%s' is not a string" (v.ToString()))
                            d.Lstm.Architecture
                    let pre =
                        match prop o "preprocessing" with
                        | None -> LogSign(floatField o "optimizer." "p" 10.0)
                        | Some v when v.ValueKind = JsonValueKind.String && v.GetString() = "logsign" -> LogSign(floatField o "optimizer." "p" 10.0)
                        | Some v when v.ValueKind = JsonValueKind.String && v.GetString() = "none" -> Identity
                        | Some v when v.ValueKind = JsonValueKind.String && v.GetString() = "moments" ->
                            let betas =
                                match prop o "betas" with
                                | None -> [ 0.5; 0.9; 0.99 ]
                                | Some b when b.ValueKind = JsonValueKind.Array && b.EnumerateArray() |> Seq.forall (fun x -> x.ValueKind = JsonValueKind.Number) ->
                                    [ for x in b.EnumerateArray() -> x.GetDouble() ]
                                | Some _ ->
                                    errors.Add "optimizer.betas must be an array of numbers"
                                    [ 0.9 ]
                            NormalizedMoments(betas, floatField o "optimizer." "beta2" 0.999)
                        | Some v ->
                            errors.Add(sprintf "optimizer.preprocessing '%s' is not logsign, none or moments" (v.ToString()))
                            d.Lstm.Preprocessing
                    { Architecture = arch
                      Layers = intField o "optimizer." "layers" d.Lstm.Layers
                      Hidden = intField o "optimizer." "hidden" d.Lstm.Hidden
                      Preprocessing = pre
                      OutScale = floatField o "optimizer." "outScale" d.Lstm.OutScale
                      ForgetBias = floatField o "optimizer." "forgetBias" d.Lstm.ForgetBias
                      Averaged = 0
                      Reads = 0
                      Writes = 0
                      MemorySteps = 0 }
                    |> LstmConfig.withArchitecture arch
                    |> fun c ->
                        // the architecture's defaults where a field is absent
                        { c with
                            Averaged = intField o "optimizer." "averaged" c.Averaged
                            Reads = intField o "optimizer." "reads" c.Reads
                            Writes = intField o "optimizer." "writes" c.Writes
                            MemorySteps = intField o "optimizer." "memorySteps" c.MemorySteps }
                | Some _ ->
                    errors.Add "optimizer must be an object"
                    d.Lstm
            let faults =
                section "faults" [ "lrFactor"; "maxConsecutive" ] "" d.Faults (fun f ->
                    { LrFactor = floatField f "faults." "lrFactor" d.Faults.LrFactor
                      MaxConsecutive = intField f "faults." "maxConsecutive" d.Faults.MaxConsecutive })
            let horizon = intField root "" "horizon" d.Horizon
            let shards = section "distributed" [ "shards" ] " {\"shards\": K}" 1 (fun v -> intField v "distributed." "shards" 1)
            let curriculum =
                section "curriculum" [ "horizons"; "patience"; "validateAll" ] " {\"horizons\": [...], \"patience\": N, \"validateAll\": B}" Curriculum.none (fun v ->
                    let horizons =
                        match positiveInts (prop v "horizons") with
                        | Some hs -> hs
                        | None ->
                            errors.Add "curriculum.horizons must be a non-empty array of positive horizons"
                            []
                    { Horizons = horizons
                      Patience = intField v "curriculum." "patience" Curriculum.none.Patience
                      ValidateAll = boolField v "curriculum." "validateAll" false })
            let imitation =
                section "imitation" [ "probability"; "lr" ] " {\"probability\": P, \"lr\": LR}" ImitationConfig.none (fun v ->
                    { Probability = floatField v "imitation." "probability" 0.0; Lr = floatField v "imitation." "lr" ImitationConfig.none.Lr })
            let meta =
                { d with
                    Task = task
                    Lstm = lstm
                    Horizon = horizon
                    Unroll = { d.Unroll with Unroll = intField root "" "unroll" d.Unroll.Unroll; SecondOrder = boolField root "" "secondOrder" false; LogLoss = boolField root "" "logLoss" d.Unroll.LogLoss }
                    BatchFunctions = intField root "" "batchFunctions" d.BatchFunctions
                    Shards = shards
                    RandomScaling = floatField root "" "randomScaling" 0.0
                    Curriculum = curriculum
                    Imitation = imitation
                    MetaIterations =
                        match prop root "metaIterations" with
                        | None ->
                            errors.Add "metaIterations is missing"
                            0
                        | Some _ -> intField root "" "metaIterations" 0
                    MetaLr = floatField root "" "metaLr" d.MetaLr
                    ValidateEvery = intField root "" "validateEvery" d.ValidateEvery
                    ValidationFunctions = intField root "" "validationFunctions" d.ValidationFunctions
                    Seed = int64Field root "" "seed" d.Seed
                    Faults = faults }
            let evalDefaults = { Defaults.evaluation task with TuneSteps = horizon }
            let evaluation =
                match prop root "evaluation" with
                | None -> Some evalDefaults
                | Some v when v.ValueKind = JsonValueKind.False -> None
                | Some v when v.ValueKind = JsonValueKind.True -> Some evalDefaults
                | Some v when v.ValueKind = JsonValueKind.Object ->
                    unknown v (set [ "steps"; "runs"; "seed"; "tuneBaselines"; "tuneRuns"; "tuneSeed"; "tuneSteps" ]) "evaluation."
                    let e = evalDefaults
                    Some
                        { e with
                            Steps = intField v "evaluation." "steps" e.Steps
                            Runs = intField v "evaluation." "runs" e.Runs
                            Seed = uint64 (int64Field v "evaluation." "seed" (int64 e.Seed))
                            Tune = boolField v "evaluation." "tuneBaselines" e.Tune
                            TuneRuns = intField v "evaluation." "tuneRuns" e.TuneRuns
                            TuneSeed = uint64 (int64Field v "evaluation." "tuneSeed" (int64 e.TuneSeed))
                            TuneSteps = intField v "evaluation." "tuneSteps" e.TuneSteps }
                | Some _ ->
                    errors.Add "evaluation must be false or an object"
                    None
            let checkpointEvery = intField root "" "checkpointEvery" 100
            if checkpointEvery < 1 then errors.Add "checkpointEvery must be ≥ 1"
            if meta.MetaIterations < 0 then errors.Add "metaIterations must be ≥ 0"
            match MetaConfig.validate meta with
            | Error es -> errors.AddRange(es |> List.filter (fun e -> not (e.StartsWith "meta-iterations")))
            | Ok _ -> ()
            match evaluation |> Option.map EvalSettings.validate with
            | Some(Error es) -> errors.AddRange(es |> List.map (fun e -> "evaluation: " + e))
            | _ -> ()
            if errors.Count > 0 then Error(List.ofSeq errors)
            else Ok { Id = id; Meta = meta; CheckpointEvery = checkpointEvery; Evaluation = evaluation; Init = init }
        with :? JsonException as e ->
            Error [ sprintf "not valid JSON: %s" e.Message ]

    /// `parseWith` the built-in tasks only.
    let parse (text: string) : Result<JobSpec, string list> = parseWith [] text

/// DIR/<id>/status.json: written by the worker (atomically), read by `l2l status`.
type JobStatus =
    { Id: string
      State: JobState
      Reason: string option
      Iteration: int
      MetaIterations: int
      BestValidation: float option
      MetaLr: float option
      Updated: DateTimeOffset
      /// The cluster silo the job runs (or ran) on; None outside a cluster.
      Silo: string option }

module JobStatus =
    let toJson (s: JobStatus) =
        let o = JsonObject()
        o["id"] <- JsonValue.Create(s.Id)
        o["state"] <- JsonValue.Create(JobState.name s.State)
        o["reason"] <- (match s.Reason with Some r -> JsonValue.Create(r) :> JsonNode | None -> null)
        o["iteration"] <- JsonValue.Create(s.Iteration)
        o["metaIterations"] <- JsonValue.Create(s.MetaIterations)
        o["bestValidation"] <- (match s.BestValidation with Some v when Double.IsFinite v -> JsonValue.Create(v) :> JsonNode | _ -> null)
        o["metaLr"] <- (match s.MetaLr with Some v -> JsonValue.Create(v) :> JsonNode | None -> null)
        o["updated"] <- JsonValue.Create(s.Updated.ToString("o"))
        match s.Silo with
        | Some silo -> o["silo"] <- JsonValue.Create(silo)
        | None -> ()
        o.ToJsonString(JsonSerializerOptions(WriteIndented = true))

    /// Reads a status file's text; a field that is missing or of the wrong kind is named.
    let parse (text: string) : Result<JobStatus, string> =
        try
            match JsonNode.Parse(text) with
            | :? JsonObject as o ->
                let field (k: string) (read: JsonValue -> 'a option) : Result<'a option, string> =
                    match o[k] with
                    | null -> Ok None
                    | :? JsonValue as v ->
                        match read v with
                        | Some x -> Ok(Some x)
                        | None -> Error(sprintf "status field '%s' has the wrong type" k)
                    | _ -> Error(sprintf "status field '%s' has the wrong type" k)
                let str k = field k (fun v -> match v.TryGetValue<string>() with | true, x -> Some x | _ -> None)
                let num k = field k (fun v -> match v.TryGetValue<float>() with | true, x -> Some x | _ -> None)
                let count k =
                    num k |> Result.bind (function
                        | None -> Ok 0
                        | Some x when x >= 0.0 && x <= float Int32.MaxValue && x = floor x -> Ok(int x)
                        | Some _ -> Error(sprintf "status field '%s' is not a count" k))
                let time =
                    str "updated" |> Result.bind (function
                        | None -> Ok DateTimeOffset.MinValue
                        | Some t ->
                            match DateTimeOffset.TryParse(t, Globalization.CultureInfo.InvariantCulture, Globalization.DateTimeStyles.None) with
                            | true, d -> Ok d
                            | _ -> Error "status field 'updated' is not a time")
                match str "id", str "state", str "reason", count "iteration", count "metaIterations", num "bestValidation", num "metaLr", time with
                | Ok(Some id), Ok(Some state), Ok reason, Ok it, Ok total, Ok best, Ok lr, Ok updated ->
                    match JobState.parse state, str "silo" with
                    | _, Error e -> Error e
                    | Some st, Ok silo ->
                        Ok { Id = id; State = st; Reason = reason; Iteration = it; MetaIterations = total
                             BestValidation = best; MetaLr = lr; Updated = updated; Silo = silo }
                    | None, _ -> Error(sprintf "status field 'state' is '%s', not queued, running, completed, failed or cancelled" state)
                | Ok None, _, _, _, _, _, _, _ -> Error "status field 'id' is missing"
                | _, Ok None, _, _, _, _, _, _ -> Error "status field 'state' is missing"
                | Error e, _, _, _, _, _, _, _ | _, Error e, _, _, _, _, _, _ | _, _, Error e, _, _, _, _, _
                | _, _, _, Error e, _, _, _, _ | _, _, _, _, Error e, _, _, _ | _, _, _, _, _, Error e, _, _
                | _, _, _, _, _, _, Error e, _ | _, _, _, _, _, _, _, Error e -> Error e
            | _ -> Error "the status is not a JSON object"
        with :? System.Text.Json.JsonException as e -> Error(sprintf "the status is not valid JSON (%s)" e.Message)

    /// Writes the status file atomically.
    let write (dir: string) (s: JobStatus) =
        AtomicFile.writeText (Path.Combine(dir, "status.json")) (toJson s) |> ignore

    let read (dir: string) =
        let path = Path.Combine(dir, "status.json")
        if File.Exists path then
            (try Ok(File.ReadAllText path) with e -> Error e.Message) |> Result.bind parse
        else Error "no status.json"

/// A job's checkpoints: DIR/<id>/checkpoints/ckpt-<iteration>.bin, each written atomically
/// (AtomicFile), the newest `keep` kept.
[<Sealed>]
type CheckpointStore(jobDirectory: string, keep: int) =
    let dir = Path.Combine(jobDirectory, "checkpoints")

    member _.Directory = dir

    /// Writes the checkpoint of `iteration`, then removes all but the newest `keep`; returns its path.
    member this.Write(iteration: int, bytes: byte[]) : string =
        let final = Path.Combine(dir, sprintf "ckpt-%08d.bin" iteration)
        AtomicFile.write final bytes |> ignore
        for i, old in Seq.indexed (this.List()) do
            if i >= keep then File.Delete old
        final

    /// Checkpoint files, newest first.
    member _.List() : Collections.Generic.IReadOnlyList<string> =
        if Directory.Exists dir then
            Directory.GetFiles(dir, "ckpt-*.bin") |> Array.sortDescending |> Array.toList |> ResizeArray :> _
        else ResizeArray() :> _

    /// Removes temporary files a kill may have left behind.
    member _.RemoveTemporaries() =
        if Directory.Exists dir then
            for f in Directory.GetFiles dir do
                if AtomicFile.isTemporary f then File.Delete f

    /// Moves an unusable checkpoint aside (kept for inspection, never tried again).
    member _.Quarantine(path: string) = File.Move(path, path + ".corrupt", true)

/// One entry of `JobsDirectory.list`: a spec waiting for the worker, or a job with its status.
type JobEntry =
    | Submitted of id: string
    | Job of id: string * status: Result<JobStatus, string>

/// The jobs directory protocol, shared by the command line (submit, status, cancel) and the worker
/// (accept, unfinished, cancellation):
///   DIR/<id>.json           a submitted spec, not yet taken in by the worker
///   DIR/<id>/spec.json      the job's spec, once taken in
///   DIR/<id>/status.json    its state (JobStatus), written atomically
///   DIR/<id>/cancel         present when cancellation was asked for
///   DIR/<id>/checkpoints/   its checkpoints (CheckpointStore)
module JobsDirectory =
    let jobDirectory (jobs: string) (id: string) = Path.Combine(jobs, id)

    let private cancelMarker (jobDir: string) = Path.Combine(jobDir, "cancel")

    /// Validates a spec and hands it to the worker (atomically: the worker never sees half a file).
    /// Errors: the spec's problems, or a job of that id that exists already.
    let submitWith (catalog: TaskSpec list) (jobs: string) (text: string) : Result<JobSpec, string> =
        match JobSpec.parseWith catalog text with
        | Error errs -> Error("the spec is invalid: " + String.concat "; " errs)
        | Ok spec ->
            if Directory.Exists(jobDirectory jobs spec.Id) || File.Exists(Path.Combine(jobs, spec.Id + ".json")) then
                Error(sprintf "a job '%s' already exists in %s" spec.Id jobs)
            else
                AtomicFile.writeText (Path.Combine(jobs, spec.Id + ".json")) text |> ignore
                Ok spec

    /// `submitWith` the built-in tasks only.
    let submit (jobs: string) (text: string) = submitWith [] jobs text

    /// Submitted specs (DIR/*.json) in the order the worker takes them: oldest first.
    let submitted (jobs: string) : string list =
        Directory.GetFiles(jobs, "*.json")
        |> Array.sortBy (fun f -> File.GetLastWriteTimeUtc f, f)
        |> Array.toList

    /// Writes a job's status (keeping the progress of the previous status when `progress` is None),
    /// naming the cluster silo it runs on.
    let writeStatusOn (silo: string option) (jobDir: string) (id: string) (state: JobState) (reason: string option)
                      (progress: (int * int * float option * float option) option) =
        let iteration, total, best, lr =
            match progress with
            | Some p -> p
            | None ->
                match JobStatus.read jobDir with
                | Ok s -> s.Iteration, s.MetaIterations, None, None
                | Error _ -> 0, 0, None, None
        JobStatus.write jobDir
            { Id = id
              State = state
              Reason = reason
              Iteration = iteration
              MetaIterations = total
              BestValidation = best
              MetaLr = lr
              Updated = DateTimeOffset.UtcNow
              Silo = silo }

    /// Writes a job's status (keeping the progress of the previous status when `progress` is None).
    let writeStatus (jobDir: string) (id: string) (state: JobState) (reason: string option)
                    (progress: (int * int * float option * float option) option) =
        writeStatusOn None jobDir id state reason progress

    /// Takes a submitted spec in: DIR/x.json becomes DIR/<id>/spec.json with a queued status. A spec
    /// that cannot be parsed still becomes a job (named after the file) marked failed with the
    /// reason, so `l2l status` shows it. Returns the id of the job to run (None: nothing to run;
    /// `rejected` has been told why, or the file is still being written).
    let acceptWith (catalog: TaskSpec list) (jobs: string) (file: string) (rejected: string -> string -> unit) : string option =
        match (try Some(File.ReadAllText file) with :? IOException -> None) with
        | None -> None
        | Some text ->
            let stem = Path.GetFileNameWithoutExtension file
            let parsed = JobSpec.parseWith catalog text
            let id =
                match parsed with
                | Ok spec -> spec.Id
                | Error _ -> if JobSpec.validId stem then stem else "spec-" + Guid.NewGuid().ToString("N").Substring(0, 8)
            let dir = jobDirectory jobs id
            if Directory.Exists dir && File.Exists(Path.Combine(dir, "spec.json")) then
                let target = file + ".rejected"
                File.Move(file, target, true)
                rejected (Path.GetFileName file) (sprintf "a job '%s' already exists; the spec was moved to %s" id (Path.GetFileName target))
                None
            else
                Directory.CreateDirectory dir |> ignore
                File.Move(file, Path.Combine(dir, "spec.json"), true)
                match parsed with
                | Error errs ->
                    let reason = "invalid spec: " + String.concat "; " errs
                    writeStatus dir id Failed (Some reason) None
                    rejected (Path.GetFileName file) reason
                    None
                | Ok _ ->
                    writeStatus dir id Queued None None
                    Some id

    /// `acceptWith` the built-in tasks only.
    let accept (jobs: string) (file: string) (rejected: string -> string -> unit) = acceptWith [] jobs file rejected

    /// Jobs left queued or running by an earlier worker (they resume), in id order.
    let unfinished (jobs: string) : string list =
        Directory.GetDirectories jobs
        |> Array.sort
        |> Array.filter (fun d ->
            match JobStatus.read d with
            | Ok s -> not (JobState.isFinal s.State)
            | Error _ -> false)
        |> Array.map Path.GetFileName
        |> Array.toList

    /// The submitted specs and the jobs (all, or the one named `only`).
    let list (jobs: string) (only: string option) : JobEntry list =
        let pick id = only.IsNone || only = Some id
        [ for f in Directory.GetFiles(jobs, "*.json") do
              let id = Path.GetFileNameWithoutExtension f
              if pick id then Submitted id
          for d in Directory.GetDirectories jobs |> Array.sort do
              let id = Path.GetFileName d
              if pick id then Job(id, JobStatus.read d) ]

    /// Asks the worker to cancel a job (queued or running).
    let requestCancel (jobs: string) (id: string) : Result<unit, string> =
        if not (JobSpec.validId id) then Error(sprintf "'%s' is not a job id" id)
        else
            let dir = jobDirectory jobs id
            if not (Directory.Exists dir) && not (File.Exists(Path.Combine(jobs, id + ".json"))) then
                Error(sprintf "no job '%s' in %s" id jobs)
            else
                match JobStatus.read dir with
                | Ok s when JobState.isFinal s.State -> Error(sprintf "job '%s' is already %s" id (JobState.name s.State))
                | _ ->
                    AtomicFile.writeText (cancelMarker dir) (DateTimeOffset.UtcNow.ToString("o")) |> ignore
                    Ok()

    /// Whether cancellation of the job in `jobDir` was asked for.
    let cancelRequested (jobDir: string) = File.Exists(cancelMarker jobDir)

/// Tasks of one's own that a worker runs by name (a job spec's "task"): a public class with a
/// parameterless constructor that implements this, in an assembly the worker is told to load
/// (Worker:TaskAssemblies).
type ITaskProvider =
    abstract Tasks: TaskSpec seq

module TaskCatalog =
    /// The tasks of every ITaskProvider in the assemblies at `paths`. Errors name the assembly: one
    /// that does not exist or is not .NET, one without a provider, a provider that fails, a task
    /// name given twice or taken by a built-in task.
    let load (paths: string list) : Result<TaskSpec list, string> =
        let tasksOf (path: string) : Result<TaskSpec list, string> =
            let full = Path.GetFullPath path
            if not (File.Exists full) then Error(sprintf "task assembly '%s' does not exist" path)
            else
                try
                    let asm = Reflection.Assembly.LoadFrom full
                    let providers =
                        asm.GetExportedTypes()
                        |> Array.filter (fun t -> typeof<ITaskProvider>.IsAssignableFrom t && not t.IsAbstract && not t.IsInterface)
                    if providers.Length = 0 then Error(sprintf "task assembly '%s' has no public class implementing ITaskProvider" path)
                    else
                        Ok [ for t in providers do
                                 yield! (Activator.CreateInstance t :?> ITaskProvider).Tasks ]
                with
                | :? BadImageFormatException -> Error(sprintf "task assembly '%s' is not a .NET assembly" path)
                | :? Reflection.TargetInvocationException as e -> Error(sprintf "task assembly '%s': its provider failed: %s" path e.InnerException.Message)
                | :? MissingMethodException -> Error(sprintf "task assembly '%s': a provider has no parameterless constructor" path)
                | :? IOException as e -> Error(sprintf "task assembly '%s' cannot be loaded: %s" path e.Message)
                | e -> Error(sprintf "task assembly '%s': %s" path ((e.Message.Split('\n')).[0].Trim()))
        let rec go (acc: TaskSpec list) =
            function
            | [] -> Ok acc
            | p :: rest ->
                match tasksOf p with
                | Error e -> Error e
                | Ok tasks ->
                    let names = acc @ tasks |> List.map TaskSpec.name
                    match names |> List.tryFind (fun n -> List.contains n JobSpec.builtInTasks) with
                    | Some n -> Error(sprintf "task assembly '%s': the name '%s' is a built-in task's" p n)
                    | None ->
                    match names |> List.countBy id |> List.tryFind (fun (_, k) -> k > 1) with
                    | Some(n, _) -> Error(sprintf "task assembly '%s': a task named '%s' is given twice" p n)
                    | None ->
                    match tasks |> List.tryPick (fun t -> match TaskSpec.validate t with Error e -> Some(TaskSpec.name t, e) | Ok _ -> None) with
                    | Some(n, e) -> Error(sprintf "task assembly '%s': task '%s': %s" p n (String.concat "; " e))
                    | None -> go (acc @ tasks) rest
        go [] paths
