module L2L.Tests.Main

open Expecto

[<EntryPoint>]
let main argv =
    L2L.Runtime.configureOrFail None None |> ignore
    runTestsInAssemblyWithCLIArgs [ Sequenced; Append_Summary_Handler PlainSummary.handler ] argv
