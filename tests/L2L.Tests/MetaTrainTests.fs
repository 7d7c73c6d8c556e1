/// Meta-training: reproducibility, memory, and that it learns.
module L2L.Tests.MetaTrainTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let trainFor (cfg: MetaConfig) =
    MetaTrain.run cfg TaskData.none ignore (fun () -> false) (MetaTrain.init cfg)

[<Tests>]
let tests =
    testList "meta-training" [
        testCase "same seed ⇒ bit-identical φ after k meta-iterations; another seed differs" <| fun () ->
            let a = trainFor smallMeta
            let b = trainFor smallMeta
            let c = trainFor { smallMeta with Seed = 1L }
            Expect.equal a.Iteration smallMeta.MetaIterations "iterations run"
            Expect.sequenceEqual (phiValues a.Phis) (phiValues b.Phis) "same seed, same φ"
            Expect.notEqual (phiValues a.Phis) (phiValues c.Phis) "another seed, another φ"
            Expect.notEqual (phiValues a.Phis) (phiValues (MetaTrain.init smallMeta).Phis) "φ moved"
            for s in [ a; b; c ] do
                TrainState.dispose s

        testCase "a meta-iteration leaks no tensors (closed-form and autograd meta-gradients)" <| fun () ->
            for path in [ ClosedForm; Autograd ] do
                    // 2 iterations per trajectory; compare live counts at the same phase of a trajectory
                    let cfg = { smallMeta with Horizon = 10; MetaIterations = 100; ValidateEvery = 4; Backend = { backend with MetaGradient = path } }
                    let stats = DisposeScopeManager.Statistics
                    let mutable s = MetaTrain.init cfg
                    let live = ResizeArray()
                    for k in 1..8 do
                        s <- MetaTrain.run { cfg with MetaIterations = k } TaskData.none ignore (fun () -> false) s
                        live.Add stats.ThreadTotalLiveCount
                    Expect.equal live[3] live[1] "after iterations 2 and 4"
                    Expect.equal live[5] live[1] "after iterations 2 and 6"
                    Expect.equal live[7] live[1] "after iterations 2 and 8"
                    Expect.equal live[4] live[2] "after iterations 3 and 5 (mid-trajectory)"
                    let before = stats.ThreadTotalLiveCount
                    TrainState.dispose s
                    Expect.equal (before - stats.ThreadTotalLiveCount) (int64 (TrainState.tensors s |> List.distinct |> List.length)) "disposing the state frees exactly its tensors"

        testCase "meta-training lowers L(φ): held-out loss after 60 meta-iterations is well below φ_0's" <| fun () ->
            let cfg = { smallMeta with MetaIterations = 60; MetaLr = 0.01; Task = Quadratic 10; Horizon = 20; Unroll = { smallMeta.Unroll with Unroll = 5 } }
            let validation = MetaTrain.validationProblem cfg TaskData.none
            let s0 = MetaTrain.init cfg
            let before = MetaTrain.validate cfg validation s0.Phis
            let s = trainFor cfg
            let after = MetaTrain.validate cfg validation s.Phis
            List.iter Problem.dispose validation
            Expect.isLessThan after (0.5 * before) (sprintf "validation f(θ_20): %g after vs %g before" after before)
            TrainState.dispose s

        testCase "validation keeps the best φ and its loss" <| fun () ->
            let cfg = { smallMeta with MetaIterations = 12; ValidateEvery = 3 }
            let reports = ResizeArray()
            let s = MetaTrain.run cfg TaskData.none reports.Add (fun () -> false) (MetaTrain.init cfg)
            let validations = reports |> Seq.choose (fun r -> r.Validation |> Option.map (fun v -> r.Iteration, v)) |> List.ofSeq
            Expect.equal (validations |> List.map fst) [ 3; 6; 9; 12 ] "validated every 3 iterations"
            let bestIt, bestV = validations |> List.minBy snd
            Expect.equal s.BestIteration bestIt "best iteration"
            Expect.equal s.BestLoss bestV "best loss"
            let vp = MetaTrain.validationProblem cfg TaskData.none
            Expect.floatClose Accuracy.high (MetaTrain.validate cfg vp s.Best) bestV "the kept φ gives that loss"
            List.iter Problem.dispose vp
            TrainState.dispose s

        testCase "a non-finite meta-loss skips the update and leaves φ as it was" <| fun () ->
            let cfg = { smallMeta with MetaIterations = 1 }
            let s0 = MetaTrain.init cfg
            // an output bias of 1e30 sends θ to infinity at the first step
            (List.head s0.Phis).BOut.detach().FillInPlace(1e30) |> ignore
            let before = phiValues s0.Phis
            let s1, r = MetaTrain.step cfg TaskData.none s0
            Expect.isFalse r.Finite "reported as non-finite"
            Expect.sequenceEqual (phiValues s1.Phis) before "φ unchanged"

        testCase "invalid settings are all reported" <| fun () ->
            match MetaConfig.validate { smallMeta with Horizon = 20; Unroll = { smallMeta.Unroll with Unroll = 7 }; MetaLr = -1.0 } with
            | Ok _ -> failtest "accepted"
            | Error errs ->
                Expect.exists errs (fun e -> e.Contains "does not divide") "unroll vs horizon"
                Expect.exists errs (fun e -> e.Contains "meta-lr") "meta-lr"
    ]
