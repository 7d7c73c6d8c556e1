/// Meta-training on a mixture of tasks: each trajectory's problem comes from one component, chosen
/// from the trajectory's seed and counter in proportion to the weights; validation holds every
/// component's held-out functions and weighs each problem alike.
module L2L.Tests.MixtureTests

open Expecto
open L2L
open L2L.Tests.Helpers

let components =
    [ { Task = Quadratic 4; Weight = 1.0; Functions = 16; Validation = 32 }
      { Task = Quadratic 8; Weight = 3.0; Functions = 8; Validation = 16 } ]

let mixture = Mixture.task components

let cfg = { smallMeta with Task = mixture; BatchFunctions = 1; MetaIterations = 40; ValidateEvery = 8 }

[<Tests>]
let tests =
    testList "mixture" [
        testCase "components are drawn per trajectory, reproducibly, in proportion to their weights" <| fun () ->
            let picks = [ for i in 0L .. 3999L -> Mixture.pick components 7L i ]
            Expect.equal [ for i in 0L .. 3999L -> Mixture.pick components 7L i ] picks "the same draws again"
            let share = float (picks |> List.filter ((=) 1) |> List.length) / 4000.0
            Expect.isTrue (abs (share - 0.75) < 0.03) (sprintf "weight 3 of 4: drawn %.3f of the time" share)
            Expect.notEqual [ for i in 0L .. 99L -> Mixture.pick components 8L i ] (List.take 100 picks) "another seed, other draws"

        testCase "a training problem is its component's own, with the component's functions" <| fun () ->
            scoped (fun () ->
                for i in 0L .. 9L do
                    let k = Mixture.pick components cfg.Seed i
                    let c = components[k]
                    let p = TaskSpec.trainProblem TaskData.none mixture cfg.Seed i 1 cfg.Horizon (DeviceChoice.resolve cfg.Device) cfg.DType
                    let own = TaskSpec.trainProblem TaskData.none c.Task cfg.Seed i c.Functions cfg.Horizon (DeviceChoice.resolve cfg.Device) cfg.DType
                    Expect.equal p.Functions c.Functions "the component's functions"
                    Expect.sequenceEqual (toArray p.Theta0) (toArray own.Theta0) "the component's problem")

        testCase "validation holds each component's functions, and each problem counts once" <| fun () ->
            scoped (fun () ->
                let problems = MetaTrain.validationProblem cfg TaskData.none
                Expect.equal (problems |> List.map (fun p -> p.Functions)) [ 32; 16 ] "the components' validation functions, in order"
                let s = MetaTrain.init cfg
                let v = MetaTrain.validate cfg problems s.Phis
                let each =
                    problems |> List.map (fun p -> MetaTrain.validate { cfg with Task = Quadratic 4 } [ p ] s.Phis)
                Expect.floatClose Accuracy.high v (List.average each) "the mean of the problems' means"
                let pooled = (32.0 * each[0] + 16.0 * each[1]) / 48.0
                Expect.isGreaterThan (abs (v - pooled)) 1e-9 "not the mean over all functions"
                TrainState.dispose s)

        testCase "meta-training on it is reproducible and sees both components" <| fun () ->
            scoped (fun () ->
                let reports = ResizeArray()
                let run () = MetaTrain.run cfg TaskData.none reports.Add (fun () -> false) (MetaTrain.init cfg)
                let a = run ()
                let first = List.ofSeq reports
                reports.Clear()
                let b = run ()
                Expect.sequenceEqual (phiValues a.Phis) (phiValues b.Phis) "the same φ twice"
                Expect.isTrue (first |> List.forall (fun r -> r.Finite)) "finite"
                let drawn = first |> List.map (fun r -> Mixture.pick components cfg.Seed r.Trajectory) |> List.distinct
                Expect.equal (List.sort drawn) [ 0; 1 ] "trajectories from both components"
                TrainState.dispose a
                TrainState.dispose b)

        testCase "bad mixtures are named" <| fun () ->
            let named (cs: MixtureComponent list) (fragment: string) =
                Expect.exists (Mixture.problems cs) (fun e -> e.Contains fragment) (sprintf "%A" (Mixture.problems cs))
            named [] "at least one task"
            named [ { components[0] with Weight = 0.0 } ] "weight must be positive"
            named [ { components[0] with Functions = 0 } ] "functions must be ≥ 1"
            named [ { components[0] with Validation = 0 } ] "validation functions in at least one"
            named [ { components[0] with Task = Quadratic 0 } ] "quadratic dimension"
            named [ { components[0] with Task = mixture } ] "built-in ones"
            Expect.isEmpty (Mixture.problems components) "a good one passes"
    ]
