/// The learned optimizer on one's own model: LearnedOptimizer against the core's flat path, its state
/// dicts, the pretrained optimizers, and a module as a meta-training task.
module L2L.Tests.OwnModelTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open TorchSharp
open TorchSharp.Modules
open L2L
open L2L.Tests.Helpers

let private live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount

/// Parameters of several shapes (a matrix, a vector, a 3-d block, a scalar), in two groups.
let private parameters (dtype: torch.ScalarType) (seed: int64) =
    use gen = Seeds.generator seed 5UL 0L
    let mk (shape: int64[]) = new Parameter(torch.randn(shape, dtype = dtype, generator = gen))
    [ [ mk [| 3L; 4L |]; mk [| 7L |] ]; [ mk [| 2L; 3L; 2L |]; mk [||] ] ]

let private copies (groups: Parameter list list) =
    groups |> List.map (List.map (fun p -> new Parameter(p.detach().clone())))

let private flat (ps: Parameter list) = torch.cat([| for p in ps -> p.detach().reshape(-1L) |], 0L)

/// Gradients for step k, the same for every copy of the parameters.
let private setGrads (groups: Parameter list list) (k: int) =
    use gen = Seeds.generator 11L 6UL (int64 k)
    for ps in groups do
        for p in ps do
            p.grad <- torch.randn(p.shape, dtype = p.dtype, generator = gen).Mul(0.3)

let private optimizerOf (groups: Parameter list list) (phis: Phi list) =
    new LearnedOptimizer([ for i, ps in List.indexed groups -> ParamGroup<LearnedOptions>(Seq.ofList ps, LearnedOptions(sprintf "g%d" i, phis[i])) ], backend)

let private values (groups: Parameter list list) = [ for ps in groups -> toArray (flat ps) ]

/// A module written the usual TorchSharp way: a Parameter field, registered by RegisterComponents.
type private Scale() as this =
    inherit torch.nn.Module<Tensor, Tensor>("scale")
    let w = new Parameter(torch.ones([| 4L; 1L |]))
    do this.RegisterComponents()
    override _.forward(x: Tensor) = x.matmul(w)

[<Tests>]
let tests =
    testList "own model" [
        for dtype in [ f32; f64 ] do
            testCase (sprintf "LearnedOptimizer makes step for step the updates of Learned.optimizer on the flattened θ (%O; shapes [3;4], [7], [2;3;2], []; two groups)" dtype) <| fun () ->
                scoped (fun () ->
                    let phis = [ phiOf tinyLstm 1L dtype; phiOf tinyLstm 2L dtype ]
                    let groups = parameters dtype 3L
                    use opt = optimizerOf groups phis
                    // the reference: the core's optimizer on each group's flattened θ
                    let mutable reference =
                        [ for i, ps in List.indexed groups ->
                              let o = Learned.optimizer backend phis[i]
                              let theta = flat ps
                              o, theta, o.Init 1 theta ]
                    for k in 0 .. 11 do
                        setGrads groups k
                        let grads = [ for ps in groups -> torch.cat([| for p in ps -> p.grad.reshape(-1L) |], 0L) ]
                        opt.step() |> ignore
                        reference <-
                            [ for (o, theta, s), grad in List.zip reference grads ->
                                  let struct (g, s') = o.Update s grad
                                  o, Update.apply theta g, s' ]
                        for (_, theta, _), ours in List.zip reference (values groups) do
                            Expect.equal ours (toArray theta) (sprintf "step %d: identical parameters" k))

        testCase "a parameter without a gradient keeps its value and its m_φ state; the others move" <| fun () ->
            scoped (fun () ->
                let phis = [ phiOf tinyLstm 1L f32; phiOf tinyLstm 2L f32 ]
                let groups = parameters f32 4L
                use opt = optimizerOf groups phis
                setGrads groups 0
                opt.step() |> ignore
                let frozen = groups[0][1]
                let before = toArray (frozen :> Tensor)
                let stateOf (p: Parameter) =
                    let s = (opt.state_dict().State |> Seq.cast<LearnedParameterState> |> Seq.item 1).Recurrent
                    ignore p
                    [ for t in s.H @ s.C -> toArray t ]
                let stateBefore = stateOf frozen
                setGrads groups 1
                frozen.grad <- null
                let other = toArray (groups.[0].[0] :> Tensor)
                opt.step() |> ignore
                Expect.equal (toArray (frozen :> Tensor)) before "no gradient: not updated"
                Expect.equal (stateOf frozen) stateBefore "and its state is not advanced"
                Expect.notEqual (toArray (groups.[0].[0] :> Tensor)) other "the other parameters moved")

        let saved =
            [ for arch in Architecture.all -> Architecture.name arch, LstmConfig.withArchitecture arch tinyLstm ]
            @ [ "lstm, moments", { tinyLstm with Preprocessing = NormalizedMoments([ 0.5; 0.9 ], 0.99) } ]
        for name, cfg in saved do
            testCase (sprintf "a state saved after k steps and loaded into a new optimizer continues bit-identically (file and state_dict; %s)" name) <| fun () ->
                scoped (fun () ->
                    let phis = [ phiOf cfg 1L f32; phiOf cfg 2L f32 ]
                    let a = parameters f32 5L
                    use optA = optimizerOf a phis
                    for k in 0 .. 4 do
                        setGrads a k
                        optA.step() |> ignore
                    let path = Path.Combine(Path.GetTempPath(), sprintf "l2l-opt-%s.bin" (Guid.NewGuid().ToString("N")))
                    optA.Save path
                    // resumed from the file: other φ at construction, replaced by the saved ones
                    let b = copies a
                    use optB = optimizerOf b [ phiOf cfg 8L f32; phiOf cfg 9L f32 ]
                    optB.Load path
                    // resumed from the live state dict
                    let c = copies a
                    use optC = optimizerOf c phis
                    optC.load_state_dict(optA.state_dict())
                    for k in 5 .. 12 do
                        for g in [ a; b; c ] do
                            setGrads g k
                        optA.step() |> ignore
                        optB.step() |> ignore
                        optC.step() |> ignore
                        Expect.equal (values b) (values a) (sprintf "step %d: resumed from the file" k)
                        Expect.equal (values c) (values a) (sprintf "step %d: resumed from state_dict" k)
                    File.Delete path)

        testCase "Load names what is wrong with a file that is not this optimizer's state" <| fun () ->
            scoped (fun () ->
                let groups = parameters f32 6L
                use opt = optimizerOf groups [ phiOf tinyLstm 1L f32; phiOf tinyLstm 2L f32 ]
                let path = Path.Combine(Path.GetTempPath(), sprintf "l2l-opt-%s.bin" (Guid.NewGuid().ToString("N")))
                opt.Save path
                let bytes = File.ReadAllBytes path
                File.WriteAllBytes(path, bytes[.. bytes.Length / 2])
                let e = Expect.throwsT<InvalidDataException> (fun () -> opt.Load path) "truncated"
                ignore e
                (try opt.Load path with :? InvalidDataException as e -> Expect.stringContains e.Message "truncated" "says so")
                File.WriteAllBytes(path, Array.create 300 0xFFuy)
                (try opt.Load path; failtest "loaded garbage" with :? InvalidDataException as e -> Expect.stringContains e.Message path "names the file")
                File.Delete path
                (try opt.Load path; failtest "loaded a missing file" with :? InvalidDataException as e -> Expect.stringContains e.Message "does not exist" "missing")
                // another model: a group of another size
                let other = [ [ new Parameter(torch.zeros([| 5L |])) ]; [ new Parameter(torch.zeros([| 2L |])) ] ]
                use small = optimizerOf other [ phiOf tinyLstm 1L f32; phiOf tinyLstm 2L f32 ]
                small.Save path
                (try opt.Load path; failtest "loaded another model's state" with :? InvalidDataException as e -> Expect.stringContains e.Message "does not fit" "another model")
                File.Delete path)

        testCase "a parameter's state is a copy: later steps do not change it (a one-parameter group too)" <| fun () ->
            scoped (fun () ->
                let groups = [ [ new Parameter(torch.randn([| 6L |])) ] ]
                use opt = optimizerOf groups [ phiOf tinyLstm 1L f32 ]
                setGrads groups 0
                opt.step() |> ignore
                let s = (opt.state_dict().State |> Seq.cast<LearnedParameterState> |> Seq.head).Recurrent
                let before = [ for t in s.H @ s.C -> toArray t ]
                for k in 1 .. 3 do
                    setGrads groups k
                    opt.step() |> ignore
                Expect.equal [ for t in s.H @ s.C -> toArray t ] before "unchanged")

        testCase "steps leak no tensors: the live count is the same after 3 and after 20 steps" <| fun () ->
            scoped (fun () ->
                let groups = parameters f32 7L
                use opt = optimizerOf groups [ phiOf tinyLstm 1L f32; phiOf tinyLstm 2L f32 ]
                let run n =
                    for k in 1 .. n do
                        use _ = torch.NewDisposeScope()
                        setGrads groups k
                        opt.step() |> ignore
                run 3
                let after3 = live ()
                run 17
                Expect.equal (live ()) after3 "no tensor left behind per step")

        testCase "pretrained optimizers: listed, loaded by name with their φ as committed and their paper results" <| fun () ->
            scoped (fun () ->
                Expect.equal Pretrained.names [ "quadratic"; "mnist"; "mnist-conv"; "general"; "general-conv"; "general-quadratic" ] "the shipped optimizers"
                for name, results in [ "quadratic", "quadratics"; "mnist", "mnist"; "mnist-conv", "mnist-conv"; "general", "beyond"; "general-conv", "beyond"; "general-quadratic", "beyond" ] do
                    use p = Pretrained.load name
                    match OptimizerFile.loadGroups (Path.Combine("paper", "optimizers", name + ".json")) torch.CPU f32 with
                    | Error e -> failtest e
                    | Ok committed ->
                        Expect.equal (p.Groups |> List.map (fun (g, _, _) -> g)) (committed |> List.map (fun (g, _, _) -> g)) (name + ": groups")
                        for (_, _, a), (_, _, b) in List.zip p.Groups committed do
                            for x, y in List.zip (Phi.tensors a) (Phi.tensors b) do
                                Expect.equal (toArray x) (toArray y) (name + ": φ as committed")
                    Expect.isGreaterThan (p.Groups |> List.sumBy (fun (_, k, _) -> k)) 0 (name + ": the coordinates it was trained on")
                    use doc = Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine("paper", "results", results, "results.json")))
                    // paper beyond's: one evaluation per task, each naming the optimizer it ran (its first here)
                    let measured, summary =
                        match doc.RootElement.TryGetProperty "tasks" with
                        | true, tasks ->
                            let ran =
                                tasks.EnumerateArray()
                                |> Seq.filter (fun t -> t.GetProperty("optimizer").GetString() = sprintf "optimizers/%s.json" name)
                                |> List.ofSeq
                            let shippedTasks = p.Results["tasks"].AsArray() |> List.ofSeq
                            Expect.isNonEmpty ran (name + ": ran some of the tasks")
                            Expect.equal (shippedTasks |> List.map (fun t -> t["name"].GetValue<string>())) (ran |> List.map (fun t -> t.GetProperty("name").GetString()))
                                (name + ": its results are the tasks it ran")
                            ran.Head, shippedTasks.Head
                        | _ -> doc.RootElement, p.Results :> Text.Json.Nodes.JsonNode
                    let lstm = measured.GetProperty("optimizers").EnumerateArray() |> Seq.find (fun o -> o.GetProperty("name").GetString() = "lstm")
                    let shipped = summary["optimizers"].AsArray() |> Seq.find (fun o -> o["name"].GetValue<string>() = "lstm")
                    let lossAt: Text.Json.Nodes.JsonNode = shipped["loss_at"]
                    let shippedLoss = lossAt["200"].GetValue<float>()
                    Expect.equal shippedLoss (lstm.GetProperty("loss_at").GetProperty("200").GetDouble()) (name + ": results as measured")
                    let iterations: Text.Json.Nodes.JsonNode = p.Training["meta_iterations"]
                    Expect.isTrue (iterations.GetValue<int>() > 0) (name + ": its training settings")
                let e = Expect.throwsT<ArgumentException> (fun () -> Pretrained.load "vgg" |> ignore) "unknown"
                ignore e)

        testCase "LearnedOptimizer.Pretrained: one φ on any parameters; a grouped one asks for its groups by name" <| fun () ->
            scoped (fun () ->
                let groups = parameters f32 8L
                use opt = LearnedOptimizer.Pretrained("mnist", Seq.concat groups)
                Expect.equal opt.GroupNames [ "all" ] "one group"
                setGrads groups 0
                let before = values groups
                opt.step() |> ignore
                Expect.notEqual (values groups) before "it moves θ"
                (try LearnedOptimizer.Pretrained("mnist-conv", Seq.concat groups) |> ignore; failtest "accepted"
                 with :? ArgumentException as e -> Expect.stringContains e.Message "conv, fc" "names its groups")
                use conv = LearnedOptimizer.Pretrained("mnist-conv", dict [ "conv", Seq.ofList groups[0]; "fc", Seq.ofList groups[1] ])
                Expect.equal conv.GroupNames [ "conv"; "fc" ] "two groups")

        testCase "Task.ofModule: nn.Sequential 784-20-10 sigmoid matches the hand-written MNIST MLP task (losses, ∇, m_φ's trajectory)" <| fun () ->
            scoped (fun () ->
                let data = MnistTests.fakeData ()
                let batch = 16
                let spec =
                    { Name = "mlp-module"
                      Description = "nn.Sequential 784-20-10 sigmoid"
                      Model = fun () -> torch.nn.Sequential(torch.nn.Linear(784L, 20L), torch.nn.Sigmoid(), torch.nn.Linear(20L, 10L))
                      Batch =
                        fun _ gen ->
                            let idx = torch.randint(50000L, [| int64 batch |], generator = gen)
                            Mnist.scale f32 (data.TrainX.index_select(0L, idx)), data.TrainY.index_select(0L, idx)
                      Loss = fun out y -> torch.nn.functional.cross_entropy(out, y)
                      Full = None
                      Groups = [] }
                let key = 42L
                let steps = 30
                let mine = ModuleTask.problemOf spec TrainSplit [ key ] torch.CPU f32
                // the same minibatches as the module task draws, as the hand-written task's indices
                let indices = torch.stack([| for t in 0 .. steps -> (use g = Seeds.generator key 2UL (int64 t) in torch.randint(50000L, [| int64 batch |], generator = g)) |])
                // module θ: W1 [20; 784], b1, W2 [10; 20], b2; the hand-written one: W [in; out] per layer
                let toHand (v: Tensor) =
                    let w1 = v.narrow(0L, 0L, 15680L).view(20L, 784L).t().reshape(-1L)
                    let w2 = v.narrow(0L, 15700L, 200L).view(10L, 20L).t().reshape(-1L)
                    torch.cat([| w1; v.narrow(0L, 15680L, 20L); w2; v.narrow(0L, 15900L, 10L) |], 0L)
                let mlp = { Hidden = [ 20 ]; Activation = Sigmoid; Batch = batch }
                let hand = Mlp.problem mlp data TrainSplit (toHand mine.Theta0) indices
                for t in [ 0; 1; 7 ] do
                    let l1, g1 = mine.LossGrad.Value t mine.Theta0
                    let l2, g2 = hand.LossGrad.Value t hand.Theta0
                    Expect.floatClose Accuracy.medium (l1.ToDouble()) (l2.ToDouble()) (sprintf "step %d: loss" t)
                    Expect.isLessThan (maxAbsDiff (toArray (toHand g1)) (toArray g2)) 1e-6 (sprintf "step %d: ∇" t)
                let phi = phiOf LstmConfig.paper 3L f32
                let opt = Learned.optimizer backend phi
                let (a: float[][]), _, _, _ = Evaluate.runOne backend opt mine steps Set.empty
                let (b: float[][]), _, _, _ = Evaluate.runOne backend opt hand steps Set.empty
                for t in 0 .. steps do
                    Expect.floatClose { absolute = 1e-4; relative = 1e-3 } a.[t].[0] b.[t].[0] (sprintf "m_φ's loss at step %d" t)
                Problem.dispose mine
                Problem.dispose hand)

        testCase "a module task's networks outlive the scope they were built in, and its minibatches follow the run's dtype" <| fun () ->
            let spec =
                { RegressionTask.spec with
                    Name = "scale"
                    Model = fun () -> new Scale() :> torch.nn.Module<Tensor, Tensor> }
            // built in a scope that ends, keeping the problem's own tensors, as a trajectory keeps its
            // problem beyond the meta-iteration that drew it
            let p = Scope.run (fun (p: Problem) -> p.Owned) (fun () -> ModuleTask.problemOf spec TrainSplit [ 1L ] torch.CPU f32)
            scoped (fun () ->
                let l, g = p.LossGrad.Value 0 p.Theta0
                Expect.equal g.shape [| 4L |] "the module's parameters are still there"
                Expect.isTrue (Double.IsFinite(l.sum().ToDouble())) "a loss")
            Problem.dispose p
            // float64 runs: the sampler's float32 minibatches are cast to the run's dtype
            let q = ModuleTask.problemOf RegressionTask.spec TrainSplit [ 2L ] torch.CPU f64
            scoped (fun () ->
                let _, g = q.LossGrad.Value 0 q.Theta0
                Expect.equal g.dtype f64 "∇ in float64"
                Expect.isTrue (Double.IsFinite(q.Full q.Theta0 |> fun t -> t.sum().ToDouble())) "the whole-data loss too")
            Problem.dispose q

        testCase "a module task meta-trains, validates, checkpoints and resumes like a built-in one (first order, closed form)" <| fun () ->
            scoped (fun () ->
                let spec = RegressionTask.spec
                let task = Task.ofModule spec
                Expect.equal (TaskSpec.coordinates task) (4 * 8 + 8 + 8 + 1) "θ: the module's parameters"
                let cfg =
                    { Defaults.meta task with
                        Lstm = { LstmConfig.paper with Hidden = 8 }
                        Horizon = 20
                        Unroll = { Unroll = 5; Weights = Uniform; SecondOrder = false; LogLoss = true }
                        MetaIterations = 6
                        ValidateEvery = 3
                        ValidationFunctions = 2 }
                Expect.isOk (MetaConfig.validate cfg) "valid"
                Expect.isError (MetaConfig.validate { cfg with Unroll = { cfg.Unroll with SecondOrder = true } }) "second order is refused"
                Expect.throwsT<ArgumentException> (fun () -> MetaTrain.init { cfg with Unroll = { cfg.Unroll with SecondOrder = true } } |> ignore) "also without validation"
                let validation = Some(MetaTrain.validationProblem cfg TaskData.none)
                let mutable s = MetaTrain.init cfg
                let mutable closed = true
                for _ in 1 .. 3 do
                    let s', r = MetaTrain.iterate cfg TaskData.none validation s
                    Expect.isTrue r.Finite "finite"
                    s <- s'
                let bytes = Checkpoint.encode cfg s []
                let mutable a = s
                for _ in 1 .. 3 do
                    a <- fst (MetaTrain.iterate cfg TaskData.none validation a)
                match Checkpoint.decode cfg TaskData.none bytes with
                | Error e -> failtest (CheckpointError.describe e)
                | Ok(resumed, _) ->
                    let mutable b = resumed
                    for _ in 1 .. 3 do
                        b <- fst (MetaTrain.iterate cfg TaskData.none validation b)
                    for x, y in List.zip (a.Phis |> List.collect Phi.tensors) (b.Phis |> List.collect Phi.tensors) do
                        Expect.equal (toArray y) (toArray x) "resumed = uninterrupted"
                    Expect.isTrue (Double.IsFinite a.BestLoss) "validated"
                // the settings a checkpoint records name the task; another task is refused by name
                let other = Task.ofModule { spec with Name = "another" }
                match Checkpoint.decode { cfg with Task = other } TaskData.none bytes with
                | Ok _ -> failtest "resumed another task's checkpoint"
                | Error e -> Expect.stringContains (CheckpointError.describe e) "task" "names the difference"
                ignore closed)
    ]
