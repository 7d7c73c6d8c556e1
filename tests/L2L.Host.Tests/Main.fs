module L2L.Host.Tests.Main

open Expecto

[<EntryPoint>]
let main argv =
    runTestsInAssemblyWithCLIArgs [ Sequenced; Append_Summary_Handler L2L.Tests.PlainSummary.handler ] argv
