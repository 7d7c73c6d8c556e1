module L2L.Tests.Main

open Expecto

[<EntryPoint>]
let main argv =
    L2L.Runtime.prepare ()
    L2L.LstmKernel.setThreads (max 1 System.Environment.ProcessorCount)
    runTestsInAssemblyWithCLIArgs [ Sequenced; Append_Summary_Handler PlainSummary.handler ] argv
