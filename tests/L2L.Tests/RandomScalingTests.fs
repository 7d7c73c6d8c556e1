/// Random scaling of the meta-training problems (f(c ⊙ θ) from θ_0 / c): the scaled problem is the
/// same function seen in stretched coordinates, its factors are drawn from the trajectory's seed, and
/// a run with it is reproducible and resumable like any other.
module L2L.Tests.RandomScalingTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let cfg = { smallMeta with MetaIterations = 10; ValidateEvery = 5; RandomScaling = 2.0 }

[<Tests>]
let tests =
    testList "random scaling" [
        testCase "a scaled problem is the function at c ⊙ θ, from the same point, with ∇ = c ⊙ ∇f(c ⊙ θ)" <| fun () ->
            scoped (fun () ->
                let dcfg = { cfg with DType = f64 }
                let base' = TaskSpec.trainProblem TaskData.none dcfg.Task (Shard.seed dcfg 0) 2L (Shard.functions dcfg) dcfg.Horizon torch.CPU f64
                let scaled = Shard.problem dcfg TaskData.none 0 2L
                let c = base'.Theta0.div(scaled.Theta0)
                let logc = toArray (c.log())
                Expect.isTrue (logc |> Array.forall (fun v -> abs v <= 2.0 + 1e-9)) "log c in [−A, A]"
                Expect.isGreaterThan (Array.max logc - Array.min logc) 2.0 "the factors spread over the range"
                let f (p: Problem) (theta: Tensor) = (Problem.loss p 0 theta).ToDouble()
                Expect.floatClose Accuracy.high (f scaled scaled.Theta0) (f base' base'.Theta0) "the same f at the start"
                // at another point: the loss at θ is f(c ⊙ θ), the hand-derived ∇ is autograd's
                use gen = Seeds.generator 4L 2UL 0L
                let theta = scaled.Theta0.Add(torch.randn(scaled.Theta0.shape, dtype = f64, generator = gen).Mul(0.3))
                Expect.floatClose Accuracy.high (f scaled theta) (f base' (theta.mul(c))) "f'(θ) = f(c ⊙ θ)"
                let _, g = scaled.LossGrad.Value 0 theta
                let leaf = theta.clone().requires_grad_(true)
                let auto = torch.autograd.grad([| Problem.loss scaled 0 leaf |], [| leaf |])[0]
                Expect.isLessThan (g.Sub(auto).abs().max().ToDouble()) 1e-9 "∇ = c ⊙ ∇f(c ⊙ θ)"
                let _, gBase = base'.LossGrad.Value 0 (theta.mul(c))
                Expect.isLessThan (g.Sub(gBase.mul(c)).abs().max().ToDouble()) 1e-12 "the chain rule, coordinate by coordinate")

        testCase "the factors come from the trajectory's seed: the same for the same trajectory, others for the next" <| fun () ->
            scoped (fun () ->
                let a = Shard.problem cfg TaskData.none 0 5L
                let b = Shard.problem cfg TaskData.none 0 5L
                let next = Shard.problem cfg TaskData.none 0 6L
                let other = Shard.problem { cfg with Shards = 2 } TaskData.none 1 5L
                Expect.sequenceEqual (toArray a.Theta0) (toArray b.Theta0) "reproducible"
                let ratio (p: Problem) (q: Problem) = toArray (p.Theta0.div(q.Theta0))
                let unscaled i = TaskSpec.trainProblem TaskData.none cfg.Task (Shard.seed cfg 0) i (Shard.functions cfg) cfg.Horizon torch.CPU cfg.DType
                Expect.notEqual (ratio (unscaled 5L) a) (ratio (unscaled 6L) next) "other factors for the next trajectory"
                Expect.equal (other.Theta0.shape[0]) (a.Theta0.shape[0] / 2L) "a shard's problem is scaled too"
                let off = Shard.problem { cfg with RandomScaling = 0.0 } TaskData.none 0 5L
                Expect.sequenceEqual (toArray off.Theta0) (toArray (unscaled 5L).Theta0) "A = 0: the problem as it is")

        testCase "meta-training with it is reproducible, resumes mid-trajectory bit for bit, and differs from training without it" <| fun () ->
            scoped (fun () ->
                let run (c: MetaConfig) n = MetaTrain.run { c with MetaIterations = n } TaskData.none ignore (fun () -> false) (MetaTrain.init c)
                let straight = run cfg 10
                let again = run cfg 10
                Expect.sequenceEqual (phiValues again.Phis) (phiValues straight.Phis) "the same φ twice"
                let plain = run { cfg with RandomScaling = 0.0 } 10
                Expect.notEqual (phiValues plain.Phis) (phiValues straight.Phis) "the scaling changes what is learned"
                let partial = run cfg 7
                Expect.isSome partial.Trajectory "mid-trajectory"
                let bytes = Checkpoint.encode cfg partial []
                match Checkpoint.decode cfg TaskData.none bytes with
                | Error e -> failtest (CheckpointError.describe e)
                | Ok(resumed, _) ->
                    let finished = MetaTrain.run cfg TaskData.none ignore (fun () -> false) resumed
                    Expect.sequenceEqual (phiValues finished.Phis) (phiValues straight.Phis) "resumed: the same φ"
                    TrainState.dispose finished
                match Checkpoint.decode { cfg with RandomScaling = 1.0 } TaskData.none bytes with
                | Ok _ -> failtest "resumed with another scaling"
                | Error e -> Expect.stringContains (CheckpointError.describe e) "random scaling" "named"
                for s in [ straight; again; plain; partial ] do
                    TrainState.dispose s)

        testCase "out-of-range values are refused, in a config and in a job spec" <| fun () ->
            for a in [ -1.0; 11.0; nan; infinity ] do
                match MetaConfig.validate { cfg with RandomScaling = a } with
                | Ok _ -> failtestf "%g accepted" a
                | Error es -> Expect.exists es (fun e -> e.StartsWith "random scaling must be in [0, 10]") "named"
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"randomScaling":1.5}""" with
            | Ok s -> Expect.equal s.Meta.RandomScaling 1.5 "randomScaling"
            | Error es -> failtest (String.concat "; " es)
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"randomScaling":-2}""" with
            | Ok _ -> failtest "a negative scaling accepted"
            | Error es -> Expect.exists es (fun e -> e.StartsWith "random scaling") "named"
    ]
