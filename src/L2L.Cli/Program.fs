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
        | Paper a ->
            a.TryGetResult PaperArgs.Threads |> Option.iter TorchSharp.torch.set_num_threads
            if (a.TryGetResult PaperArgs.Threads).IsNone then TorchSharp.torch.set_num_threads System.Environment.ProcessorCount
            L2L.Datasets.dataDir <- a.TryGetResult PaperArgs.Data_Dir
            let root = a.GetResult(PaperArgs.Root, "paper")
            match a.GetResult PaperArgs.Experiment with
            | "all" ->
                for name in L2L.Cli.Paper.experiments do
                    printfn "\n=== paper %s" name
                    L2L.Cli.Paper.run root name (a.Contains PaperArgs.Retrain)
            | name -> L2L.Cli.Paper.run root name (a.Contains PaperArgs.Retrain)
            L2L.Cli.Paper.writeTables root
            0
        | Bench a ->
            let threads = a.GetResult(BenchArgs.Threads, System.Environment.ProcessorCount)
            if threads < 1 then raise (UsageError "threads must be ≥ 1")
            TorchSharp.torch.set_num_threads threads
            let reps = a.GetResult(BenchArgs.Reps, 5)
            if reps < 1 then raise (UsageError "reps must be ≥ 1")
            let tasks =
                match a.GetResult(BenchArgs.Task, "all") with
                | "all" -> [ "quadratic"; "mnist" ]
                | ("quadratic" | "mnist") as t -> [ t ]
                | other -> raise (UsageError(sprintf "unknown benchmark task '%s' (quadratic, mnist or all)" other))
            L2L.Datasets.dataDir <- a.TryGetResult BenchArgs.Data_Dir
            if a.Contains BenchArgs.Child then
                printfn "%s" ((L2L.Cli.Bench.measure tasks.Head reps).ToJsonString())
            else
                let peer =
                    if a.Contains BenchArgs.Peer then
                        match a.GetResult BenchArgs.Peer with
                        | Some p -> Some p
                        | None ->
                            match L2L.Cli.Bench.defaultPeer () with
                            | Some p -> Some p
                            | None -> raise (UsageError "--peer: give the path of l2l_peer.py")
                    else None
                L2L.Cli.Bench.run tasks reps peer (a.GetResult(BenchArgs.Out, "bench.json"))
            0
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
