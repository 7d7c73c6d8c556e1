module L2L.Host.Tests.Main

open Expecto
open Expecto.Impl

let private plainSummary (summary: TestRunSummary) =
    let failed = summary.failed.Length + summary.errored.Length
    printfn "%d passed, %d failed%s" summary.passed.Length failed
        (if summary.ignored.IsEmpty then "" else sprintf ", %d skipped" summary.ignored.Length)

[<EntryPoint>]
let main argv =
    runTestsInAssemblyWithCLIArgs [ Sequenced; Append_Summary_Handler(SummaryHandler plainSummary) ] argv
