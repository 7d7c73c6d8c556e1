/// The process's set-up, in one place: environment variables and native tunables are read and
/// applied here, by the entry points only (the command line's and the worker's Program, the F#
/// script prelude, the test runners' Main), before libtorch is loaded. The core reads none of them:
/// it gets the resulting `Backend` as a value.
namespace L2L

open System
open System.IO
open System.Runtime.InteropServices
open TorchSharp

/// What the entry point chose, for the rest of the process.
type RuntimeSettings =
    { /// How the core computes (pass it in MetaConfig and EvalSettings).
      Backend: Backend
      /// libtorch's thread count outside the steps of learned-optimizer work.
      TorchThreads: int
      /// The MNIST data directory.
      DataDirectory: string
      /// Hand the C heap's free memory back after every meta-iteration of the benchmark
      /// (L2L_MALLOC_TRIM=1).
      TrimEachIteration: bool
      /// Print the benchmark's resident memory at each stage (L2L_MEMTRACE=1).
      MemoryTrace: bool }

module Runtime =
    [<DllImport("libc", EntryPoint = "setenv")>]
    extern int private setenv(string name, string value, int overwrite)

    [<DllImport("libc", EntryPoint = "malloc_trim")>]
    extern int private malloc_trim(unativeint pad)

    [<DllImport("libc", EntryPoint = "mallopt")>]
    extern int private mallopt(int param, int value)

    /// Returns the C heap's free memory to the system (glibc's malloc_trim); false where unavailable.
    let releaseFreeMemory () =
        OperatingSystem.IsLinux()
        && (try malloc_trim 0un <> 0 with _ -> false)

    let private variable (name: string) =
        match Environment.GetEnvironmentVariable name with
        | null -> None
        | v when String.IsNullOrWhiteSpace v -> None
        | v -> Some(v.Trim())

    /// glibc's allocator policy for this process's tensors (unless the environment sets one through
    /// MALLOC_*_ variables or GLIBC_TUNABLES). By default glibc maps blocks above a threshold that
    /// it raises to the largest block freed, and returns the heap's free top above twice that:
    /// m_φ's states of [H; n] floats (1.2 MiB each on MNIST) were then given back and faulted in
    /// again at every step (225–407 page faults per evaluation step, evaluation 2× slower). Fixed
    /// thresholds keep blocks below 32 MiB (glibc's largest) on the heap and up to 256 MiB of its
    /// free top mapped: with 16 and 32 MiB, the conv net's loss on 50,000 images (patch matrices of
    /// about 28 MiB per 1000 rows) took 2.2–3.3 s and 250,000 page faults, with 32 and 256 MiB
    /// 0.36–0.43 s and 3,000–4,000.
    let private tuneAllocator () =
        let chosen =
            Environment.GetEnvironmentVariables().Keys
            |> Seq.cast<string>
            |> Seq.exists (fun k -> k.StartsWith "MALLOC_" || k = "GLIBC_TUNABLES")
        if not chosen then
            try
                // M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3
                mallopt (-3, 32 <<< 20) |> ignore
                mallopt (-1, 256 <<< 20) |> ignore
            with _ -> ()

    /// libtorch's OpenMP workers spin-wait after every parallel region by default; on a machine
    /// with few cores they then compete with the fused LSTM kernel's threads (measured: MNIST
    /// meta-training 82 → 112 steps/s, evaluation 244 → 343 on 2 cores). This makes them sleep
    /// instead (OMP_WAIT_POLICY=PASSIVE) unless the environment already chooses a policy; without
    /// effect once libtorch is loaded.
    let private prepareNative () =
        if OperatingSystem.IsLinux() then
            if (variable "OMP_WAIT_POLICY").IsNone then
                try
                    setenv ("OMP_WAIT_POLICY", "PASSIVE", 0) |> ignore
                with _ -> ()
            tuneAllocator ()

    /// The user's cache of this toolkit: ~/.cache/l2l-functional (MNIST, fixed native libraries).
    let private userCache () =
        Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache", "l2l-functional")

    /// The version folders of libtorch packages in a NuGet packages folder, best first: the version
    /// `wanted` (TorchSharp's), then the CPU build before others, then newer before older.
    let libtorchVersions (packages: string) (wanted: string option) : string[] =
        let versionOf (dir: string) =
            match Version.TryParse((Path.GetFileName dir).Split('-')[0]) with
            | true, v -> v
            | _ -> Version(0, 0)
        let rank (dir: string) =
            (if Some(Path.GetFileName dir) = wanted then 0 else 1),
            (if Path.GetFileName(Path.GetDirectoryName dir).StartsWith "libtorch-cpu-" then 0 else 1)
        Directory.GetDirectories(packages, "libtorch-*")
        |> Array.collect Directory.GetDirectories
        |> Array.sortWith (fun a b ->
            match compare (rank a) (rank b) with
            | 0 -> compare (versionOf b) (versionOf a)
            | c -> c)

    /// TorchSharp's native library where no build put a fixed copy next to the program (F#
    /// Interactive, notebooks): if its requirement on GLIBCXX_3.4.32 is strong and this system's
    /// libstdc++ lacks that version (Debian 12), a copy with the requirement marked weak is kept in
    /// ~/.cache/l2l-functional/native/<hash>/ and loaded, after libtorch.so from the same directory
    /// or the libtorch package beside TorchSharp's in the NuGet packages folder, so that TorchSharp
    /// finds both loaded. Elsewhere, and in build outputs already fixed, nothing happens.
    let loadTorchSharpNative () : Result<unit, string> =
        let version = "GLIBCXX_3.4.32"
        if not (OperatingSystem.IsLinux()) then
            Ok()
        else
            let torchSharpDir = Path.GetDirectoryName(typeof<torch.Tensor>.Assembly.Location)
            let nativeDir (d: string) = Path.Combine(d, "runtimes", "linux-x64", "native")
            let candidates =
                [ if not (String.IsNullOrEmpty AppContext.BaseDirectory) then
                      AppContext.BaseDirectory
                      nativeDir AppContext.BaseDirectory
                  if not (String.IsNullOrEmpty torchSharpDir) then
                      torchSharpDir
                      nativeDir torchSharpDir
                      nativeDir (Path.Combine(torchSharpDir, "..", "..")) ]
                |> List.map (fun d -> Path.Combine(d, "libLibTorchSharp.so"))
            let first (e: exn) = (e.Message.Split('\n')[0]).Trim()
            try
                match candidates |> List.tryFind File.Exists with
                | None -> Ok()
                | Some lib ->
                    let bytes = File.ReadAllBytes lib
                    let libtorch () =
                        let beside = Path.Combine(Path.GetDirectoryName lib, "libtorch.so")
                        if File.Exists beside then
                            Some beside
                        else
                            // <packages>/torchsharp/<version>/lib/<tfm>/TorchSharp.dll beside
                            // <packages>/libtorch-*/<version>/: the version TorchSharp was built for first
                            // (then newer before older), the CPU build first (TorchSharp's default backend)
                            let packages = Path.GetFullPath(Path.Combine(torchSharpDir, "..", "..", "..", ".."))
                            let wanted =
                                typeof<RuntimeSettings>.Assembly.GetCustomAttributes(typeof<Reflection.AssemblyMetadataAttribute>, false)
                                |> Seq.cast<Reflection.AssemblyMetadataAttribute>
                                |> Seq.tryPick (fun a -> if a.Key = "L2L.LibTorchVersion" then Some a.Value else None)
                            if Directory.Exists packages then
                                libtorchVersions packages wanted
                                |> Array.map (fun v -> Path.Combine(nativeDir v, "libtorch.so"))
                                |> Array.tryFind File.Exists
                            else
                                None
                    match L2L.Native.VersionNeed.Inspect(bytes, version) with
                    | L2L.Native.WeakMark.Marked, _ when L2L.Native.VersionNeed.SystemLacks version ->
                        match libtorch () with
                        | None -> Error(sprintf "%s needs %s, which this system's libstdc++ lacks, and no libtorch.so was found to load before a fixed copy (reference a libtorch package)" lib version)
                        | Some libtorch ->
                            let hash =
                                Convert.ToHexString(Security.Cryptography.SHA256.HashData bytes).Substring(0, 16).ToLowerInvariant()
                            let fixedCopy = Path.Combine(userCache (), "native", hash, "libLibTorchSharp.so")
                            try
                                if not (File.Exists fixedCopy) then
                                    L2L.Native.VersionNeed.MarkWeak(lib, fixedCopy, version) |> ignore
                                NativeLibrary.Load libtorch |> ignore
                                NativeLibrary.Load fixedCopy |> ignore
                                Ok()
                            with e ->
                                Error(sprintf "loading TorchSharp's native library with %s marked weak (%s) failed: %s" version fixedCopy (first e))
                    | L2L.Native.WeakMark.AlreadyWeak, _ when L2L.Native.VersionNeed.SystemLacks version ->
                        // a fixed copy (a build's output): load it by its path, so that TorchSharp does not
                        // copy the original out of the package cache beside itself and load that instead
                        match libtorch () with
                        | None -> Ok()
                        | Some libtorch ->
                            try
                                NativeLibrary.Load libtorch |> ignore
                                NativeLibrary.Load lib |> ignore
                                Ok()
                            with e -> Error(sprintf "loading TorchSharp's native library (%s) failed: %s" lib (first e))
                    | _ -> Ok()
            with e -> Error(sprintf "TorchSharp's native library could not be examined: %s" (first e))

    let private count (name: string) (least: int) : Result<int option, string> =
        match variable name with
        | None -> Ok None
        | Some t ->
            match Int32.TryParse t with
            | true, v when v >= least -> Ok(Some v)
            | _ -> Error(sprintf "%s must be an integer ≥ %d, not '%s'" name least t)

    /// loadTorchSharpNative's outcome, for the process: it reads two libraries' bytes, once.
    let private nativeLoaded = lazy (loadTorchSharpNative ())

    /// The MNIST directory: an explicit one, else $L2L_DATA_DIR, else ~/.cache/l2l-functional/mnist.
    let dataDirectory (explicitDir: string option) =
        match explicitDir with
        | Some d when not (String.IsNullOrWhiteSpace d) -> d
        | _ ->
            match variable "L2L_DATA_DIR" with
            | Some d -> d
            | None -> Path.Combine(userCache (), "mnist")

    /// The process's set-up for `threads` threads (None: one per core) and an explicit MNIST
    /// directory: native tunables first (before libtorch loads), then the environment's choices,
    /// then libtorch's thread count. Idempotent. The fused kernels spread m_φ's coordinates over
    /// the threads, and so does libtorch for its own operations (whole data sets, baseline tuning)
    /// unless L2L_TORCH_THREADS sets its count apart; inside the steps of learned-optimizer work
    /// libtorch runs on L2L_STEP_TORCH_THREADS (default 1; 0: as outside). Switches for A/B runs:
    /// L2L_META_GRADIENT=autograd (no closed form), L2L_CELL=reference (no fused kernel),
    /// L2L_MIN_CHUNK=N (the kernel's per-thread minimum), L2L_KERNEL_TEAM=0 (the .NET thread pool
    /// instead of the kernel's team). Errors name the variable. `beforeTorch` runs after the native
    /// tunables and before libtorch is first touched (F# Interactive loads libtorch's libraries
    /// there).
    let configureWith (beforeTorch: unit -> unit) (threads: int option) (dataDir: string option) : Result<RuntimeSettings, string> =
        prepareNative ()
        beforeTorch ()
        let loaded = nativeLoaded.Force()
        let threads =
            match threads with
            | Some n when n < 1 -> Error(sprintf "threads must be ≥ 1 (got %d)" n)
            | Some n -> Ok n
            | None -> Ok Environment.ProcessorCount
        let torchThreads = count "L2L_TORCH_THREADS" 1
        let stepThreads = count "L2L_STEP_TORCH_THREADS" 0
        let minChunk = count "L2L_MIN_CHUNK" 1
        let metaGradient =
            match variable "L2L_META_GRADIENT" with
            | None
            | Some "closed-form" -> Ok ClosedForm
            | Some "autograd" -> Ok Autograd
            | Some other -> Error(sprintf "L2L_META_GRADIENT must be closed-form or autograd, not '%s'" other)
        let cell =
            match variable "L2L_CELL" with
            | None
            | Some "fused" -> Ok Fused
            | Some "reference" -> Ok Reference
            | Some other -> Error(sprintf "L2L_CELL must be fused or reference, not '%s'" other)
        match loaded with
        | Error e -> Error e
        | Ok() ->
        match threads, torchThreads, stepThreads, minChunk, metaGradient, cell with
        | Error e, _, _, _, _, _
        | _, Error e, _, _, _, _
        | _, _, Error e, _, _, _
        | _, _, _, Error e, _, _
        | _, _, _, _, Error e, _
        | _, _, _, _, _, Error e -> Error e
        | Ok n, Ok torch', Ok step, Ok chunk, Ok path, Ok cell ->
            let torchCount = defaultArg torch' n
            torch.set_num_threads torchCount
            chunk |> Option.iter (fun c -> L2L.Kernels.CoordinatewiseLstm.MinChunk <- int64 c)
            if variable "L2L_KERNEL_TEAM" = Some "0" then L2L.Kernels.CoordinatewiseLstm.UseTeam <- false
            Ok
                { Backend =
                    { Cell = cell
                      MetaGradient = path
                      KernelThreads = n
                      StepTorchThreads = defaultArg step Backend.defaults.StepTorchThreads }
                  TorchThreads = torchCount
                  DataDirectory = dataDirectory dataDir
                  TrimEachIteration = variable "L2L_MALLOC_TRIM" = Some "1"
                  MemoryTrace = variable "L2L_MEMTRACE" = Some "1" }

    /// `configureWith` with nothing to do before libtorch is touched.
    let configure (threads: int option) (dataDir: string option) : Result<RuntimeSettings, string> =
        configureWith ignore threads dataDir

    /// `configure` for callers that treat a bad environment as a programmer error (scripts, test
    /// runners): the message as an exception.
    let configureOrFail (threads: int option) (dataDir: string option) : RuntimeSettings =
        match configure threads dataDir with
        | Ok s -> s
        | Error e -> invalidArg "environment" e
