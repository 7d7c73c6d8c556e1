/// The unroll-length curriculum: meta-training moves to the next horizon after Patience validations
/// without a new best, from the best φ with a fresh meta-optimizer, and ends when the last stage
/// stalls; a run with it is reproducible and resumes bit for bit.
module L2L.Tests.CurriculumTests

open System
open Expecto
open L2L
open L2L.Tests.Helpers

let cfg =
    { smallMeta with
        Horizon = 10
        MetaIterations = 200
        ValidateEvery = 2
        ValidationFunctions = 32
        Curriculum = { Horizons = [ 20; 40 ]; Patience = 2; ValidateAll = false } }

/// Every state and report of a run, with φ, the best φ and the meta-optimizer's step counts copied out.
let observed (c: MetaConfig) (validation: Problem list) =
    let seen = ResizeArray()
    let mutable s = MetaTrain.init c
    while not (MetaTrain.finished c s) do
        let next, r = MetaTrain.iterate c TaskData.none (Some validation) s
        s <- next
        seen.Add(r, s.Stage, s.Stale, phiValues s.Phis, phiValues s.Best, s.BestLoss, (s.MetaOpt |> List.map (fun o -> o.Step)), s.Trajectory.IsNone)
    s, List.ofSeq seen

[<Tests>]
let tests =
    testList "curriculum" [
        testCase "stalled validations move training through the horizons, then end it" <| fun () ->
            scoped (fun () ->
                // a meta-learning rate too small to move φ: every validation after the first is stale
                let c = { cfg with MetaLr = 1e-30 }
                let validation = MetaTrain.validationProblem c TaskData.none
                let final, seen = observed c validation
                // validations at 2, 4, 6 (stale twice: stage 1), 8, 10 (stage 2), 12, 14 (over)
                Expect.equal final.Iteration 14 "ends when the last stage stalls, long before the budget"
                Expect.equal final.Stage (MetaConfig.stages c) "past the last stage"
                Expect.isTrue (MetaTrain.finished c final) "finished"
                let horizons = seen |> List.map (fun (r, _, _, _, _, _, _, _) -> r.Horizon)
                Expect.equal horizons ([ for _ in 1..6 -> 10 ] @ [ for _ in 7..10 -> 20 ] @ [ for _ in 11..14 -> 40 ]) "each stage's horizon"
                // within a stage, trajectories run to that stage's horizon, one unroll at a time
                let starts = [ 10, 0; 20, 6; 40, 10 ]
                for r, _, _, _, _, _, _, _ in seen do
                    let start = starts |> List.find (fun (h, _) -> h = r.Horizon) |> snd
                    Expect.equal r.Step (5 * ((r.Iteration - start - 1) % (r.Horizon / 5) + 1)) (sprintf "step at iteration %d" r.Iteration)
                for r, stage, stale, _, _, bestLoss, steps, fresh in seen do
                    if r.Iteration = 6 || r.Iteration = 10 then
                        Expect.equal stale 0 "stale count reset"
                        Expect.isTrue fresh "new trajectories"
                        Expect.isTrue (steps |> List.forall ((=) 0)) "a fresh meta-optimizer"
                        let h = MetaConfig.horizon c stage
                        Expect.equal bestLoss (MetaTrain.validateAt c h validation final.Best) (sprintf "the loss to beat: the best φ's at horizon %d" h)
                TrainState.dispose final
                validation |> List.iter Problem.dispose)

        testCase "learning through the stages: restored from the best φ, reproducible, resumed bit for bit" <| fun () ->
            scoped (fun () ->
                let c = { cfg with MetaIterations = 60; Curriculum = { cfg.Curriculum with Patience = 1 } }
                let validation = MetaTrain.validationProblem c TaskData.none
                let final, seen = observed c validation
                let advances =
                    seen |> List.pairwise |> List.filter (fun ((_, a, _, _, _, _, _, _), (_, b, _, _, _, _, _, _)) -> b > a && b < MetaConfig.stages c)
                Expect.isNonEmpty advances "the run advanced at least once"
                for _, (r, _, _, phi, best, _, _, _) in advances do
                    Expect.sequenceEqual phi best (sprintf "φ restored to the best at iteration %d" r.Iteration)
                let again, _ = observed c validation
                Expect.sequenceEqual (phiValues again.Phis) (phiValues final.Phis) "the same φ twice"
                Expect.equal again.Stage final.Stage "the same stage"
                // stop mid-way, checkpoint, resume
                let run n (s: TrainState) = MetaTrain.run { c with MetaIterations = n } TaskData.none ignore (fun () -> false) s
                let partial = run 25 (MetaTrain.init c)
                let bytes = Checkpoint.encode c partial []
                match Checkpoint.decode c TaskData.none bytes with
                | Error e -> failtest (CheckpointError.describe e)
                | Ok(resumed, _) ->
                    Expect.equal resumed.Stage partial.Stage "stage kept"
                    Expect.equal resumed.Stale partial.Stale "stale count kept"
                    let finished = run c.MetaIterations resumed
                    Expect.sequenceEqual (phiValues finished.Phis) (phiValues final.Phis) "resumed: the same φ"
                    Expect.sequenceEqual (phiValues finished.Best) (phiValues final.Best) "resumed: the same best φ"
                    Expect.equal finished.Iteration final.Iteration "resumed: ends at the same iteration"
                    TrainState.dispose finished
                match Checkpoint.decode { c with Curriculum = { c.Curriculum with Horizons = [ 30 ] } } TaskData.none bytes with
                | Ok _ -> failtest "resumed with another curriculum"
                | Error e -> Expect.stringContains (CheckpointError.describe e) "curriculum" "named"
                for s in [ final; again; partial ] do
                    TrainState.dispose s
                validation |> List.iter Problem.dispose)

        testCase "validating at every horizon so far: the geometric mean of each horizon's validation" <| fun () ->
            scoped (fun () ->
                let c = { cfg with Curriculum = { cfg.Curriculum with ValidateAll = true } }
                let validation = MetaTrain.validationProblem c TaskData.none
                let phis = (MetaTrain.init c).Phis
                let at h = MetaTrain.validateAt c h validation phis
                Expect.equal (MetaTrain.validateStage c 0 validation phis) (at 10) "stage 0: its own horizon"
                Expect.floatClose Accuracy.high (MetaTrain.validateStage c 1 validation phis) (sqrt (at 10 * at 20)) "stage 1: over 10 and 20"
                Expect.floatClose Accuracy.high (MetaTrain.validateStage c 2 validation phis) ((at 10 * at 20 * at 40) ** (1.0 / 3.0)) "stage 2: over 10, 20 and 40"
                Expect.equal (MetaTrain.validateStage c 5 validation phis) (MetaTrain.validateStage c 2 validation phis) "past the last stage: the last"
                let plain = { c with Curriculum = { c.Curriculum with ValidateAll = false } }
                Expect.equal (MetaTrain.validateStage plain 2 validation phis) (at 40) "without it: the current horizon only"
                // a run keeps the φ best by that measure; it resumes only with the same setting
                let run = { c with MetaIterations = 30; Curriculum = { c.Curriculum with Patience = 1 } }
                let final, seen = observed run validation
                let stageAtBest = seen |> List.pick (fun (r, stage, _, _, _, _, _, _) -> if r.Iteration = final.BestIteration then Some stage else None)
                if final.BestIteration > 0 && stageAtBest = final.Stage then
                    Expect.equal final.BestLoss (MetaTrain.validateStage run final.Stage validation final.Best) "the best loss is the kept φ's"
                let bytes = Checkpoint.encode run final []
                match Checkpoint.decode { run with Curriculum = { run.Curriculum with ValidateAll = false } } TaskData.none bytes with
                | Ok _ -> failtest "resumed validating otherwise"
                | Error e -> Expect.stringContains (CheckpointError.describe e) "curriculum" "named"
                match Checkpoint.decode run TaskData.none bytes with
                | Ok(s, _) -> TrainState.dispose s
                | Error e -> failtest (CheckpointError.describe e)
                TrainState.dispose final
                match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"curriculum":{"horizons":[200,500],"validateAll":true}}""" with
                | Ok s -> Expect.isTrue s.Meta.Curriculum.ValidateAll "validateAll from a job spec"
                | Error es -> failtest (String.concat "; " es)
                validation |> List.iter Problem.dispose)

        testCase "without a curriculum, training never leaves its horizon" <| fun () ->
            scoped (fun () ->
                let c = { cfg with MetaLr = 1e-30; MetaIterations = 16; Curriculum = Curriculum.none }
                let validation = MetaTrain.validationProblem c TaskData.none
                let final, seen = observed c validation
                Expect.equal final.Iteration 16 "the whole budget"
                Expect.isTrue (seen |> List.forall (fun (r, stage, _, _, _, _, _, _) -> r.Horizon = 10 && stage = 0)) "horizon 10 throughout"
                TrainState.dispose final
                validation |> List.iter Problem.dispose)

        testCase "bad curricula are refused, in a config and in a job spec" <| fun () ->
            let refused (c: Curriculum) (start: string) =
                match MetaConfig.validate { cfg with Curriculum = c } with
                | Ok _ -> failtestf "%A accepted" c
                | Error es -> Expect.exists es (fun e -> e.StartsWith start) (sprintf "%A: %A" c es)
            refused { Horizons = [ 20; 20 ]; Patience = 2; ValidateAll = false } "curriculum horizons must increase"
            refused { Horizons = [ 10 ]; Patience = 2; ValidateAll = false } "curriculum horizons must increase"
            refused { Horizons = [ 22 ]; Patience = 2; ValidateAll = false } "unroll 5 does not divide the curriculum horizon 22"
            refused { Horizons = [ 20 ]; Patience = 0; ValidateAll = false } "curriculum patience must be ≥ 1"
            match MetaConfig.validate { cfg with ValidateEvery = 0 } with
            | Ok _ -> failtest "a curriculum without validation accepted"
            | Error es -> Expect.exists es (fun e -> e.StartsWith "a curriculum advances on validation") "named"
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"curriculum":{"horizons":[200,500],"patience":4}}""" with
            | Ok s -> Expect.equal s.Meta.Curriculum { Horizons = [ 200; 500 ]; Patience = 4; ValidateAll = false } "curriculum"
            | Error es -> failtest (String.concat "; " es)
            for bad in [ """{"horizons":[]}"""; """{"horizons":[50]}"""; """{"horizons":[200],"what":1}"""; "3" ] do
                match JobSpec.parse (sprintf """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"curriculum":%s}""" bad) with
                | Ok _ -> failtestf "curriculum %s accepted" bad
                | Error es -> Expect.exists es (fun e -> e.Contains "curriculum") (sprintf "%s: %A" bad es)
    ]
