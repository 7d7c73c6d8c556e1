/// The worker: exact resume after kills, corrupt checkpoints, bad specs, bad configuration,
/// graceful shutdown, numerical faults and concurrency. Each test runs the real worker process.
module L2L.Host.Tests.WorkerTests

open System
open System.IO
open System.Threading
open Expecto
open L2L
open L2L.Host.Tests.Worker

let total = 200

/// φ of the same job run without interruption (a separate jobs directory).
let reference =
    lazy
        (let jobs = newJobsDir ()
         drop jobs "ref" (spec "ref" total "")
         let w = start jobs [] []
         waitState jobs "ref" [ Completed ] (minutes 3.0) w
         sigterm w
         waitExit w (minutes 1.0) |> ignore
         phiSha jobs "ref")

let iterationOf jobs id =
    match status jobs id with
    | Ok s -> s.Iteration
    | Error _ -> 0

let expectCheckpointsValid jobs id =
    for f in checkpoints jobs id do
        match Checkpoint.verify (File.ReadAllBytes f) with
        | Ok() -> ()
        | Error e -> failtestf "%s is %s after a kill" (Path.GetFileName f) (CheckpointError.describe e)

/// Starts a worker and SIGKILLs it once the job's status reaches `iteration`.
let killAt jobs id (iteration: int) (jitterMs: int) =
    let w = start jobs [] []
    waitUntil (minutes 2.0) (sprintf "iteration %d" iteration) (fun () -> iterationOf jobs id >= iteration || w.Process.HasExited)
    Thread.Sleep jitterMs
    let wasRunning = stateOf jobs id = Some Running
    sigkill w
    wasRunning, w

let finish jobs id =
    let w = start jobs [] []
    waitState jobs id [ Completed; Failed ] (minutes 3.0) w
    sigterm w
    waitExit w (minutes 1.0) |> ignore
    w

[<Tests>]
let tests =
    testList "worker" [
        testCase "SIGKILL at 5 seeded random points, restarted each time: φ bit-identical to an uninterrupted run" <| fun () ->
            let jobs = newJobsDir ()
            drop jobs "k" (spec "k" total "")
            let rng = Random(2026)
            // at least 80 meta-iterations before the end (about 0.3 s at this job's pace): the kill
            // must find the job still running after the status is polled and the jitter slept
            let targets = List.init 5 (fun _ -> rng.Next(8, total - 80)) |> List.sort
            for target in targets do
                let wasRunning, w = killAt jobs "k" target (rng.Next(0, 40))
                Expect.isTrue wasRunning (sprintf "killed mid-training near iteration %d\n%s" target w.Text)
                expectCheckpointsValid jobs "k"
            let w = finish jobs "k"
            Expect.equal (stateOf jobs "k") (Some Completed) "completed"
            Expect.stringContains w.Text "resumed from" "the last start resumed from a checkpoint"
            Expect.equal (phiSha jobs "k") reference.Value "φ equals the uninterrupted run's, bit for bit"

        testCase "a corrupt or truncated newest checkpoint: resume from the one before, logged, same φ" <| fun () ->
            let jobs = newJobsDir ()
            drop jobs "c" (spec "c" total "")
            let corrupt (how: string) (f: string) =
                let bytes = File.ReadAllBytes f
                match how with
                | "flip" ->
                    for i in [ bytes.Length / 3; bytes.Length / 2; bytes.Length - 40 ] do
                        bytes[i] <- bytes[i] ^^^ 0xFFuy
                    File.WriteAllBytes(f, bytes)
                | _ -> File.WriteAllBytes(f, bytes[0 .. bytes.Length / 2])
            for how, at, expected in [ "flip", 40, "checksum mismatch"; "truncate", 120, "truncated" ] do
                killAt jobs "c" at 0 |> ignore
                let files = checkpoints jobs "c"
                Expect.isGreaterThanOrEqual files.Length 2 "at least two checkpoints"
                let newest = files[files.Length - 1]
                let previous = Path.GetFileName files[files.Length - 2]
                corrupt how newest
                let w = start jobs [] []
                waitUntil (minutes 1.0) "resume" (fun () -> w.Text.Contains "resumed from")
                sigkill w
                Expect.stringContains w.Text (sprintf "%s is unusable (%s" (Path.GetFileName newest) expected) "the bad checkpoint is logged"
                Expect.stringContains w.Text (sprintf "resumed from checkpoint %s" previous) "resumed from the one before"
                Expect.isTrue (File.Exists(newest + ".corrupt")) "the bad checkpoint is set aside"
            finish jobs "c" |> ignore
            Expect.equal (phiSha jobs "c") reference.Value "φ equals the uninterrupted run's"

        testCase "SIGTERM during a job: checkpoint written, exit code 0, resumed on restart" <| fun () ->
            let jobs = newJobsDir ()
            drop jobs "t" (spec "t" total "")
            let w = start jobs [] []
            waitUntil (minutes 2.0) "progress" (fun () -> iterationOf jobs "t" >= 30)
            sigterm w
            Expect.equal (waitExit w (minutes 1.0)) 0 "exit code 0"
            let s = match status jobs "t" with Ok s -> s | Error e -> failtest e
            Expect.equal s.State Queued "queued for the next start"
            let newest = checkpoints jobs "t" |> Array.last |> Path.GetFileName
            Expect.equal newest (sprintf "ckpt-%08d.bin" s.Iteration) "a checkpoint at the iteration it stopped"
            Expect.stringContains w.Text "stopped for shutdown" "logged"
            let w2 = finish jobs "t"
            Expect.stringContains w2.Text (sprintf "resumed from checkpoint %s" newest) "resumed"
            Expect.equal (phiSha jobs "t") reference.Value "same φ as an uninterrupted run"

        testCase "a checkpoint that cannot be written: retried, then the job fails with the reason and the last good checkpoint is kept" <| fun () ->
            let jobs = newJobsDir ()
            // the target of every checkpoint from meta-iteration 10 on is a directory: the rename fails
            let dir = Path.Combine(jobs, "wf", "checkpoints")
            for it in [ 10; 15; 20 ] do
                Directory.CreateDirectory(Path.Combine(dir, sprintf "ckpt-%08d.bin" it)) |> ignore
            drop jobs "wf" (spec "wf" 20 "")
            let w = start jobs [] []
            waitState jobs "wf" [ Failed; Completed ] (minutes 2.0) w
            sigterm w
            waitExit w (minutes 1.0) |> ignore
            match status jobs "wf" with
            | Ok s ->
                Expect.equal s.State Failed "failed"
                Expect.stringContains (defaultArg s.Reason "") "checkpoint of meta-iteration 10 could not be written after 3 attempts" "the reason"
            | Error e -> failtest e
            let tries = w.Text.Split('\n') |> Array.filter (fun l -> l.Contains "checkpoint of meta-iteration 10 not written")
            Expect.equal tries.Length 3 (sprintf "three attempts logged: %s" w.Text)
            let good = Path.Combine(dir, "ckpt-00000005.bin")
            Expect.isTrue (File.Exists good) "the last good checkpoint is kept"
            Expect.equal (Checkpoint.verify (File.ReadAllBytes good)) (Ok()) "and intact"
            Expect.isEmpty (Directory.GetFiles(dir) |> Array.filter AtomicFile.isTemporary) "no temporary left"

        testCase "a checkpoint of another format version: kept, and the job fails saying so (no silent restart)" <| fun () ->
            let jobs = newJobsDir ()
            drop jobs "old" (spec "old" 20 "")
            let w = start jobs [] []
            waitState jobs "old" [ Completed; Failed ] (minutes 2.0) w
            sigterm w
            waitExit w (minutes 1.0) |> ignore
            // the newest checkpoint relabelled as format version 1, the job queued again
            let newest = checkpoints jobs "old" |> Array.last
            let bytes = File.ReadAllBytes newest
            bytes[8] <- 1uy
            File.WriteAllBytes(newest, bytes)
            let st = (status jobs "old" |> Result.toOption).Value
            JobStatus.write (Path.Combine(jobs, "old")) { st with State = Queued }
            let w = start jobs [] []
            waitState jobs "old" [ Failed ] (minutes 2.0) w
            sigterm w
            waitExit w (minutes 1.0) |> ignore
            match status jobs "old" with
            | Ok s -> Expect.stringContains (defaultArg s.Reason "") "is of format version 1" "the reason"
            | Error e -> failtest e
            Expect.isTrue (File.Exists newest) "the checkpoint is kept, not set aside as corrupt"

        testCase "bad specs fail with a reason, the worker stays up, the next valid job runs" <| fun () ->
            let jobs = newJobsDir ()
            let w = start jobs [] []
            drop jobs "bad1" "this is { not json"
            drop jobs "bad2" ((spec "bad2" 10 "").Replace("\"quadratic\"", "\"rosenbrock\""))
            drop jobs "bad3" (spec "bad3" -5 "")
            Thread.Sleep 300
            drop jobs "good" (spec "good" 10 "")
            waitState jobs "good" [ Completed ] (minutes 2.0) w
            for id, reason in [ "bad1", "not valid JSON"; "bad2", "unknown task 'rosenbrock'"; "bad3", "metaIterations must be ≥ 0" ] do
                match status jobs id with
                | Ok s ->
                    Expect.equal s.State Failed (sprintf "%s failed" id)
                    Expect.stringContains (defaultArg s.Reason "") reason (sprintf "%s: the reason" id)
                | Error e -> failtestf "%s has no status: %s" id e
            Expect.isFalse w.Process.HasExited "the worker is still running"
            sigterm w
            Expect.equal (waitExit w (minutes 1.0)) 0 "clean exit"

        testCase "a task of one's own (Task.ofModule in a task assembly) runs as a job: trained, checkpointed, evaluated; a bad task assembly is one line" <| fun () ->
            let jobs = newJobsDir ()
            let assembly = typeof<RegressionTasks>.Assembly.Location
            let w = start jobs [ "--Worker:TaskAssemblies:0=" + assembly ] []
            drop jobs "own"
                """{"id":"own","task":"regression","metaIterations":12,"seed":3,"checkpointEvery":5,"horizon":20,"unroll":5,
                    "validateEvery":6,"validationFunctions":2,"optimizer":{"hidden":8},
                    "evaluation":{"steps":20,"runs":3,"tuneBaselines":false}}"""
            drop jobs "unknown" ((spec "unknown" 10 "").Replace("\"quadratic\"", "\"regressio\""))
            waitState jobs "own" [ Completed; Failed ] (minutes 3.0) w
            match status jobs "own" with
            | Ok s -> Expect.equal s.State Completed (sprintf "completed: %A" s.Reason)
            | Error e -> failtest e
            Expect.isNonEmpty (checkpoints jobs "own") "checkpointed"
            for file in [ "optimizer.json"; "results.json" ] do
                Expect.isTrue (File.Exists(Path.Combine(jobs, "own", file))) (file + " written")
            Expect.stringContains (File.ReadAllText(Path.Combine(jobs, "own", "results.json"))) "regression" "results name the task"
            waitState jobs "unknown" [ Failed ] (minutes 1.0) w
            match status jobs "unknown" with
            | Ok s -> Expect.stringContains (defaultArg s.Reason "") "known: quadratic, mnist, mnist-conv, regression" "the known tasks include the assembly's"
            | Error e -> failtest e
            sigterm w
            Expect.equal (waitExit w (minutes 1.0)) 0 "clean exit"
            let bad = start jobs [ "--Worker:TaskAssemblies:0=/nonexistent/tasks.dll" ] []
            Expect.equal (waitExit bad (minutes 1.0)) 2 "exit code 2"
            Expect.stringContains bad.Text "task assembly '/nonexistent/tasks.dll' does not exist" "one line naming it"
            Expect.isFalse (bad.Text.Contains "   at ") "no stack trace"

        testCase "an invalid configuration value stops the host with an error naming the key" <| fun () ->
            let jobs = newJobsDir ()
            for extra, env, key in
                [ [ "--Worker:MaxConcurrentJobs=0" ], [], "Worker:MaxConcurrentJobs"
                  [], [ "L2L_Worker__LogFormat", "xml" ], "Worker:LogFormat"
                  [ "--Worker:KeepCheckpoints=-1" ], [], "Worker:KeepCheckpoints"
                  [ "--Cluster:Provider=mesh" ], [], "Cluster:Provider"
                  [ "--Cluster:Provider=redis" ], [], "Cluster:ConnectionString"
                  [ "--Cluster:Provider=localhost"; "--Cluster:SiloPort=30000" ], [], "Cluster:GatewayPort"
                  [], [ "L2L_Cluster__SiloPort", "0" ], "Cluster:SiloPort"
                  [ "--Cluster:ShardAttempts=many" ], [], "Cluster:ShardAttempts" ] do
                let w = start jobs extra env
                let code = waitExit w (minutes 1.0)
                Expect.notEqual code 0 (sprintf "non-zero exit for %s" key)
                Expect.stringContains w.Text key "names the key"
                Expect.stringContains w.Text "invalid configuration" "says what is wrong"
                Expect.isFalse (w.Text.Contains "   at ") (sprintf "no stack trace for %s" key)
            // a jobs directory that cannot be used: the worker cannot run at all
            let file = System.IO.Path.GetTempFileName()
            let w = start file [] []
            Expect.equal (waitExit w (minutes 1.0)) 1 "exit code 1 when the worker cannot run"
            Expect.stringContains w.Text (sprintf "the jobs directory %s cannot be used" file) "one line naming the directory"
            System.IO.File.Delete file
            // the environment's tunables are read once, by the worker's Program
            let w = start jobs [] [ "L2L_META_GRADIENT", "fast" ]
            Expect.equal (waitExit w (minutes 1.0)) 2 "exit code 2 for a bad environment"
            Expect.stringContains w.Text "L2L_META_GRADIENT" "names the variable"
            Expect.stringContains w.Text "invalid environment" "says what is wrong"

        testCase "an absurd meta-learning rate: rollback and reduced rate logged, the job fails with the reason after N faults" <| fun () ->
            let jobs = newJobsDir ()
            drop jobs "nan" (spec "nan" 100 ",\"metaLr\":1e30,\"faults\":{\"lrFactor\":0.1,\"maxConsecutive\":3}")
            let w = start jobs [] []
            waitState jobs "nan" [ Failed; Completed ] (minutes 2.0) w
            sigterm w
            waitExit w (minutes 1.0) |> ignore
            let faults = w.Text.Split('\n') |> Array.filter (fun l -> l.Contains "update discarded") 
            Expect.isGreaterThanOrEqual faults.Length 3 "each fault is logged"
            Expect.stringContains faults[0] "meta-lr reduced to 1E+29" "the first reduction"
            Expect.stringContains faults[1] "meta-lr reduced to 1E+28" "the second reduction"
            match status jobs "nan" with
            | Ok s ->
                Expect.equal s.State Failed "failed after N consecutive faults"
                Expect.stringContains (defaultArg s.Reason "") "3 consecutive meta-iterations with a non-finite loss" "the reason"
            | Error e -> failtest e

        testCase "MaxConcurrentJobs 2: two jobs run together and complete, the third runs after" <| fun () ->
            let jobs = newJobsDir ()
            for id in [ "a"; "b" ] do
                drop jobs id (spec id 120 "")
            Thread.Sleep 20
            drop jobs "c" (spec "c" 40 "")
            let w = start jobs [ "--Worker:MaxConcurrentJobs=2" ] []
            for id in [ "a"; "b"; "c" ] do
                waitState jobs id [ Completed ] (minutes 3.0) w
            sigterm w
            waitExit w (minutes 1.0) |> ignore
            let times id =
                let lines = File.ReadAllLines(Path.Combine(jobs, id, "job.log"))
                let at (l: string) = DateTimeOffset.Parse(l.Split(' ')[0])
                at (lines |> Array.find (fun l -> l.Contains "running from")), at (lines |> Array.findBack (fun l -> l.EndsWith "completed"))
            let aStart, aEnd = times "a"
            let bStart, bEnd = times "b"
            let cStart, _ = times "c"
            Expect.isTrue (aStart < bEnd && bStart < aEnd) "a and b ran at the same time"
            Expect.isGreaterThanOrEqual cStart (min aEnd bEnd) "c started after one of them finished"
    
        testCase "a cluster over Redis: a distributed job's shards and jobs shared out over three silos, a silo SIGKILLed in each, the same φ as in one process" <| fun () ->
            // tools/cluster-check, reduced: Redis and the silos are started and stopped by the check
            let code, out, err = runProgram (Path.Combine(root, "tools", "cluster-check")) [ "--silos"; "3"; "--shards"; "3"; "--iterations"; "60"; "--kill-at"; "20" ]
            let text = out + err
            Expect.equal code 0 (sprintf "tools/cluster-check exits 0:\n%s" text)
            Expect.isTrue (Text.RegularExpressions.Regex.IsMatch(text, "the distributed job runs on silo [1-3]; SIGKILL to silo [1-3] at meta-iteration")) "a silo was killed during the distributed job"
            Expect.stringContains text "identical: the distributed job's φ is the one-process job's, bit for bit" "the same φ"
            let lines = text.Split('\n')
            let retried = lines |> Array.find (fun l -> l.StartsWith "shard calls retried after the kill: ")
            let count = int ((retried.Split(':')).[1].Trim())
            Expect.isGreaterThan count 0 "the killed silo's shard was recomputed elsewhere"
            Expect.isTrue (Text.RegularExpressions.Regex.IsMatch(text, "SIGKILL to silo [23], which ran scheduled-")) "the silo running a scheduled job was killed"
            for id in [ "scheduled-1"; "scheduled-2" ] do
                Expect.stringContains text (sprintf "identical: %s's φ is the one-process job's, bit for bit" id) (sprintf "%s: the same φ" id)
            Expect.exists lines (fun l -> l.Contains "taken from the board by other silos 1 time(s)") "a job submitted on silo 1 ran on another silo"
            Expect.isFalse (text.Contains "DIFFERENT") "no φ differs"
    
        testCase "a cluster over Redis: a job cancelled on the silo it was submitted on stops on the silo running it" <| fun () ->
            use redis = startRedis ()
            let cluster = "cancel-" + Guid.NewGuid().ToString("N").Substring(0, 8)
            let a, b = newJobsDir (), newJobsDir ()
            let sa = startSilo a redis cluster []
            let sb = startSilo b redis cluster []
            try
                for w in [ sa; sb ] do
                    waitUntil (minutes 1.5) "two active silos" (fun () -> w.Text.Contains "cluster: 2 active silo(s)" || w.Process.HasExited)
                // each silo runs one job at a time: of two long jobs submitted on a, one runs on b
                for id in [ "long1"; "long2" ] do
                    drop a id (spec id 100000 "")
                let onB () =
                    [ "long1"; "long2" ] |> List.tryFind (fun id ->
                        match status a id with
                        | Ok s -> s.State = Running && s.Silo.IsSome && Directory.Exists(Path.Combine(b, id))
                        | Error _ -> false)
                waitUntil (minutes 1.5) "a job submitted on silo a running on silo b" (fun () -> (onB ()).IsSome)
                let id = (onB ()).Value
                Expect.isOk (JobsDirectory.requestCancel a id) "cancellation asked for on silo a"
                waitState b id [ Cancelled ] (minutes 1.0) sb
                waitState a id [ Cancelled ] (minutes 1.0) sa
                match status a id with
                | Ok s ->
                    Expect.stringContains (defaultArg s.Reason "") "cancelled on request" "the reason, on silo a"
                    Expect.isTrue (s.Silo.Value.Length > 0) "the silo it ran on"
                | Error e -> failtest e
                let other = if id = "long1" then "long2" else "long1"
                Expect.equal (stateOf a other) (Some Running) "the other job runs on"
            finally
                for w in [ sa; sb ] do
                    sigterm w
                for w in [ sa; sb ] do
                    waitExit w (minutes 1.0) |> ignore
    
        testCase "a cluster over Redis: a silo without a job's task assembly gives the job back, and a silo with it runs it" <| fun () ->
            use redis = startRedis ()
            let cluster = "tasks-" + Guid.NewGuid().ToString("N").Substring(0, 8)
            let a, b = newJobsDir (), newJobsDir ()
            let sa = startSilo a redis cluster [ "--Worker:TaskAssemblies:0=" + typeof<RegressionTasks>.Assembly.Location ]
            // a is busy with a long job before b joins, so b sees the regression job first
            drop a "busy" (spec "busy" 100000 "")
            waitState a "busy" [ Running ] (minutes 1.5) sa
            let sb = startSilo b redis cluster []
            try
                for w in [ sa; sb ] do
                    waitUntil (minutes 1.5) "two active silos" (fun () -> w.Text.Contains "cluster: 2 active silo(s)" || w.Process.HasExited)
                drop a "own"
                    """{"id":"own","task":"regression","metaIterations":12,"seed":3,"checkpointEvery":5,"horizon":20,"unroll":5,
                        "validateEvery":6,"validationFunctions":2,"optimizer":{"hidden":8},"evaluation":false}"""
                Thread.Sleep 3000
                Expect.equal (stateOf a "own") (Some Queued) "queued while a is busy: b did not fail it"
                Expect.isFalse (Directory.Exists(Path.Combine(b, "own"))) "b did not take it in"
                Expect.isOk (JobsDirectory.requestCancel a "busy") "a freed"
                waitState a "own" [ Completed; Failed ] (minutes 2.0) sa
                match status a "own" with
                | Ok s -> Expect.equal s.State Completed (sprintf "completed on a: %A" s.Reason)
                | Error e -> failtest e
            finally
                for w in [ sa; sb ] do
                    sigterm w
                for w in [ sa; sb ] do
                    waitExit w (minutes 1.0) |> ignore
    ]

