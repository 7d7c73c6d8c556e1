module L2L.Tests.Main

open Expecto

[<EntryPoint>]
let main argv =
    match argv with
    | [| "--atomic-write-child"; path |] -> L2L.Tests.AtomicFileTests.child path
    | _ ->
        // Tests run in parallel, one per core. libtorch's thread count is process-wide, and learned-
        // optimizer work lowers it inside its steps (Backend.inSteps): with one libtorch thread there
        // is nothing to lower, so no test changes another's count (and so its float32 rounding). The
        // few tests that change process-wide state themselves are sequenced (testCaseSequenced).
        L2L.Runtime.configureOrFail (Some 1) None |> ignore
        runTestsInAssemblyWithCLIArgs [ Append_Summary_Handler PlainSummary.handler ] argv
