module L2L.Cli.Program

open System
open Argu
open L2L.Cli.Args
open L2L.Cli.Commands

/// The command's failure as one line on stderr (the stack trace too with --verbose) and its exit
/// code: 2 for bad input, 1 for the environment (a path that cannot be written, a full disk) and
/// anything else.
let private failure (verbose: bool) (code: int) (what: string) (e: exn) =
    eprintfn "l2l: %s%s" what ((e.Message.Split('\n')[0]).Trim())
    if verbose then eprintfn "%O" e
    code

[<EntryPoint>]
let main argv =
    let verbose = argv |> Array.contains "--verbose"
    let argv = argv |> Array.filter (fun a -> a <> "--verbose")
    let parser = ArgumentParser.Create<CliArgs>(programName = "l2l")
    try
        let args = parser.ParseCommandLine(argv, raiseOnUsage = true)
        // the process's set-up (environment, native tunables, threads) for the commands that
        // compute, before anything loads libtorch: the one place the command line reads them
        match args.GetSubCommand() with
        | Train a -> runTrain (configure (a.TryGetResult TrainArgs.Threads) (a.TryGetResult TrainArgs.Data_Dir)) a
        | Evaluate a -> runEvaluate (configure (a.TryGetResult EvaluateArgs.Threads) (a.TryGetResult EvaluateArgs.Data_Dir)) a
        | Reproduce a -> runReproduce (configure (a.TryGetResult ReproduceArgs.Threads) None) a
        | Paper a -> L2L.Cli.Paper.runPaper (configure (a.TryGetResult PaperArgs.Threads) (a.TryGetResult PaperArgs.Data_Dir)) a
        | Bench a -> L2L.Cli.Bench.runBench (configure (a.TryGetResult BenchArgs.Threads) (a.TryGetResult BenchArgs.Data_Dir)) a
        | Submit a -> runSubmit a
        | Status a -> runStatus a
        | Cancel a -> runCancel a
        | Export a -> L2L.Cli.Exchange.runExport a
        | Import a -> L2L.Cli.Exchange.runImport a
        | Trace a -> L2L.Cli.Exchange.runTrace (configure (a.TryGetResult TraceArgs.Threads) None) a
    with
    | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText ->
        printfn "%s" e.Message
        0
    | :? ArguParseException as e ->
        // Argu's message is the error line followed by the usage; the first line names the problem.
        let first = e.Message.Split('\n') |> Array.find (fun l -> l.Trim() <> "")
        eprintfn "l2l: %s (see 'l2l %s--help')" (Text.RegularExpressions.Regex.Replace(first.Trim(), "^ERROR:\\s*", ""))
            (match argv |> Array.tryHead with
             | Some c when parser.GetArgumentCases() |> List.exists (fun case -> case.Name.Value = c) -> c + " "
             | _ -> "")
        2
    | UsageError msg ->
        eprintfn "l2l: %s" msg
        2
    | :? IO.InvalidDataException as e -> failure verbose 2 "bad data: " e
    | :? UnauthorizedAccessException as e -> failure verbose 1 "cannot write: " e
    | :? IO.IOException as e -> failure verbose 1 "" e
    | e -> failure verbose 1 (sprintf "failed (%s): " (e.GetType().Name)) e
