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
        match args.GetSubCommand() with
        | Train a -> runTrain a
        | Evaluate a -> runEvaluate a
        | Reproduce a -> runReproduce a
        | Paper a -> L2L.Cli.Paper.runPaper a
        | Bench a -> L2L.Cli.Bench.runBench a
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
