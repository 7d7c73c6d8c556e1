/// Job specs: the documented minimal spec, defaults, and every error named.
module L2L.Tests.JobSpecTests

open Expecto
open L2L

let parse = JobSpec.parse

[<Tests>]
let tests =
    testList "job spec" [
        testCase "the documented complete spec parses, with defaults for the rest" <| fun () ->
            match parse """{"id":"q1","task":{"name":"quadratic","dim":10},"metaIterations":60,"seed":11,"checkpointEvery":5}""" with
            | Error e -> failtestf "%A" e
            | Ok s ->
                Expect.equal s.Id "q1" "id"
                Expect.equal s.Meta.Task (Quadratic 10) "task"
                Expect.equal s.Meta.MetaIterations 60 "budget"
                Expect.equal s.Meta.Seed 11L "seed"
                Expect.equal s.CheckpointEvery 5 "checkpoint interval"
                Expect.equal s.Meta.Lstm LstmConfig.paper "the paper's optimizer"
                Expect.equal s.Meta.Horizon 100 "horizon"
                Expect.isSome s.Evaluation "evaluates by default"

        testCase "every problem is reported, each naming its field" <| fun () ->
            match parse """{"id":"bad id!","task":{"name":"rosenbrock"},"metaIterations":-1,"unroll":30,"metaLr":"fast","colour":"red","evaluation":{"runs":0}}""" with
            | Ok _ -> failtest "accepted"
            | Error errs ->
                for fragment in [ "id must be"; "unknown task 'rosenbrock'"; "metaIterations must be ≥ 0"; "metaLr must be a number"; "unknown field 'colour'"; "evaluation: runs must be ≥ 1" ] do
                    Expect.exists errs (fun e -> e.Contains fragment) (sprintf "%s in %A" fragment errs)

        testCase "a string where an integer belongs is an error naming the field, not a crash" <| fun () ->
            match parse """{"id":"a","task":{"name":"quadratic","dim":"ten"},"metaIterations":"x"}""" with
            | Ok _ -> failtest "accepted"
            | Error errs ->
                Expect.exists errs (fun e -> e.Contains "metaIterations must be an integer") "metaIterations"
                Expect.exists errs (fun e -> e.Contains "task.dim must be an integer") "task.dim"

        testCase "the conv net task: by name, with settings, and its errors named" <| fun () ->
            match parse """{"id":"c","task":"mnist-conv","metaIterations":2}""", parse """{"id":"c","task":{"name":"mnist-conv","channels":[2,3],"dense":0,"batch":16},"metaIterations":2}""" with
            | Ok a, Ok b ->
                Expect.equal a.Meta.Task (Conv TaskSpec.convDefault) "the default conv net"
                Expect.equal a.Meta.BatchFunctions 1 "one network per trajectory"
                Expect.equal b.Meta.Task (Conv { Channels = [ 2; 3 ]; Dense = 0; Batch = 16 }) "settings"
                Expect.equal (TaskSpec.groups b.Meta.Task) [ "conv", 2 * 9 + 2 * 2 + 3 * 2 * 9 + 2 * 3; "fc", 3 * 7 * 7 * 10 + 10 ] "two coordinate groups"
            | a, b -> failtestf "%A %A" a b
            match parse """{"id":"c","task":{"name":"mnist-conv","channels":[2,-1]},"metaIterations":2}""" with
            | Ok _ -> failtest "accepted a negative channel count"
            | Error errs -> Expect.exists errs (fun e -> e.Contains "task.channels") (sprintf "%A" errs)
            match parse """{"id":"c","task":{"name":"mnist-conv","channels":[2,2,2,2,2]},"metaIterations":2}""" with
            | Ok _ -> failtest "accepted 5 conv layers"
            | Error errs -> Expect.exists errs (fun e -> e.Contains "at most 4 conv layers") (sprintf "%A" errs)

        testCase "init: a warm start from an optimizer file, its m_φ's settings; refused with an optimizer section or a bad file" <| fun () ->
            let path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "l2l-init-" + System.Guid.NewGuid().ToString("N") + ".json")
            System.IO.File.WriteAllText(path, Pretrained.optimizerText "general")
            let spec = sprintf """{"id":"w","task":{"name":"quadratic","dim":4},"metaIterations":0,"evaluation":false,"init":%s}""" (System.Text.Json.JsonSerializer.Serialize path)
            use general = Pretrained.load "general"
            match parse spec with
            | Error e -> failtestf "%A" e
            | Ok s ->
                Expect.equal s.Init (Some path) "the file"
                Expect.equal s.Meta.Lstm general.Phis.Head.Config "m_φ's settings are the file's"
                let settings = { Backend = Backend.defaults; TorchThreads = 1; DataDirectory = ""; TrimEachIteration = false; MemoryTrace = false }
                use session = JobSession.Start(s, settings)
                let hash (phis: Phi list) =
                    Phis.tensors phis |> List.map (fun t -> t.detach().contiguous().bytes.ToArray()) |> Array.concat
                    |> System.Security.Cryptography.SHA256.HashData |> System.Convert.ToHexString
                Expect.equal (session.PhiSha256().ToUpperInvariant()) (hash general.Phis) "the session starts at the file's φ"
            match parse (spec.Replace("\"init\"", "\"optimizer\":{\"hidden\":8},\"init\"")) with
            | Ok _ -> failtest "init with an optimizer section accepted"
            | Error es -> Expect.exists es (fun e -> e.Contains "give no optimizer section") (sprintf "%A" es)
            match parse (spec.Replace(".json", ".missing.json")) with
            | Ok _ -> failtest "a missing file accepted"
            | Error es -> Expect.exists es (fun e -> e.StartsWith "init:") (sprintf "%A" es)
            System.IO.File.Delete path

        testCase "not JSON" <| fun () ->
            match parse "{ nope" with
            | Error [ e ] -> Expect.stringContains e "not valid JSON" "message"
            | other -> failtestf "%A" other

        testCase "evaluation can be turned off and tuned" <| fun () ->
            match parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":1,"evaluation":false}""" with
            | Ok s -> Expect.isNone s.Evaluation "off"
            | Error e -> failtestf "%A" e
            match parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":1,"evaluation":{"steps":50,"runs":10,"tuneBaselines":false}}""" with
            | Ok s ->
                let e = s.Evaluation.Value
                Expect.equal (e.Steps, e.Runs, e.Tune) (50, 10, false) "settings"
            | Error e -> failtestf "%A" e

        testCase "status files round-trip" <| fun () ->
            let s =
                { Id = "x"; State = Failed; Reason = Some "why"; Iteration = 3; MetaIterations = 9
                  BestValidation = Some 0.25; MetaLr = Some 0.001; Updated = System.DateTimeOffset(2026, 1, 2, 3, 4, 5, System.TimeSpan.Zero); Silo = None }
            Expect.equal (JobStatus.parse (JobStatus.toJson s)) (Ok s) "same status"
            let onSilo = { s with Silo = Some "S10.0.0.2:11111:155416381" }
            Expect.equal (JobStatus.parse (JobStatus.toJson onSilo)) (Ok onSilo) "the silo it runs on"
    
        testCase "the jobs directory: submit, take in, list, cancel, and a bad spec failed with its reason" <| fun () ->
            let jobs = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "l2l-jobs-" + System.Guid.NewGuid().ToString("N"))
            System.IO.Directory.CreateDirectory jobs |> ignore
            let spec = """{"id":"q1","task":{"name":"quadratic","dim":10},"metaIterations":60}"""
            match JobsDirectory.submit jobs spec with
            | Ok s -> Expect.equal s.Id "q1" "submitted"
            | Error e -> failtest e
            Expect.equal (JobsDirectory.list jobs None) [ Submitted "q1" ] "waiting for the worker"
            match JobsDirectory.submit jobs spec with
            | Ok _ -> failtest "the same id twice"
            | Error e -> Expect.stringContains e "already exists" "names the clash"
            let rejected = ResizeArray()
            let taken = JobsDirectory.submitted jobs |> List.choose (fun f -> JobsDirectory.accept jobs f (fun f r -> rejected.Add(f, r)))
            Expect.equal taken [ "q1" ] "taken in"
            Expect.isEmpty rejected "nothing rejected"
            Expect.equal (JobsDirectory.unfinished jobs) [ "q1" ] "queued: resumes on the next start"
            match JobsDirectory.list jobs (Some "q1") with
            | [ Job("q1", Ok st) ] -> Expect.equal st.State Queued "queued"
            | other -> failtestf "%A" other
            Expect.isFalse (JobsDirectory.cancelRequested (JobsDirectory.jobDirectory jobs "q1")) "not cancelled yet"
            Expect.equal (JobsDirectory.requestCancel jobs "q1") (Ok()) "cancel asked for"
            Expect.isTrue (JobsDirectory.cancelRequested (JobsDirectory.jobDirectory jobs "q1")) "the worker sees it"
            Expect.isError (JobsDirectory.requestCancel jobs "nope") "no such job"
            System.IO.File.WriteAllText(System.IO.Path.Combine(jobs, "bad.json"), """{"id":"bad","task":"cubic","metaIterations":1}""")
            let none = JobsDirectory.submitted jobs |> List.choose (fun f -> JobsDirectory.accept jobs f (fun f r -> rejected.Add(f, r)))
            Expect.isEmpty none "nothing to run"
            match JobStatus.read (JobsDirectory.jobDirectory jobs "bad") with
            | Ok st ->
                Expect.equal st.State Failed "failed"
                Expect.stringContains st.Reason.Value "unknown task 'cubic'" "with the reason"
            | Error e -> failtest e
            Expect.equal (JobsDirectory.requestCancel jobs "bad") (Error "job 'bad' is already failed") "a finished job is not cancelled"
            System.IO.Directory.Delete(jobs, true)
    ]
