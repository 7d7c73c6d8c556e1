module L2L.Cli.Program

open System
open Argu
open L2L.Cli.Args
open L2L.Cli.Commands

[<EntryPoint>]
let main argv =
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
    with
    | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText ->
        printfn "%s" e.Message
        0
    | :? ArguParseException as e ->
        // Argu's message is the error line followed by the usage; the first line names the problem.
        let first = e.Message.Split('\n') |> Array.find (fun l -> l.Trim() <> "")
        eprintfn "l2l: %s (see 'l2l %s--help')" (Text.RegularExpressions.Regex.Replace(first.Trim(), "^ERROR:\\s*", ""))
            (match argv |> Array.tryHead with
             | Some c when List.contains c [ "train"; "evaluate"; "reproduce"; "paper"; "bench"; "submit"; "status"; "cancel" ] -> c + " "
             | _ -> "")
        2
    | UsageError msg ->
        eprintfn "l2l: %s" msg
        2
