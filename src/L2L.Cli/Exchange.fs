/// φ exchanged with PyTorch: export and import as safetensors (OptimizerFile.toSafetensors /
/// ofSafetensors), and a trace of m_φ on seeded gradients that tools/pytorch-check replays in PyTorch.
module L2L.Cli.Exchange

open System
open System.IO
open Argu
open TorchSharp
open L2L
open L2L.Cli.Args
open L2L.Cli.Commands

let private bad (what: string) (message: string) = raise (InvalidDataException(sprintf "%s: %s" what message))

/// l2l export: the optimizer as safetensors (or as its JSON file).
let runExport (a: ParseResults<ExportArgs>) =
    let spec = a.GetResult ExportArgs.Optimizer
    let out = a.GetResult ExportArgs.Out
    let text = optimizerText spec
    match defaultArg (a.TryGetResult ExportArgs.Format) "safetensors" with
    | "safetensors" ->
        match OptimizerFile.toSafetensors text with
        | Error e -> bad spec e
        | Ok bytes ->
            AtomicFile.write out bytes |> ignore
            say (sprintf "wrote %s (safetensors, %d bytes)" out bytes.Length)
    | "json" ->
        match OptimizerFile.ofJsonGroups text torch.CPU torch.ScalarType.Float32 with
        | Error e -> bad spec e
        | Ok groups ->
            OptimizerFile.disposeGroups groups
            AtomicFile.writeText out text |> ignore
            say (sprintf "wrote %s (optimizer file)" out)
    | other -> fail "unknown format '%s' (known: safetensors, json)" other
    0

/// l2l import: safetensors into an optimizer file.
let runImport (a: ParseResults<ImportArgs>) =
    let input = a.GetResult ImportArgs.Input
    let out = a.GetResult ImportArgs.Out
    let bytes =
        try
            File.ReadAllBytes input
        with
        | :? FileNotFoundException
        | :? DirectoryNotFoundException -> fail "no file '%s'" input
    match OptimizerFile.ofSafetensors bytes with
    | Error e -> bad input e
    | Ok text ->
        AtomicFile.writeText out text |> ignore
        say (sprintf "wrote %s" out)
    0

/// l2l trace: m_φ (one group's φ) on T steps of seeded random gradients whose magnitudes span
/// 10^-8 to 10^2 (both branches of the log-sign preprocessing), its state carried from zero;
/// writes gradients [T,n] and updates [T,n] in the chosen dtype.
let runTrace (settings: RuntimeSettings) (a: ParseResults<TraceArgs>) =
    let spec = a.GetResult TraceArgs.Optimizer
    let steps = defaultArg (a.TryGetResult TraceArgs.Steps) 20
    let n = defaultArg (a.TryGetResult TraceArgs.Coordinates) 1000
    let seed = defaultArg (a.TryGetResult TraceArgs.Seed) 0UL
    if steps < 1 then fail "--steps must be ≥ 1"
    if n < 1 then fail "--coordinates must be ≥ 1"
    let out = a.GetResult TraceArgs.Out
    let dtype, stDtype =
        match defaultArg (a.TryGetResult TraceArgs.Dtype) "float32" with
        | "float32" -> torch.ScalarType.Float32, "F32"
        | "float64" -> torch.ScalarType.Float64, "F64"
        | other -> fail "unknown dtype '%s' (known: float32, float64)" other
    let text = optimizerText spec
    let groups =
        match OptimizerFile.ofJsonGroups text torch.CPU dtype with
        | Error e -> bad spec e
        | Ok g -> g
    let gradients, updates, group =
        try
            let group, _, phi =
                match a.TryGetResult TraceArgs.Group with
                | None -> groups.Head
                | Some g ->
                    match groups |> List.tryFind (fun (name, _, _) -> name = g) with
                    | Some x -> x
                    | None -> fail "no group '%s' in %s (groups: %s)" g spec (groups |> List.map (fun (n, _, _) -> n) |> String.concat ", ")
            use _ = torch.no_grad()
            use _outer = torch.NewDisposeScope()
            use gen = new torch.Generator(seed)
            let gradients = ResizeArray<float[]>()
            let updates = ResizeArray<float[]>()
            let mutable state = LstmState.zeros phi 1 (int64 n)
            for _ in 1 .. steps do
                use scope = torch.NewDisposeScope()
                let z = torch.randn([| int64 n |], dtype = torch.ScalarType.Float64, generator = gen)
                let e = torch.rand([| int64 n |], dtype = torch.ScalarType.Float64, generator = gen).Mul(10.0).Sub(8.0)
                let magnitude: torch.Tensor = torch.pow(torch.tensor(10.0, dtype = torch.ScalarType.Float64), e)
                let grad = (z * magnitude).to_type(dtype)
                let g, s = Lstm.step settings.Backend phi state grad
                let values (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64).contiguous().data<float>().ToArray()
                gradients.Add(values grad)
                updates.Add(values g)
                // the new state outlives this step's scope; the previous one is freed
                let previous = state
                state <- LstmState.ofTensors phi.Config 1 (LstmState.tensors s |> List.map (fun t -> t.MoveToOuterDisposeScope()))
                for t in LstmState.tensors previous do
                    t.Dispose()
            gradients, updates, group
        finally
            OptimizerFile.disposeGroups groups
    let shape = [| int64 steps; int64 n |]
    let bytes =
        Safetensors.write
            [ "gradients", stDtype, shape, Array.concat gradients
              "updates", stDtype, shape, Array.concat updates ]
            [ "format", "l2l-functional/trace"
              "optimizer", spec
              "group", group
              "dtype", stDtype
              "seed", string seed
              "cell", (match settings.Backend.Cell with
                       | Fused when stDtype = "F32" -> "fused"
                       | _ -> "reference") ]
    AtomicFile.write out bytes |> ignore
    say (sprintf "wrote %s: %d steps of m_φ (%s) on %d coordinates" out steps group n)
    0
