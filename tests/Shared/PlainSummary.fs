/// The closing line every test program prints after Expecto's own report: `N passed, N failed`.
module L2L.Tests.PlainSummary

open Expecto
open Expecto.Impl

let handler =
    SummaryHandler(fun (summary: TestRunSummary) ->
        let failed = summary.failed.Length + summary.errored.Length
        printfn "%d passed, %d failed%s" summary.passed.Length failed
            (if summary.ignored.IsEmpty then "" else sprintf ", %d skipped" summary.ignored.Length))
