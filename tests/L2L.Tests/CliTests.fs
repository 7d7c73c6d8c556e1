/// The command line: bad input gives one line naming the problem and exit code 2.
module L2L.Tests.CliTests

open System
open System.IO
open Expecto
open L2L.Tests.Helpers

/// Runs the CLI in-process; returns (exit code, stdout, stderr).
let cli (args: string list) =
    let out = new StringWriter()
    let err = new StringWriter()
    let o, e = Console.Out, Console.Error
    // the command line sets libtorch's thread count as its entry point does: restored after
    let threads = TorchSharp.torch.get_num_threads ()
    Console.SetOut out
    Console.SetError err
    try
        let code = L2L.Cli.Program.main (List.toArray args)
        code, out.ToString(), err.ToString()
    finally
        Console.SetOut o
        Console.SetError e
        TorchSharp.torch.set_num_threads threads

let expectUsageError (args: string list) (fragment: string) =
    let code, _, err = cli args
    Expect.equal code 2 "exit code 2"
    let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    Expect.equal lines.Length 1 (sprintf "one line on stderr: %s" err)
    Expect.stringContains lines[0] fragment "names the problem"
    Expect.isFalse (err.Contains "   at ") "no stack trace"

let tmpDir () = Path.Combine(Path.GetTempPath(), "l2l-cli-" + Guid.NewGuid().ToString("N"))

[<Tests>]
let tests =
    // sequenced: the command line runs in this process, with the console redirected, and sets the
    // process up as its entry point does (libtorch's thread count)
    testSequenced <| testList "cli" [
        testCase "paper: a committed optimizer is reused only when its file records the same settings" <| fun () ->
            for cfg in [ L2L.Cli.Paper.convConfig; L2L.Cli.Paper.mnistConfig; L2L.Cli.Paper.quadraticConfig ] do
                // the training record `train` writes, through JSON and back
                let o = Text.Json.Nodes.JsonObject()
                o["description"] <- Text.Json.Nodes.JsonValue.Create(L2L.TaskSpec.describe cfg.Task)
                for k, v in [ "meta_iterations", cfg.MetaIterations; "horizon", cfg.Horizon; "unroll", cfg.Unroll.Unroll; "batch_functions", cfg.BatchFunctions
                              "validate_every", cfg.ValidateEvery; "validation_functions", cfg.ValidationFunctions ] do
                    o[k] <- Text.Json.Nodes.JsonValue.Create(v)
                o["second_order"] <- Text.Json.Nodes.JsonValue.Create(cfg.Unroll.SecondOrder)
                o["log_loss"] <- Text.Json.Nodes.JsonValue.Create(cfg.Unroll.LogLoss)
                o["meta_lr"] <- Text.Json.Nodes.JsonValue.Create(cfg.MetaLr)
                o["seed"] <- Text.Json.Nodes.JsonValue.Create(cfg.Seed)
                let training = Text.Json.Nodes.JsonNode.Parse(o.ToJsonString())
                Expect.isTrue (L2L.Cli.Paper.recordsSettings training cfg) (sprintf "%s: same settings (non-ASCII description included)" (L2L.TaskSpec.describe cfg.Task))
                Expect.isFalse (L2L.Cli.Paper.recordsSettings training { cfg with MetaIterations = cfg.MetaIterations + 1 }) "another budget"
                Expect.isFalse (L2L.Cli.Paper.recordsSettings training { cfg with Seed = cfg.Seed + 1L }) "another seed"
                // files from before random scaling and the curriculum hold the defaults
                Expect.isFalse (L2L.Cli.Paper.recordsSettings training { cfg with RandomScaling = 1.0 }) "random scaling not recorded: none"
                Expect.isFalse (L2L.Cli.Paper.recordsSettings training { cfg with Curriculum = { Horizons = [ 200 ]; Patience = 3; ValidateAll = false } }) "no curriculum recorded: none"
                // and a file recording them matches only them
                let later = training.DeepClone()
                later["random_scaling"] <- Text.Json.Nodes.JsonValue.Create(1.0)
                later["curriculum"] <- Text.Json.Nodes.JsonArray(Text.Json.Nodes.JsonValue.Create(200), Text.Json.Nodes.JsonValue.Create(500))
                later["curriculum_patience"] <- Text.Json.Nodes.JsonValue.Create(4)
                let withLater = { cfg with RandomScaling = 1.0; Curriculum = { Horizons = [ 200; 500 ]; Patience = 4; ValidateAll = false } }
                Expect.isTrue (L2L.Cli.Paper.recordsSettings later withLater) "random scaling and curriculum recorded"
                Expect.isFalse (L2L.Cli.Paper.recordsSettings later cfg) "recorded, but the config has none"
                Expect.isFalse (L2L.Cli.Paper.recordsSettings later { withLater with Curriculum = { Horizons = [ 200; 500 ]; Patience = 3; ValidateAll = false } }) "another patience"
        testCase "paper --retrain trains each optimizer once per command" <| fun () ->
            let once = L2L.Cli.Paper.retrainOnce true
            Expect.equal [ for n in [ "quadratic"; "mnist"; "mnist"; "mnist-conv"; "mnist"; "quadratic" ] -> once n ]
                [ true; true; false; true; false; false ] "the first request of each name only"
            let never = L2L.Cli.Paper.retrainOnce false
            Expect.isFalse (never "mnist" || never "quadratic") "without --retrain, never"
        testCase "unknown task" <| fun () -> expectUsageError [ "train"; "--task"; "rosenbrock"; "--out"; tmpDir () ] "unknown task 'rosenbrock'"
        testCase "mixture: missing, malformed, stray" <| fun () ->
            expectUsageError [ "train"; "--task"; "mixture"; "--out"; tmpDir () ] "--task mixture needs --mixture"
            expectUsageError [ "train"; "--task"; "mixture"; "--mixture"; "quadratic:10+rosenbrock"; "--out"; tmpDir () ] "mixture task 'rosenbrock'"
            expectUsageError [ "train"; "--task"; "mixture"; "--mixture"; "quadratic:0"; "--out"; tmpDir () ] "dimension '0'"
            expectUsageError [ "train"; "--task"; "mixture"; "--mixture"; "mnist:tanh"; "--out"; tmpDir () ] "unknown activation 'tanh'"
            expectUsageError [ "train"; "--task"; "mixture"; "--mixture"; "quadratic:10*-1"; "--out"; tmpDir () ] "weight '-1'"
            expectUsageError [ "train"; "--task"; "quadratic"; "--mixture"; "quadratic:10"; "--out"; tmpDir () ] "--mixture goes with --task mixture"
        testCase "curriculum: not increasing" <| fun () ->
            expectUsageError [ "train"; "--task"; "quadratic"; "--curriculum"; "200,150"; "--out"; tmpDir () ] "curriculum horizons must increase"
        testCase "steps ≤ 0" <| fun () -> expectUsageError [ "train"; "--task"; "quadratic"; "--out"; tmpDir (); "--steps"; "0" ] "steps"
        testCase "unroll not dividing the horizon" <| fun () ->
            expectUsageError [ "train"; "--task"; "quadratic"; "--out"; tmpDir (); "--unroll"; "30" ] "unroll 30 does not divide the horizon 100"
        testCase "missing optimizer file" <| fun () ->
            expectUsageError [ "evaluate"; "--task"; "quadratic"; "--optimizer"; "/nonexistent/o.json"; "--out"; "r.json" ] "/nonexistent/o.json"
        testCase "malformed optimizer file" <| fun () ->
            let d = tmpDir ()
            Directory.CreateDirectory d |> ignore
            let f = Path.Combine(d, "bad.json")
            File.WriteAllText(f, "{\"format\": 3")
            expectUsageError [ "evaluate"; "--task"; "quadratic"; "--optimizer"; f; "--out"; Path.Combine(d, "r.json") ] "not valid JSON"
        testCase "evaluate with steps ≤ 0" <| fun () ->
            expectUsageError [ "evaluate"; "--task"; "quadratic"; "--optimizer"; "x.json"; "--steps"; "-5"; "--out"; "r.json" ] "steps must be ≥ 1"
        testCase "unknown option" <| fun () -> expectUsageError [ "train"; "--task"; "quadratic"; "--out"; tmpDir (); "--bogus" ] "--bogus"
        testCase "unknown command" <| fun () -> expectUsageError [ "fly" ] "fly"
        testCase "an output path that cannot be written is one line and exit code 1, no stack trace" <| fun () ->
            let file = Path.GetTempFileName()
            let code, _, err = cli [ "train"; "--task"; "quadratic"; "--out"; Path.Combine(file, "x"); "--meta-iterations"; "2" ]
            Expect.equal code 1 "exit code 1: the environment"
            let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 1 (sprintf "one line: %s" err)
            Expect.stringContains lines[0] (Path.Combine(file, "x")) "names the path"
            Expect.isFalse (err.Contains "   at ") "no stack trace"
            File.Delete file
        testCase "a bad environment variable is one line naming it" <| fun () ->
            for name, value in [ "L2L_TORCH_THREADS", "x"; "L2L_STEP_TORCH_THREADS", "-1"; "L2L_META_GRADIENT", "fast"; "L2L_CELL", "weird" ] do
                Environment.SetEnvironmentVariable(name, value)
                try
                    expectUsageError [ "train"; "--task"; "quadratic"; "--out"; tmpDir () ] name
                finally
                    Environment.SetEnvironmentVariable(name, null)
        testCase "unknown experiment" <| fun () -> expectUsageError [ "reproduce"; "cifar" ] "unknown experiment 'cifar'"
        testCase "bad task settings are named" <| fun () ->
            expectUsageError [ "train"; "--task"; "mnist-conv"; "--out"; tmpDir (); "--conv-channels"; "4,a" ] "conv-channels '4,a' is not a list of positive counts"
            expectUsageError [ "train"; "--task"; "mnist-conv"; "--out"; tmpDir (); "--conv-channels"; "4,4,4,4,4" ] "at most 4 conv layers"
            expectUsageError [ "train"; "--task"; "mnist-conv"; "--out"; tmpDir (); "--conv-dense"; "-1" ] "dense units must be ≥ 0"
            expectUsageError [ "train"; "--task"; "mnist"; "--out"; tmpDir (); "--mlp-hidden"; "20,0" ] "mlp-hidden '20,0'"
            expectUsageError [ "evaluate"; "--task"; "mnist"; "--optimizer"; "x.json"; "--activation"; "tanh"; "--out"; "r.json" ] "unknown activation 'tanh'"
        testCase "the conv net's settings reach the task: an optimizer's groups must match them" <| fun () ->
            L2L.Tests.Helpers.scoped (fun () ->
                let d = tmpDir ()
                Directory.CreateDirectory d |> ignore
                let f = Path.Combine(d, "conv.json")
                let task = L2L.Conv { L2L.TaskSpec.convDefault with Channels = [ 2; 3; 4 ]; Dense = 0 }
                let c = { L2L.LstmConfig.paper with Hidden = 3 }
                L2L.OptimizerFile.saveFor f task [ phiOf c 1L f32; phiOf c 2L f32 ] []
                // the default 4, 8 / 32 net has other group sizes
                expectUsageError [ "evaluate"; "--task"; "mnist-conv"; "--optimizer"; f; "--out"; Path.Combine(d, "r.json") ] "do not match the task"
                // the command line's settings give the file's task, which loads it
                let parsed =
                    L2L.Cli.Commands.parseTask
                        { L2L.Cli.Commands.TaskArgs.Name = "mnist-conv"; Dim = 10; MlpHidden = None; Activation = None
                          ConvChannels = Some "2,3,4"; ConvDense = Some 0; Batch = None }
                Expect.equal parsed task "--conv-channels 2,3,4 --conv-dense 0"
                match L2L.OptimizerFile.loadFor f parsed TorchSharp.torch.CPU f32 with
                | Ok phis -> Expect.equal phis.Length 2 "two φ"
                | Error e -> failtest e
                let groups = L2L.TaskSpec.groups task
                Expect.equal groups [ "conv", (2 * 9 + 4) + (3 * 2 * 9 + 6) + (4 * 3 * 9 + 8); "fc", 4 * 3 * 3 * 10 + 10 ] "three conv layers (28 → 14 → 7 → 3), no dense layer")

        testCase "train then evaluate end to end, results.json in the documented schema" <| fun () ->
            let d = tmpDir ()
            let code, out, err =
                cli [ "train"; "--task"; "quadratic"; "--out"; d; "--meta-iterations"; "10"; "--steps"; "10"; "--unroll"; "5"
                      "--validate-every"; "5"; "--hidden"; "6"; "--threads"; "2" ]
            Expect.equal code 0 (sprintf "train succeeded: %s" err)
            Expect.stringContains out "best φ at iteration" "reports the best φ"
            for f in [ "optimizer.json"; "train-log.csv"; "train.json" ] do
                Expect.isTrue (File.Exists(Path.Combine(d, f))) f
            Expect.equal (File.ReadAllLines(Path.Combine(d, "train-log.csv")).Length) 11 "header + one row per meta-iteration"
            let results = Path.Combine(d, "results.json")
            let code, out, err =
                cli [ "evaluate"; "--task"; "quadratic"; "--optimizer"; Path.Combine(d, "optimizer.json"); "--steps"; "120"; "--runs"; "20"
                      "--tune-baselines"; "--tune-runs"; "20"; "--tune-steps"; "10"; "--out"; results ]
            Expect.equal code 0 (sprintf "evaluate succeeded: %s" err)
            Expect.stringContains out "momentum" "table lists the baselines"
            use doc = Text.Json.JsonDocument.Parse(File.ReadAllText results)
            let root = doc.RootElement
            Expect.equal (root.GetProperty("task").GetString()) "quadratic" "task"
            Expect.equal (root.GetProperty("steps").GetInt32()) 120 "steps"
            Expect.equal (root.GetProperty("runs").GetInt32()) 20 "runs"
            let names = [ for o in root.GetProperty("optimizers").EnumerateArray() -> o.GetProperty("name").GetString() ]
            Expect.equal names [ "lstm"; "sgd"; "momentum"; "nag"; "rmsprop"; "adam" ] "optimizers"
            for o in root.GetProperty("optimizers").EnumerateArray() do
                Expect.equal (o.GetProperty("curve_mean").GetArrayLength()) 121 "S + 1 curve points"
                let keys = [ for p in o.GetProperty("loss_at").EnumerateObject() -> p.Name ]
                Expect.equal keys [ "50"; "100"; "120" ] "loss_at: multiples of 50 and S"
                Expect.equal [ for p in o.GetProperty("ci95_at").EnumerateObject() -> p.Name ] keys "ci95_at"
                // runs_at holds each run's loss, from which loss_at and ci95_at are recomputed
                for k in keys do
                    let runs = [| for x in o.GetProperty("runs_at").GetProperty(k).EnumerateArray() -> x.GetDouble() |]
                    Expect.equal runs.Length 20 "one loss per run"
                    let mean = Array.average runs
                    Expect.floatClose Accuracy.high (o.GetProperty("loss_at").GetProperty(k).GetDouble()) mean "loss_at is their mean"
                    let s = sqrt ((runs |> Array.sumBy (fun x -> (x - mean) ** 2.0)) / 19.0)
                    Expect.floatClose Accuracy.high (o.GetProperty("ci95_at").GetProperty(k).GetDouble()) (2.093024 * s / sqrt 20.0) "ci95_at: t_{19} s/√N"
    
        testCase "l2l train --init: starts from a pretrained optimizer, records it; bad uses are one line" <| fun () ->
            let d = tmpDir ()
            let code, out, err =
                cli [ "train"; "--task"; "quadratic"; "--out"; d; "--init"; "quadratic"; "--meta-iterations"; "5"; "--steps"; "10"; "--unroll"; "5"
                      "--validate-every"; "5"; "--validation-functions"; "16"; "--threads"; "2" ]
            Expect.equal code 0 (sprintf "train succeeded: %s" err)
            Expect.stringContains out "starting from the optimizer quadratic" "says where it starts"
            let training = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(d, "train.json")))
            Expect.equal (training["init"].GetValue<string>()) "quadratic" "the training record names it"
            let pretrained = (L2L.Pretrained.load "quadratic").Groups |> List.map (fun (_, _, p) -> p)
            match L2L.OptimizerFile.load (Path.Combine(d, "optimizer.json")) TorchSharp.torch.CPU TorchSharp.torch.ScalarType.Float32 with
            | Error e -> failtest e
            | Ok phi ->
                Expect.equal phi.Config pretrained.Head.Config "m_φ's settings are the pretrained one's"
                // five meta-iterations at meta-lr 0.003 move φ a little from where it started
                Expect.isLessThan (maxAbsDiff (phiValues [ phi ]) (phiValues pretrained)) 0.05 "near the pretrained φ, not a fresh draw"
            expectUsageError [ "train"; "--task"; "quadratic"; "--out"; tmpDir (); "--init"; "quadratic"; "--hidden"; "6" ] "drop --hidden"
            expectUsageError [ "train"; "--task"; "quadratic"; "--out"; tmpDir (); "--init"; "no-such-optimizer" ] "no optimizer file 'no-such-optimizer'"
            expectUsageError [ "train"; "--task"; "quadratic"; "--out"; tmpDir (); "--init"; "mnist-conv" ] "coordinate groups"

        testCase "evaluate takes a pretrained optimizer by name" <| fun () ->
            let out = Path.Combine(tmpDir (), "results.json")
            let code, _, err = cli [ "evaluate"; "--task"; "quadratic"; "--optimizer"; "quadratic"; "--steps"; "10"; "--runs"; "8"; "--out"; out ]
            Expect.equal code 0 (sprintf "evaluate succeeded: %s" err)
            use doc = Text.Json.JsonDocument.Parse(File.ReadAllText out)
            let names = [ for o in doc.RootElement.GetProperty("optimizers").EnumerateArray() -> o.GetProperty("name").GetString() ]
            Expect.equal names [ "lstm" ] "the learned optimizer alone"
            // the conv net's two φ do not fit a task of one coordinate group
            expectUsageError [ "evaluate"; "--task"; "quadratic"; "--optimizer"; "mnist-conv"; "--out"; out ] "pretrained optimizer 'mnist-conv'"

        testCase "submit validates the spec, drops it for the worker; status lists it; cancel marks it" <| fun () ->
            let d = tmpDir ()
            Directory.CreateDirectory d |> ignore
            let bad = Path.Combine(d, "bad.json")
            File.WriteAllText(bad, """{"id":"b","task":{"name":"quadratic"},"metaIterations":-3}""")
            let jobs = Path.Combine(d, "jobs")
            expectUsageError [ "submit"; bad; "--jobs"; jobs ] "metaIterations must be ≥ 0"
            let good = Path.Combine(d, "good.json")
            File.WriteAllText(good, """{"id":"q1","task":{"name":"quadratic","dim":10},"metaIterations":60,"seed":11,"checkpointEvery":5}""")
            let code, out, _ = cli [ "submit"; good; "--jobs"; jobs ]
            Expect.equal code 0 "submitted"
            Expect.stringContains out "submitted job q1" "says so"
            Expect.isTrue (File.Exists(Path.Combine(jobs, "q1.json"))) "dropped into the jobs directory"
            expectUsageError [ "submit"; good; "--jobs"; jobs ] "a job 'q1' already exists"
            let code, out, _ = cli [ "status"; "--jobs"; jobs ]
            Expect.equal code 0 "status"
            Expect.stringContains out "q1" "lists the job"
            Expect.stringContains out "submitted" "not yet picked up"
            let code, _, _ = cli [ "cancel"; "q1"; "--jobs"; jobs ]
            Expect.equal code 0 "cancel"
            Expect.isTrue (File.Exists(Path.Combine(jobs, "q1", "cancel"))) "cancel marker"
            expectUsageError [ "cancel"; "nope"; "--jobs"; jobs ] "no job 'nope'"
    
        testCase "bench measures meta-training and evaluation throughput and peak memory" <| fun () ->
            let code, out, err = cli [ "bench"; "--task"; "quadratic"; "--reps"; "1"; "--child"; "--threads"; "2" ]
            Expect.equal code 0 (sprintf "bench ran: %s" err)
            let line = out.Split('\n') |> Array.find (fun l -> l.StartsWith "{")
            use doc = Text.Json.JsonDocument.Parse line
            for key in [ "meta_train_steps_per_s"; "eval_steps_per_s"; "peak_rss_mib" ] do
                let v = doc.RootElement.GetProperty(key).GetDouble()
                Expect.isTrue (Double.IsFinite v && v > 0.0) (sprintf "%s = %g" key v)
            Expect.equal (doc.RootElement.GetProperty("meta_train_coordinates").GetInt32()) 1280 "128 functions × 10"
            // m_φ against the GEMM: the forward, the backward through autograd and the fused backward alone
            let kernel = doc.RootElement.GetProperty("kernel")
            for key in [ "m_phi_forward_gflops"; "m_phi_backward_gflops"; "m_phi_backward_kernel_gflops"; "gemm_peak_gflops" ] do
                let v = kernel.GetProperty(key).GetDouble()
                Expect.isTrue (Double.IsFinite v && v > 0.0) (sprintf "kernel.%s = %g" key v)

        testCase "bench names the instruction sets it ran: the kernels' width, libtorch's capability" <| fun () ->
            let o = L2L.Cli.Bench.isa ()
            Expect.equal (o["kernel_bits"].GetValue<int>()) (L2L.Kernels.CoordinatewiseLstm.Width * 32) "the kernels' register width"
            Expect.contains [ "AVX512"; "AVX2"; "DEFAULT" ] (o["aten_capability"].GetValue<string>()) "libtorch's ATen capability, read from libtorch"
            Expect.equal (o["dotnet_vector512"].GetValue<bool>()) System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ".NET's 512-bit path"
            Expect.stringContains (L2L.Cli.Bench.describeIsa o) (sprintf "%d-bit" (L2L.Kernels.CoordinatewiseLstm.Width * 32)) "the table's header line"

        testCase "bench --isa: an unknown choice is a usage error" <| fun () ->
            expectUsageError [ "bench"; "--isa"; "sse2"; "--task"; "quadratic" ] "unknown instruction-set choice 'sse2'"
    ]
