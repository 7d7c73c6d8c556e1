/// Throughput and memory of meta-training and of the learned optimizer, measured as a user would
/// compare them: optimizee steps per second (the optimizee's forward and backward, m_φ, the backward
/// through the unroll and the meta-update), after a warm-up, median of several repetitions, and the
/// process's peak resident memory.
module L2L.Cli.Bench

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp
open L2L
open L2L.Kernels
open L2L.Cli.Commands

/// A memory field of /proc/self/status (VmHWM, VmRSS) in MiB; NaN where /proc is not available.
let private statusMib (field: string) =
    try
        File.ReadAllLines "/proc/self/status"
        |> Array.tryFind (fun l -> l.StartsWith(field + ":"))
        |> Option.map (fun l -> float (l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0)
        |> Option.defaultValue nan
    with _ -> nan

/// Peak resident set size of this process, MiB.
let peakRssMib () = statusMib "VmHWM"

/// Current resident set size of this process, MiB.
let currentRssMib () = statusMib "VmRSS"

/// Minor page faults of this process so far (fresh pages the kernel had to map), from /proc/self/stat.
let minorFaults () =
    try
        let stat = File.ReadAllText "/proc/self/stat"
        let fields = stat.Substring(stat.LastIndexOf ')' + 2).Split(' ')
        float (int64 fields[7])
    with _ -> nan

let median (xs: float list) =
    let a = xs |> List.sort |> Array.ofList
    if a.Length = 0 then nan
    elif a.Length % 2 = 1 then a[a.Length / 2]
    else (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2.0

/// The benchmark settings of a task: meta-training configuration, and the evaluation problem size.
let settings (backend: Backend) (task: string) =
    match task with
    | "quadratic" ->
        // 128 functions × 10 in meta-training (1280 coordinates), 1000 × 10 in evaluation
        { Defaults.quadratic with ValidateEvery = 0; Backend = backend }, 1000
    | "mnist" -> { Defaults.meta Defaults.mnistTask with ValidateEvery = 0; Backend = backend }, 1
    | other -> failwithf "unknown benchmark task '%s'" other

/// Seconds per call of f: a warm-up, then the median of timed batches.
let private secondsPerCall (f: unit -> unit) =
    for _ in 1..10 do
        f ()
    median
        [ for _ in 1..7 ->
              let sw = Stopwatch.StartNew()
              for _ in 1..10 do
                  f ()
              sw.Elapsed.TotalSeconds / 10.0 ]

/// How close m_φ comes to the arithmetic floor on n coordinates: achieved GFLOP/s of its forward
/// pass (under no_grad) and of its backward pass (the fused kernel's recomputed gates, input and
/// weight gradients: three times the forward's multiply-adds), against the machine's GEMM rate
/// (a 2048² float32 matrix product through libtorch on the kernel's thread count). The backward is
/// timed twice: through autograd (a differentiable step and `autograd.grad`, less the forward
/// without autograd: what a model's own meta-training pays), and the fused backward alone, as the
/// closed-form meta-gradient calls it (`m_phi_backward_kernel_*`; the paper's LSTM only).
let kernelProfile (backend: Backend) (phi: Phi) (n: int) : JsonObject =
    let c = phi.Config
    let h = c.Hidden
    let inputs = Preprocess.features c.Preprocessing
    // multiply-adds per coordinate: every layer's 4H × (in + H) gate products, and the output layer
    let macs = float ([ for k in 0 .. c.Layers - 1 -> 4 * h * ((if k = 0 then inputs else h) + h) ] |> List.sum) + float h
    let forwardFlop = 2.0 * macs * float n
    use gen = new torch.Generator(17UL)
    let grad = torch.randn([| int64 n |], generator = gen).Mul(1e-3)
    let state = LstmState.zeros phi 1 (int64 n)
    let phiLeaves = Phi.map (fun t -> t.detach().requires_grad_(true)) phi
    let forward =
        secondsPerCall (fun () ->
            use _ = torch.NewDisposeScope()
            use _ = torch.no_grad()
            Lstm.step backend phi state grad |> ignore)
    let forwardBackward =
        secondsPerCall (fun () ->
            use _ = torch.NewDisposeScope()
            let g, s = Lstm.step backend phiLeaves state grad
            let objective = g.sum().Add(s.H |> List.reduce (fun a b -> a.Add(b)) |> fun t -> t.sum())
            torch.autograd.grad([| objective |], List.toArray (Phi.tensors phiLeaves)) |> ignore)
    let backward = max (forwardBackward - forward) 1e-9
    // the backward as the closed-form meta-gradient runs it: the fused kernels into buffers reused
    // from call to call, without autograd, after a forward pass that saved what they read
    let backwardKernel =
        match c.Preprocessing with
        | NormalizedMoments _ -> None
        | _ when backend.Cell <> Fused || not (PhiKernel.wholeStep phi) || not (LstmKernel.available ()) -> None
        | _ ->
            let threads = Backend.kernelThreads backend
            let layers = PhiKernel.layers phi
            let g, hOut, cOut, x =
                use _ = torch.no_grad()
                LstmKernel.stepSaving threads layers phi.WOut phi.BOut c.OutScale (PhiKernel.logSignP phi) state.H state.C grad
            let buffers () = [ for _ in 1 .. c.Layers -> torch.zeros([| int64 h; int64 n |]) ]
            let dhOut, dcOut, dh, dc = buffers (), buffers (), buffers (), buffers ()
            let scratch = torch.zeros([| int64 h; int64 n |])
            let dg = torch.randn([| int64 n |], generator = gen).Mul(1e-3)
            let seconds =
                secondsPerCall (fun () ->
                    use _ = torch.NewDisposeScope()
                    use _ = torch.no_grad()
                    LstmKernel.stepBackwardInto threads layers phi.WOut c.OutScale x state.H state.C hOut dg dhOut dcOut dh dc scratch |> ignore)
            for t in g :: x :: dg :: scratch :: hOut @ cOut @ dhOut @ dcOut @ dh @ dc do
                t.Dispose()
            Some seconds
    // the GEMM rate on as many threads as the kernel has (libtorch's own count is 1 by default)
    let a = torch.randn([| 2048L; 2048L |], generator = gen)
    let torchThreads = torch.get_num_threads ()
    torch.set_num_threads (Backend.kernelThreads backend)
    let gemm = secondsPerCall (fun () -> use _ = torch.NewDisposeScope() in torch.mm(a, a) |> ignore)
    torch.set_num_threads torchThreads
    let gemmGflops = 2.0 * 2048.0 ** 3.0 / gemm / 1e9
    a.Dispose()
    grad.Dispose()
    LstmState.tensors state |> List.iter (fun t -> t.Dispose())
    Phi.tensors phiLeaves |> List.iter (fun t -> t.Dispose())
    let o = JsonObject()
    o["coordinates"] <- JsonValue.Create(n)
    o["implementation"] <- JsonValue.Create(sprintf "%A, %d-float registers" backend.Cell CoordinatewiseLstm.Width)
    o["m_phi_forward_ms"] <- JsonValue.Create(forward * 1e3)
    o["m_phi_forward_gflops"] <- JsonValue.Create(forwardFlop / forward / 1e9)
    o["m_phi_backward_ms"] <- JsonValue.Create(backward * 1e3)
    o["m_phi_backward_gflops"] <- JsonValue.Create(3.0 * forwardFlop / backward / 1e9)
    backwardKernel
    |> Option.iter (fun b ->
        o["m_phi_backward_kernel_ms"] <- JsonValue.Create(b * 1e3)
        o["m_phi_backward_kernel_gflops"] <- JsonValue.Create(3.0 * forwardFlop / b / 1e9))
    o["gemm_peak_gflops"] <- JsonValue.Create(gemmGflops)
    o

/// Where a meta-iteration's time goes, per optimizee step: the optimizee alone (its loss and ∇ as
/// the meta-gradient takes them: hand-derived on the closed-form path, else autograd with the graph
/// kept), m_φ's forward pass alone (no autograd, the meta-training coordinates), and the whole
/// meta-gradient of a truncation; the rest is the backward pass and bookkeeping. Medians of timed
/// truncations.
let metaTrainProfile (cfg: MetaConfig) (data: TaskData) (phis: Phi list) : JsonObject =
    let device = DeviceChoice.resolve cfg.Device
    let problem = TaskSpec.trainProblem data cfg.Task cfg.Seed 1_000_000L cfg.BatchFunctions cfg.Horizon device cfg.DType
    let opt = TaskSpec.learned cfg.Backend cfg.Task phis
    let tr = Scope.run Trajectory.tensors (fun () -> MetaLoss.start opt problem 0L)
    let closed = MetaGradient.usesClosedForm cfg.Backend cfg.Unroll phis tr
    let perStep (f: unit -> unit) =
        // as in meta-training: libtorch on the steps' thread count
        let once () =
            Backend.inSteps cfg.Backend (fun () ->
                use _ = torch.NewDisposeScope()
                f ())
        for _ in 1..3 do
            once ()
        median
            [ for _ in 1..7 ->
                  let sw = Stopwatch.StartNew()
                  once ()
                  sw.Elapsed.TotalSeconds / float cfg.Unroll.Unroll ]
    let optimizee =
        perStep (fun () ->
            for j in 1 .. cfg.Unroll.Unroll do
                match problem.LossGrad with
                | Some lossGrad when closed -> (use _ = torch.no_grad() in lossGrad (tr.Step + j) tr.Theta) |> ignore
                | _ -> Gradient.at problem (tr.Step + j) tr.Theta true false |> ignore)
    // m_φ's forward as the meta-gradient runs it: into buffers reused from step to step
    let forward =
        Spare.within (fun () ->
            perStep (fun () ->
                use _ = torch.no_grad()
                for _ in 1 .. cfg.Unroll.Unroll do
                    let struct (_, s) = opt.Update tr.Opt tr.Grad
                    List.iter Spare.give (OptState.tensors s)))
    let whole = perStep (fun () -> MetaGradient.compute cfg.Backend cfg.Unroll cfg.Task phis tr |> ignore)
    Scope.disposeReplaced (Trajectory.tensors tr) []
    let o = JsonObject()
    o["path"] <- JsonValue.Create(if closed then "closed form (no autograd)" else "autograd")
    o["optimizee_ms_per_step"] <- JsonValue.Create(optimizee * 1e3)
    o["m_phi_forward_ms_per_step"] <- JsonValue.Create(forward * 1e3)
    o["backward_and_rest_ms_per_step"] <- JsonValue.Create((whole - optimizee - forward) * 1e3)
    o["meta_gradient_ms_per_step"] <- JsonValue.Create(whole * 1e3)
    o

/// m_φ's step on the MNIST network's parameters as a TorchSharp optimizer (LearnedOptimizer.step on
/// an nn.Sequential 784-20-10, gradients already in .grad) against the evaluation's flat step on
/// the same 15,910 coordinates (opt.Update and θ + g, as Evaluate.runOne takes them), without the
/// optimizee's loss and gradient: blocks of 200 steps alternating between the two, medians in ms.
let moduleStepProfile (backend: Backend) (phi: Phi) : JsonObject =
    use model = torch.nn.Sequential(torch.nn.Linear(784L, 20L), torch.nn.Sigmoid(), torch.nn.Linear(20L, 10L))
    let ps = model.parameters() |> Array.ofSeq
    use gen = Seeds.generator 5L 31UL 0L
    for p in ps do
        p.grad <- torch.randn(p.shape, generator = gen).Mul(1e-3).DetachFromDisposeScope()
    use opt = new LearnedOptimizer(ps, phi, backend)
    let flat = Learned.optimizer backend phi
    let grad = torch.cat([| for p in ps -> p.grad.reshape(-1L) |], 0L).DetachFromDisposeScope()
    let mutable theta = torch.cat([| for p in ps -> p.detach().reshape(-1L) |], 0L).DetachFromDisposeScope()
    let mutable state = flat.Init 1 theta
    let flatSteps (n: int) =
        Spare.within (fun () ->
            for _ in 1..n do
                let th, s =
                    Backend.inSteps backend <| fun () ->
                    Scope.run (fun (th: Tensor, s: OptState) -> th :: OptState.tensors s) (fun () ->
                        use _ = torch.no_grad()
                        let struct (g, s') = flat.Update state grad
                        Update.apply theta g, s')
                Spare.giveReplaced (OptState.tensors state) (OptState.tensors s)
                Scope.disposeReplaced [ theta ] [ th ]
                theta <- th
                state <- s)
    let moduleSteps (n: int) =
        for _ in 1..n do
            opt.step() |> ignore
    let timed (f: int -> unit) =
        let sw = Stopwatch.StartNew()
        f 200
        sw.Elapsed.TotalMilliseconds / 200.0
    // warm-up: both paths for a second each (the runtime's optimising tier, the pools)
    for f in [ flatSteps; moduleSteps ] do
        let sw = Stopwatch.StartNew()
        while sw.Elapsed.TotalSeconds < 1.0 do
            f 50
    let pairs = [ for _ in 1..7 -> timed flatSteps, timed moduleSteps ]
    Scope.disposeReplaced (theta :: grad :: OptState.tensors state) []
    let flatMs = median (List.map fst pairs)
    let moduleMs = median (List.map snd pairs)
    let o = JsonObject()
    o["coordinates"] <- JsonValue.Create(ps |> Array.sumBy (fun p -> p.numel()))
    o["flat_ms_per_step"] <- JsonValue.Create(flatMs)
    o["module_ms_per_step"] <- JsonValue.Create(moduleMs)
    o["ratio"] <- JsonValue.Create(moduleMs / flatMs)
    o

/// The environment variables that choose instruction sets (.NET, libtorch's ATen and MKL, OpenBLAS).
let isaVariables =
    [ "DOTNET_EnableAVX512"; "DOTNET_EnableAVX512F"; "DOTNET_PreferredVectorBitWidth"; "ATEN_CPU_CAPABILITY"
      "MKL_ENABLE_INSTRUCTIONS"; "OPENBLAS_CORETYPE" ]

[<Runtime.InteropServices.UnmanagedFunctionPointer(Runtime.InteropServices.CallingConvention.Cdecl)>]
type private StringReturning = delegate of nativeint -> nativeint

/// libtorch's ATen CPU capability (at::get_cpu_capability(): "AVX512", "AVX2", "DEFAULT"), read from
/// libtorch_cpu; "unknown" where it cannot be.
let atenCapability () =
    try
        let lib = Runtime.InteropServices.NativeLibrary.Load("torch_cpu", typeof<torch.Tensor>.Assembly, Nullable())
        let fn = Runtime.InteropServices.NativeLibrary.GetExport(lib, "_ZN2at18get_cpu_capabilityB5cxx11Ev")
        // a std::string returned through a hidden pointer: { char* data; size_t length; char local[16] }
        let buf = Runtime.InteropServices.Marshal.AllocHGlobal 64
        try
            Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer<StringReturning>(fn).Invoke(buf) |> ignore
            let data = Runtime.InteropServices.Marshal.ReadIntPtr buf
            let length = Runtime.InteropServices.Marshal.ReadInt64(buf, 8)
            if length > 0L && length < 16L then Runtime.InteropServices.Marshal.PtrToStringAnsi(data, int length) else "unknown"
        finally
            Runtime.InteropServices.Marshal.FreeHGlobal buf
    with _ -> "unknown"

/// The instruction sets this process runs: the fused kernels' register width, what .NET enables,
/// the CPU's own AVX-512 flag, libtorch's ATen capability and the variables that chose them.
let isa () =
    let o = JsonObject()
    let width = L2L.Kernels.CoordinatewiseLstm.Width
    o["kernel_bits"] <- JsonValue.Create(width * 32)
    o["dotnet_vector512"] <- JsonValue.Create(Runtime.Intrinsics.Vector512.IsHardwareAccelerated)
    o["dotnet_avx512f"] <- JsonValue.Create(Runtime.Intrinsics.X86.Avx512F.IsSupported)
    o["dotnet_avx2"] <- JsonValue.Create(Runtime.Intrinsics.X86.Avx2.IsSupported)
    o["dotnet_fma"] <- JsonValue.Create(Runtime.Intrinsics.X86.Fma.IsSupported)
    let cpuAvx512 =
        try File.ReadAllLines "/proc/cpuinfo" |> Array.exists (fun l -> l.StartsWith "flags" && l.Contains " avx512f")
        with _ -> false
    o["cpu_avx512f"] <- JsonValue.Create(cpuAvx512)
    o["aten_capability"] <- JsonValue.Create(atenCapability ())
    let env = JsonObject()
    for v in isaVariables do
        match Environment.GetEnvironmentVariable v with
        | null -> ()
        | value -> env[v] <- JsonValue.Create(value)
    o["environment"] <- env
    o

/// One line naming the instruction sets of a measurement.
let describeIsa (o: JsonNode) =
    let bits = o["kernel_bits"].GetValue<int>()
    sprintf "fused kernels %d-bit (%s), libtorch ATen %s%s" bits
        (match bits with
         | 512 -> "AVX-512"
         | 256 -> (if o["dotnet_fma"].GetValue<bool>() then "AVX2 + FMA" else "AVX2")
         | _ -> "scalar")
        (o["aten_capability"].GetValue<string>())
        (match o["environment"]["MKL_ENABLE_INSTRUCTIONS"] with
         | null -> ""
         | v -> ", MKL_ENABLE_INSTRUCTIONS=" + v.GetValue<string>())

/// Measures one task in this process.
let measure (runtime: RuntimeSettings) (task: string) (reps: int) : JsonObject =
    let cfg, evalCount = settings runtime.Backend task
    let data = dataFor runtime cfg.Task cfg.Device
    let perTrajectory = cfg.Horizon / cfg.Unroll.Unroll
    // meta-training: five trajectories of warm-up, then `reps` trajectories, each timed; the
    // meta-iterations run as in MetaTrain.run, without validation
    // resident memory at each stage (the memory profile), also printed with L2L_MEMTRACE=1
    let stages = JsonObject()
    let trace (what: string) =
        let rss = currentRssMib ()
        stages[what] <- JsonValue.Create(Math.Round(rss, 1))
        if runtime.MemoryTrace then
            eprintfn "%-16s RSS %7.1f MiB, peak %7.1f MiB" what rss (peakRssMib ())
    // the switches for A/B runs (the kernel's chunk size, the meta-gradient's path, the kernel's
    // threads) were applied by Runtime.configure; the heap's trimming is the benchmark's own
    let trimEachIteration = runtime.TrimEachIteration
    torch.zeros(1L).Dispose()
    trace "libtorch"
    let mutable state = MetaTrain.init cfg
    let iteration () =
        let next, _ = Scope.run (fun (n: TrainState, _) -> TrainState.tensors n) (fun () -> MetaTrain.step cfg data state)
        Scope.disposeReplaced (TrainState.tensors state) (TrainState.tensors next)
        state <- next
        if trimEachIteration then L2L.Runtime.releaseFreeMemory () |> ignore
    iteration ()
    trace "first_iteration"
    for _ in 2 .. 5 * perTrajectory do
        iteration ()
    trace "training_warm"
    let trainFaults0 = minorFaults ()
    let train =
        [ for _ in 1..reps ->
              let sw = Stopwatch.StartNew()
              for _ in 1..perTrajectory do
                  iteration ()
              float cfg.Horizon / sw.Elapsed.TotalSeconds ]
    let trainFaults = (minorFaults () - trainFaults0) / float (reps * cfg.Horizon)
    // the end of training as in MetaTrain.run: the closed form's buffers are released
    FirstOrder.releaseWorkspace ()
    // evaluation of m_φ (no autograd; ∇ from the task's hand-derived gradient), on fresh problems
    let problems = TaskSpec.heldOut data cfg.Task EvalSplit 1000UL evalCount cfg.Horizon (DeviceChoice.resolve cfg.Device) cfg.DType
    trace "training_done"
    let opt = TaskSpec.learned cfg.Backend cfg.Task state.Phis
    // warm-up: whole evaluations for at least 3 s. The evaluation's own code is new to the process,
    // and while the runtime recompiles it at its optimising tier (in the background, on one of the
    // two cores the kernel's threads use) a step took up to 4 ms instead of 1.5: measured, the first
    // three timed runs after a 50-step warm-up gave 413–481 steps/s, the next 613–627
    let warm = Stopwatch.StartNew()
    while warm.Elapsed.TotalSeconds < 3.0 do
        Evaluate.run cfg.Backend opt problems cfg.Horizon |> ignore
    trace "evaluation"
    let faults0 = minorFaults ()
    let eval =
        [ for _ in 1..reps ->
              let r = Evaluate.run cfg.Backend opt problems cfg.Horizon
              float r.Steps / r.Seconds ]
    let evalFaults = (minorFaults () - faults0) / float (reps * cfg.Horizon)
    // the optimizee's share of an evaluation step: its loss and ∇ at θ_0 (no update), on the
    // steps' libtorch thread count as in the evaluation
    let optimizeeEval =
        secondsPerCall (fun () ->
            Backend.inSteps cfg.Backend <| fun () ->
            use _ = torch.NewDisposeScope()
            for p in problems do
                match p.LossGrad with
                | Some lossGrad -> (use _ = torch.no_grad() in lossGrad 1 p.Theta0) |> ignore
                | None ->
                    let leaf = p.Theta0.detach().requires_grad_(true)
                    torch.autograd.grad([| Problem.loss p 1 leaf |], [| leaf |]) |> ignore)
    List.iter Problem.dispose problems
    let peak = peakRssMib ()
    let kernel = kernelProfile cfg.Backend (List.head state.Phis) (TaskSpec.coordinates cfg.Task * evalCount)
    let metaTrain = metaTrainProfile cfg data state.Phis
    let moduleStep = if task = "mnist" then Some(moduleStepProfile cfg.Backend (List.head state.Phis)) else None
    TrainState.dispose state
    let o = JsonObject()
    o["meta_train_steps_per_s"] <- JsonValue.Create(median train)
    o["eval_steps_per_s"] <- JsonValue.Create(median eval)
    o["peak_rss_mib"] <- JsonValue.Create(peak)
    o["meta_train_coordinates"] <- JsonValue.Create(TaskSpec.coordinates cfg.Task * cfg.BatchFunctions)
    o["eval_coordinates"] <- JsonValue.Create(TaskSpec.coordinates cfg.Task * evalCount)
    o["repetitions"] <- JsonValue.Create(reps)
    o["meta_train_samples"] <- JsonArray(train |> List.map (fun v -> JsonValue.Create(v) :> JsonNode) |> Array.ofList)
    o["eval_samples"] <- JsonArray(eval |> List.map (fun v -> JsonValue.Create(v) :> JsonNode) |> Array.ofList)
    o["rss_mib_by_stage"] <- stages
    o["meta_train_minor_faults_per_step"] <- JsonValue.Create(trainFaults)
    o["eval_minor_faults_per_step"] <- JsonValue.Create(evalFaults)
    o["eval_optimizee_ms_per_step"] <- JsonValue.Create(optimizeeEval * 1e3)
    o["kernel"] <- kernel
    o["isa"] <- isa ()
    o["meta_train_profile"] <- metaTrain
    moduleStep |> Option.iter (fun m -> o["module_step"] <- m)
    o

let machine (runtime: RuntimeSettings) =
    let o = JsonObject()
    let cpu =
        try File.ReadAllLines "/proc/cpuinfo" |> Array.tryFind (fun l -> l.StartsWith "model name") |> Option.map (fun l -> (l.Split(':')[1]).Trim())
        with _ -> None
    o["cpu"] <- JsonValue.Create(defaultArg cpu "unknown")
    o["cores"] <- JsonValue.Create(Environment.ProcessorCount)
    o["kernel_threads"] <- JsonValue.Create(Backend.kernelThreads runtime.Backend)
    o["libtorch_threads"] <- JsonValue.Create(torch.get_num_threads ())
    o["os"] <- JsonValue.Create(Runtime.InteropServices.RuntimeInformation.OSDescription)
    o["libtorch"] <- JsonValue.Create("2.10.0 (CPU), TorchSharp 0.107.0")
    o

/// The reference PyTorch implementation's script, beside the repository (../shared/peer), if present.
let defaultPeer () =
    let rec up (d: DirectoryInfo) =
        if isNull d then None
        elif File.Exists(Path.Combine(d.FullName, "L2L.Functional.sln")) then Some d.FullName
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)
    |> Option.map (fun root -> Path.GetFullPath(Path.Combine(root, "..", "shared", "peer", "l2l_peer.py")))

let private runProcess (env: (string * string) list) (file: string) (args: string list) =
    let psi = ProcessStartInfo(file, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do
        psi.ArgumentList.Add a
    for k, v in env do
        psi.Environment[k] <- v
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let text = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    if p.ExitCode <> 0 then failwithf "%s %s failed (exit %d): %s" file (String.concat " " args) p.ExitCode (err.Result.Trim())
    text.Split('\n') |> Array.findBack (fun l -> l.StartsWith "{") |> JsonNode.Parse

/// Our measurement of one task, in a child process (so its peak RSS is that task's alone).
/// The instruction sets a run is confined to: none (what the machine has), or AVX2 for .NET,
/// libtorch (ATen, MKL) and, for the peer, OpenBLAS and ATen.
type IsaChoice =
    | Native
    | Avx2

let private oursEnv (choice: IsaChoice) =
    match choice with
    | Native -> []
    | Avx2 -> [ "DOTNET_EnableAVX512", "0"; "ATEN_CPU_CAPABILITY", "avx2"; "MKL_ENABLE_INSTRUCTIONS", "AVX2" ]

let private peerEnv (choice: IsaChoice) =
    match choice with
    | Native -> []
    | Avx2 -> [ "OPENBLAS_CORETYPE", "Haswell"; "ATEN_CPU_CAPABILITY", "avx2"; "MKL_ENABLE_INSTRUCTIONS", "AVX2" ]

/// What the peer's Python runs on: PyTorch's CPU capability and OpenBLAS's core (under the same
/// variables as the peer's runs).
let private peerIsa (choice: IsaChoice) =
    let probe =
        "import json, ctypes, torch\n"
        + "cap = [l.split(':')[1].strip() for l in torch.__config__.show().split('\\n') if 'CPU capability usage' in l]\n"
        + "core = 'unknown'\n"
        + "for lib in ['libopenblas.so.0', 'libblas.so.3']:\n"
        + "    try:\n"
        + "        f = ctypes.CDLL(lib).openblas_get_corename; f.restype = ctypes.c_char_p; core = f().decode(); break\n"
        + "    except Exception: pass\n"
        + "print(json.dumps({'torch': torch.__version__, 'torch_capability': cap[0] if cap else 'unknown', 'openblas_core': core}))\n"
    let o = runProcess (peerEnv choice) "/usr/bin/python3" [ "-c"; probe ]
    let env = JsonObject()
    for k, v in peerEnv choice do
        env[k] <- JsonValue.Create(v)
    o["environment"] <- env
    o

let private ours (choice: IsaChoice) (runtime: RuntimeSettings) (task: string) (reps: int) =
    let self = Environment.ProcessPath
    let dll = Reflection.Assembly.GetEntryAssembly().Location
    let threads = string (Backend.kernelThreads runtime.Backend)
    let m = runProcess (oursEnv choice) self [ dll; "bench"; "--task"; task; "--reps"; string reps; "--child"; "--threads"; threads; "--data-dir"; runtime.DataDirectory ]
    if choice = Avx2 then
        // each setting must have taken effect, or the run measures something else
        let i = m["isa"]
        if i["kernel_bits"].GetValue<int>() <> 256 then
            failwithf "DOTNET_EnableAVX512=0 did not take effect: the fused kernels ran %d-bit" (i["kernel_bits"].GetValue<int>())
        match i["aten_capability"].GetValue<string>() with
        | "AVX2" | "unknown" -> ()
        | other -> failwithf "ATEN_CPU_CAPABILITY=avx2 did not take effect: libtorch runs %s" other
    m

/// The peer's measurement of the same settings: a short run of its script (5 meta-epochs, no baselines,
/// no validation, the LSTM evaluated for 100 steps on the same problem sizes).
let private peer (choice: IsaChoice) (runtime: RuntimeSettings) (script: string) (task: string) =
    let common = [ "--meta-epochs"; "5"; "--baselines"; "--val-every"; "0"; "--eval-steps"; "100"; "--threads"; string (Backend.kernelThreads runtime.Backend) ]
    let args =
        match task with
        | "quadratic" -> [ script; "quadratic" ] @ common @ [ "--tune-funcs"; "10"; "--eval-funcs"; "1000" ]
        | _ -> [ script; "mnist" ] @ common @ [ "--tune-runs"; "1"; "--eval-runs"; "1"; "--data-dir"; runtime.DataDirectory ]
    let j = runProcess (peerEnv choice) "/usr/bin/python3" args
    let o = JsonObject()
    o["meta_train_steps_per_s"] <- JsonValue.Create(j["meta_train_steps_per_s"].GetValue<float>())
    o["eval_steps_per_s"] <- JsonValue.Create(j["eval_steps_per_s_lstm"].GetValue<float>())
    o["peak_rss_mib"] <- JsonValue.Create(j["peak_rss_mib"].GetValue<float>())
    o

let private keys = [ "meta_train_steps_per_s"; "eval_steps_per_s"; "peak_rss_mib" ]

/// One measurement as soon as it is taken: task, side, run, the three values (and the benchmark's
/// progress: one unit per measurement).
let private announce (task: string) (side: string) (run: int) (total: int) (m: JsonNode) =
    let v (k: string) = (m[k]).GetValue<float>()
    progress.Value.Advance()
    say
        (String.Format(Globalization.CultureInfo.InvariantCulture, "{0,-10} {1,-5} run {2}/{3}: meta-train {4:F1} steps/s, eval {5:F1} steps/s, peak RSS {6:F0} MiB",
                       task, side, run, total, v "meta_train_steps_per_s", v "eval_steps_per_s", v "peak_rss_mib"))
    m

let private medianOf (runs: JsonNode list) =
    let o = JsonObject()
    for k in keys do
        o[k] <- JsonValue.Create(median [ for r in runs -> (r[k]).GetValue<float>() ])
    o

/// Field by field, the median of profiles of the same shape (numbers; anything else as in the first).
let private medianProfile (profiles: JsonNode list) =
    let o = JsonObject()
    for KeyValue(k, v) in (List.head profiles).AsObject() do
        o[k] <-
            match v with
            | :? JsonValue as x when x.GetValueKind() = JsonValueKind.Number ->
                JsonValue.Create(median [ for p in profiles -> (p[k]).GetValue<float>() ]) :> JsonNode
            | x -> JsonNode.Parse(x.ToJsonString())
    o

/// Measures each task (and with `peer`, the reference script on the same settings, alternating run by
/// run), prints a table with the ratios ours / peer, and writes the JSON.
let run (runtime: RuntimeSettings) (choice: IsaChoice) (tasks: string list) (reps: int) (peerScript: string option) (out: string) =
    peerScript |> Option.iter (fun p -> if not (File.Exists p) then failwithf "the peer script %s does not exist" p)
    if peerScript.IsSome && not (File.Exists "/usr/bin/python3") then failwith "--peer needs /usr/bin/python3 with torch (see ../shared/peer/README.md)"
    let results = JsonObject()
    progress.Value.Phase("benchmark", float (tasks.Length * (if peerScript.IsSome then 2 * reps else 1)), "measurements")
    for task in tasks do
        let entry = JsonObject()
        match peerScript with
        | None ->
            let m = announce task "ours" 1 1 (ours choice runtime task reps)
            entry["ours"] <- m
            entry["isa"] <- JsonNode.Parse(m["isa"].ToJsonString())
        | Some script ->
            // alternating: ours, peer, ours, peer, ... each run measured whole; medians over the runs
            if task = "mnist" then dataFor runtime Defaults.mnistTask Cpu |> ignore // the IDX files the peer reads too
            let pairs =
                [ for k in 1..reps ->
                      let us = announce task "ours" k reps (ours choice runtime task 3)
                      us, announce task "peer" k reps (peer choice runtime script task :> JsonNode) ]
            let o = medianOf (pairs |> List.map fst)
            let p = medianOf (pairs |> List.map snd)
            let ratio = JsonObject()
            for k in keys do
                ratio[k] <- JsonValue.Create((o[k]).GetValue<float>() / (p[k]).GetValue<float>())
            entry["ours"] <- o
            entry["peer"] <- p
            entry["ratio"] <- ratio
            // every pair, in the order run
            entry["runs"] <-
                JsonArray(
                    pairs
                    |> List.map (fun (us, them) ->
                        let r = JsonObject()
                        r["ours"] <- medianOf [ us ]
                        r["ours_profile"] <- JsonNode.Parse((us["kernel"]).ToJsonString())
                        r["peer"] <- JsonNode.Parse(them.ToJsonString())
                        r :> JsonNode)
                    |> Array.ofList)
            // m_φ against the GEMM rate: the median over our runs (each run's in `runs`); the memory
            // by stage and the meta-training profile of our first run
            let first = fst pairs.Head
            entry["isa"] <- JsonNode.Parse((first["isa"]).ToJsonString())
            entry["profile"] <- medianProfile [ for us, _ in pairs -> us["kernel"] ]
            entry["rss_mib_by_stage"] <- JsonNode.Parse((first["rss_mib_by_stage"]).ToJsonString())
            entry["meta_train_profile"] <- JsonNode.Parse((first["meta_train_profile"]).ToJsonString())
            match first["module_step"] with
            | null -> ()
            | m -> entry["module_step"] <- JsonNode.Parse(m.ToJsonString())
        results[task] <- entry
    progress.Value.Finish()
    let doc = JsonObject()
    let m = machine runtime
    // the instruction sets of the measured processes (ours: the first task's child; the peer: a probe)
    let firstIsa = results[tasks.Head]["isa"]
    m["isa"] <- JsonNode.Parse(firstIsa.ToJsonString())
    m["isa_choice"] <- JsonValue.Create(match choice with Native -> "native" | Avx2 -> "avx2")
    let peerInfo =
        match peerScript with
        | Some _ -> Some(peerIsa choice)
        | None -> None
    peerInfo |> Option.iter (fun p -> m["peer_isa"] <- p)
    doc["machine"] <- m
    doc["tasks"] <- results
    AtomicFile.writeText out (doc.ToJsonString(JsonSerializerOptions(WriteIndented = true))) |> ignore
    printfn "instruction sets: ours %s%s" (describeIsa m["isa"])
        (match peerInfo with
         | Some p -> sprintf "; peer PyTorch %s (CPU capability %s), OpenBLAS %s" (p["torch"].GetValue<string>()) (p["torch_capability"].GetValue<string>()) (p["openblas_core"].GetValue<string>())
         | None -> "")
    printfn "%-10s %-6s %22s %18s %14s" "task" "" "meta-train steps/s" "eval steps/s" "peak RSS MiB"
    for task in tasks do
        for who in [ "ours"; "peer"; "ratio" ] do
            match results[task][who] with
            | null -> ()
            | o ->
                let v (k: string) = (o[k]).GetValue<float>()
                printfn "%-10s %-6s %s" task who (String.Format(Globalization.CultureInfo.InvariantCulture, (if who = "ratio" then "{0,22:F2} {1,18:F2} {2,14:F2}" else "{0,22:F1} {1,18:F1} {2,14:F0}"), v "meta_train_steps_per_s", v "eval_steps_per_s", v "peak_rss_mib"))
    for task in tasks do
        let profile =
            match results[task]["profile"] with
            | null -> (match results[task]["ours"] with null -> null | o -> o["kernel"])
            | p -> p
        if not (isNull profile) then
            let v (k: string) = match profile[k] with null -> nan | x -> x.GetValue<float>()
            let gemm = v "gemm_peak_gflops"
            printfn "%s"
                (String.Format(Globalization.CultureInfo.InvariantCulture,
                               "{0,-10} m_φ on {1:F0} coordinates against the GEMM ({2:F0} GFLOP/s): forward {3:F0} ({4:F2}), backward kernel {5:F0} ({6:F2}), backward through autograd {7:F0} ({8:F2})",
                               task, v "coordinates", gemm, v "m_phi_forward_gflops", v "m_phi_forward_gflops" / gemm,
                               v "m_phi_backward_kernel_gflops", v "m_phi_backward_kernel_gflops" / gemm, v "m_phi_backward_gflops", v "m_phi_backward_gflops" / gemm))
    for task in tasks do
        let m =
            match results[task]["module_step"] with
            | null -> (match results[task]["ours"] with null -> null | o -> o["module_step"])
            | m -> m
        if not (isNull m) then
            let v (k: string) = (m[k]).GetValue<float>()
            printfn "%s"
                (String.Format(Globalization.CultureInfo.InvariantCulture,
                               "{0,-10} m_φ step on {1:F0} parameters: flat {2:F3} ms, LearnedOptimizer.step {3:F3} ms, ratio {4:F3}",
                               task, v "coordinates", v "flat_ms_per_step", v "module_ms_per_step", v "ratio"))
    printfn "→ %s" out

/// `tools/l2l bench`.
let runBench (runtime: RuntimeSettings) (a: Argu.ParseResults<L2L.Cli.Args.BenchArgs>) =
    let reps = a.GetResult(L2L.Cli.Args.BenchArgs.Reps, 5)
    if reps < 1 then L2L.Cli.Commands.fail "reps must be ≥ 1"
    let tasks =
        match a.GetResult(L2L.Cli.Args.BenchArgs.Task, "all") with
        | "all" -> [ "quadratic"; "mnist" ]
        | ("quadratic" | "mnist") as t -> [ t ]
        | other -> L2L.Cli.Commands.fail "unknown benchmark task '%s' (quadratic, mnist or all)" other
    if a.Contains L2L.Cli.Args.BenchArgs.Child then
        printfn "%s" ((measure runtime tasks.Head reps).ToJsonString())
    else
        let peer =
            if a.Contains L2L.Cli.Args.BenchArgs.Peer then
                match a.GetResult L2L.Cli.Args.BenchArgs.Peer |> Option.orElse (defaultPeer ()) with
                | Some p -> Some p
                | None -> L2L.Cli.Commands.fail "--peer: give the path of l2l_peer.py"
            else None
        let choice =
            match a.GetResult(L2L.Cli.Args.BenchArgs.Isa, "native") with
            | "native" -> Native
            | "avx2" -> Avx2
            | other -> L2L.Cli.Commands.fail "unknown instruction-set choice '%s' (native or avx2)" other
        run runtime choice tasks reps peer (a.GetResult(L2L.Cli.Args.BenchArgs.Out, "bench.json"))
    0
