module L2L.Tests.Main

open Expecto
open Expecto.Impl

/// After Expecto's own report, the plain closing line `N passed, N failed`.
let private plainSummary (summary: TestRunSummary) =
    let failed = summary.failed.Length + summary.errored.Length
    printfn "%d passed, %d failed%s" summary.passed.Length failed
        (if summary.ignored.IsEmpty then "" else sprintf ", %d skipped" summary.ignored.Length)

[<EntryPoint>]
let main argv =
    TorchSharp.torch.set_num_threads (max 1 System.Environment.ProcessorCount)
    runTestsInAssemblyWithCLIArgs [ Sequenced; Append_Summary_Handler(SummaryHandler plainSummary) ] argv
