/// Warm starts: meta-training from a trained φ (`MetaTrain.initFrom`, `l2l train --init`) starts
/// from copies of it with a fresh meta-optimizer, and from a fresh draw's φ is the fresh run itself.
module L2L.Tests.WarmStartTests

open System
open Expecto
open L2L
open L2L.Tests.Helpers

let private runToEnd (c: MetaConfig) (s: TrainState) = MetaTrain.run c TaskData.none ignore (fun () -> false) s

[<Tests>]
let tests =
    testList "warm start" [
        testCase "from a fresh draw's φ, the run is the fresh run bit for bit" <| fun () ->
            scoped (fun () ->
                let c = { smallMeta with MetaIterations = 12; ValidateEvery = 4 }
                let fresh = MetaTrain.init c
                let given = MetaTrain.snapshot fresh.Phis
                let a = runToEnd c fresh
                let b =
                    match MetaTrain.initFrom c TaskData.none given with
                    | Ok s -> runToEnd c s
                    | Error e -> failtest e
                Expect.equal (phiValues b.Phis) (phiValues a.Phis) "the same φ after 12 meta-iterations"
                // the warm start also validates its starting φ, the one to beat
                let problems = MetaTrain.validationProblem c TaskData.none
                let v0 = MetaTrain.validate c problems given
                problems |> List.iter Problem.dispose
                Expect.equal b.BestLoss (min v0 a.BestLoss) "the best validation: the fresh run's, or the starting φ's"
                if a.BestLoss < v0 then Expect.equal (phiValues b.Best) (phiValues a.Best) "the same best φ")

        testCase "the starting φ is kept when training never validates better" <| fun () ->
            scoped (fun () ->
                // a meta-learning rate too small to move φ: no validation improves on the start
                let c = { smallMeta with MetaIterations = 6; ValidateEvery = 2; MetaLr = 1e-30 }
                let start = (MetaTrain.init { c with Seed = 3L }).Phis
                match MetaTrain.initFrom c TaskData.none start with
                | Error e -> failtest e
                | Ok s ->
                    Expect.isTrue (Double.IsFinite s.BestLoss) "the starting φ validated"
                    let final = runToEnd c s
                    Expect.equal final.BestIteration 0 "kept from iteration 0"
                    Expect.equal (phiValues final.Best) (phiValues start) "the starting φ")

        testCase "starts from copies of the given φ with a fresh meta-optimizer; the given φ is untouched" <| fun () ->
            scoped (fun () ->
                let c = { smallMeta with MetaIterations = 6 }
                // a trained φ: the end of a short run of another seed
                let trained = runToEnd { c with Seed = 7L } (MetaTrain.init { c with Seed = 7L })
                let before = phiValues trained.Phis
                match MetaTrain.initFrom c TaskData.none trained.Phis with
                | Error e -> failtest e
                | Ok s ->
                    Expect.equal (phiValues s.Phis) before "starts at the given φ"
                    Expect.equal (phiValues s.Best) before "the best so far is the given φ"
                    Expect.equal s.Iteration 0 "no meta-iteration done"
                    Expect.isTrue (s.MetaOpt |> List.forall (fun o -> o.Step = 0)) "a fresh meta-optimizer"
                    let after = runToEnd c s
                    Expect.notEqual (phiValues after.Phis) before "training moves φ"
                    Expect.equal (phiValues trained.Phis) before "the given φ is a copy's source, never changed")

        testCase "one φ starts every coordinate group; copies, not shared tensors" <| fun () ->
            scoped (fun () ->
                let c = { Defaults.meta Defaults.convTask with Lstm = smallMeta.Lstm; ValidateEvery = 0 }
                let phi = (MetaTrain.init smallMeta).Phis
                match MetaTrain.initFrom c TaskData.none phi with
                | Error e -> failtest e
                | Ok s ->
                    Expect.equal s.Phis.Length 2 "the conv net's two groups"
                    for p in s.Phis do
                        Expect.equal (phiValues [ p ]) (phiValues phi) "each group starts at the given φ"
                    let t0 = Phis.tensors [ s.Phis[0] ] |> List.head
                    let t1 = Phis.tensors [ s.Phis[1] ] |> List.head
                    Expect.isFalse (obj.ReferenceEquals(t0, t1) || t0.Handle = t1.Handle) "separate tensors")

        testCase "refused: a count that fits no group layout, another m_φ" <| fun () ->
            scoped (fun () ->
                let phi = (MetaTrain.init smallMeta).Phis.Head
                match MetaTrain.initFrom smallMeta TaskData.none [ phi; phi ] with
                | Ok _ -> failtest "two φ for a task of one group"
                | Error e -> Expect.stringContains e "coordinate groups" "names the mismatch"
                match MetaTrain.initFrom { smallMeta with Lstm = { smallMeta.Lstm with Hidden = 6 } } TaskData.none [ phi ] with
                | Ok _ -> failtest "an m_φ of 8 hidden units for one of 6"
                | Error e -> Expect.stringContains e "not the one configured" "names the mismatch") ]
