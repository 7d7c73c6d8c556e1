// Makes the pure core, the runtime (data sets, optimizer files) and the TorchSharp-facing library
// (LearnedOptimizer, Pretrained, Task.ofModule) available to F# Interactive from the L2L.Functional
// package that `tools/pack` writes to artifacts/packages/, with libtorch's CPU build for Linux x64,
// and sets the process up (`settings`: the backend to pass to the core, the MNIST directory). The
// package's version is the one in Directory.Build.props.
//   #load "L2L.fsx"
#r "nuget: L2L.Functional, 0.1.0"
#r "nuget: libtorch-cpu-linux-x64, 2.10.0"

open System.IO

/// The process's set-up (two threads; the environment's choices), TorchSharp's native library loaded
/// where this system needs it fixed (Runtime.loadTorchSharpNative): pass `settings.Backend` to the core.
let settings =
    match L2L.Runtime.configure (Some 2) None with
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
