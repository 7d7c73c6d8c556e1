// Makes the pure core, the runtime (data sets, optimizer files) and the TorchSharp-facing library
// (LearnedOptimizer, Pretrained, Task.ofModule) available to F# Interactive:
// references the Release build of the command line (run `tools/l2l --help` once to build it), loads
// libtorch's native libraries from it and sets the process up (`settings`: the backend to pass to
// the core, the MNIST directory).
//   #load "L2L.fsx"
#r "../../src/L2L.Cli/bin/Release/net10.0/TorchSharp.dll"
#r "../../src/L2L.Cli/bin/Release/net10.0/L2L.Core.dll"
#r "../../src/L2L.Cli/bin/Release/net10.0/L2L.Kernels.dll"
#r "../../src/L2L.Cli/bin/Release/net10.0/L2L.Runtime.dll"
#r "../../src/L2L.Cli/bin/Release/net10.0/L2L.Functional.dll"

open System.IO
open System.Runtime.InteropServices

let private native = Path.Combine(__SOURCE_DIRECTORY__, "../../src/L2L.Cli/bin/Release/net10.0/runtimes/linux-x64/native")
if not (File.Exists(Path.Combine(native, "libLibTorchSharp.so"))) then
    failwithf "the Release build is missing (%s): run tools/l2l --help once" native
/// The process's set-up (two threads; the environment's choices), with libtorch's libraries loaded
/// after the native tunables that must precede them: pass `settings.Backend` to the core.
let settings =
    let load () =
        for lib in [ "libtorch.so"; "libLibTorchSharp.so" ] do
            NativeLibrary.Load(Path.Combine(native, lib)) |> ignore
    match L2L.Runtime.configureWith load (Some 2) None with
    | Ok s -> s
    | Error e ->
        eprintfn "L2L.fsx: %s" e
        exit 2

/// Runs a script's body behind the same boundary as the command line: a failure is one line on
/// stderr and exit code 2 (bad input: a data file, an optimizer file, an argument) or 1 (anything
/// else, e.g. a path that cannot be written); `--verbose` among the script's arguments adds the
/// stack trace.
let run (body: unit -> unit) =
    let verbose = fsi.CommandLineArgs |> Array.contains "--verbose"
    let fail (code: int) (e: exn) =
        eprintfn "%s: %s" (Path.GetFileName fsi.CommandLineArgs[0]) ((e.Message.Split('\n')[0]).Trim())
        if verbose then eprintfn "%O" e
        exit code
    try
        body ()
    with
    | :? InvalidDataException as e -> fail 2 e
    | :? System.ArgumentException as e -> fail 2 e
    | e -> fail 1 e

/// The script's one optional positional argument as a positive integer (`--verbose` aside), else
/// `dflt`; anything else is a bad argument (exit code 2 behind `run`).
let countArg (name: string) (dflt: int) =
    match fsi.CommandLineArgs |> Array.tail |> Array.filter (fun a -> a <> "--verbose") with
    | [| n |] ->
        match System.Int32.TryParse n with
        | true, v when v >= 1 -> v
        | _ -> invalidArg name (sprintf "%s must be a positive integer, not '%s'" name n)
    | _ -> dflt
