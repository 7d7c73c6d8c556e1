/// Imitation of Adam: on an imitation trajectory the optimizee follows Adam exactly, m_φ runs beside
/// it, and the loss is the relative squared difference of their steps; meta-training on it teaches
/// m_φ Adam's steps, mixes with ordinary trajectories by a per-trajectory draw, and resumes exactly.
module L2L.Tests.ImitationTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let cfg = { smallMeta with Imitation = { Probability = 1.0; Lr = 0.05 } }

[<Tests>]
let tests =
    testList "imitation" [
        testCase "the optimizee follows Adam; the loss is ½‖g_φ − g_Adam‖²/‖g_Adam‖² summed over the steps" <| fun () ->
            scoped (fun () ->
                let c = { cfg with DType = f64 }
                let s = MetaTrain.init c
                let phi = s.Phis.Head
                let problem = Shard.problem c TaskData.none 0 0L
                let learner = TaskSpec.learned backend c.Task s.Phis
                let adam = Shard.teacher c
                let tr = MetaLoss.start (Imitation.optimizer learner adam) problem 0L
                Expect.isTrue (Imitation.applies tr) "an imitation trajectory"
                let loss, grads, carried = Imitation.metaGradient c.Unroll learner adam (Phi.tensors phi) tr
                // the same steps by hand: Adam moves θ, m_φ runs on Adam's gradients
                let noGrad = torch.no_grad()
                let mutable theta = problem.Theta0.clone()
                let mutable ls = learner.Init problem.Functions theta
                let mutable ts = adam.Init problem.Functions theta
                let mutable expected = 0.0
                for j in 1 .. c.Unroll.Unroll do
                    let _, grad = problem.LossGrad.Value (j - 1) theta
                    let struct (gl, ls') = learner.Update ls grad
                    let struct (ga, ts') = adam.Update ts grad
                    let d = gl.sub(ga)
                    expected <- expected + 0.5 * (d.mul(d).sum().ToDouble()) / (ga.mul(ga).sum().ToDouble())
                    theta <- theta.add(ga)
                    ls <- ls'
                    ts <- ts'
                Expect.floatClose Accuracy.high (loss.ToDouble()) expected "the loss"
                Expect.sequenceEqual (toArray carried.Theta) (toArray theta) "θ is Adam's"
                Expect.equal carried.Step c.Unroll.Unroll "the step count"
                noGrad.Dispose()
                // the gradient against a central difference along a random direction
                use gen = Seeds.generator 9L 0UL 0L
                let dirs = Phi.tensors phi |> List.map (fun p -> torch.randn(p.shape, dtype = f64, generator = gen))
                let lossAt (e: float) =
                    let moved = List.map2 (fun (d: Tensor) (p: Tensor) -> p.detach().Add(d.Mul(e)).requires_grad_(true)) dirs (Phi.tensors phi)
                    let phi' = Phi.ofTensors phi.Config moved
                    let l, _, _ = Imitation.metaGradient c.Unroll (TaskSpec.learned backend c.Task [ phi' ]) adam (Phi.tensors phi') tr
                    l.ToDouble()
                let h = 1e-5
                let numeric = (lossAt h - lossAt -h) / (2.0 * h)
                let analytic = List.map2 (fun (g: Tensor) (d: Tensor) -> g.mul(d).sum().ToDouble()) grads dirs |> List.sum
                Expect.floatClose { absolute = 1e-8; relative = 1e-4 } analytic numeric "dL/dφ along a direction")

        testCase "meta-training on imitation alone teaches m_φ Adam's steps" <| fun () ->
            scoped (fun () ->
                let reports = ResizeArray()
                let final = MetaTrain.run { cfg with MetaIterations = 120 } TaskData.none reports.Add (fun () -> false) (MetaTrain.init cfg)
                let losses = reports |> Seq.map (fun r -> r.MetaLoss) |> Array.ofSeq
                let first = losses[.. 19] |> Array.average
                let last = losses[losses.Length - 20 ..] |> Array.average
                Expect.isLessThan last (0.5 * first) (sprintf "the imitation loss falls: %.4g → %.4g" first last)
                TrainState.dispose final)

        testCase "a probability draws imitation per trajectory, reproducibly; runs resume bit for bit" <| fun () ->
            scoped (fun () ->
                let c = { cfg with Imitation = { cfg.Imitation with Probability = 0.5 }; MetaIterations = 24 }
                let draws = [ for i in 0L .. 399L -> Shard.imitating c 0 i ]
                let share = float (draws |> List.filter id |> List.length) / 400.0
                Expect.isTrue (abs (share - 0.5) < 0.08) (sprintf "about half: %.3f" share)
                Expect.equal [ for i in 0L .. 399L -> Shard.imitating c 0 i ] draws "the same draws"
                Expect.isFalse (Shard.imitating { c with Imitation = ImitationConfig.none } 0 3L) "none without a probability"
                let run n = MetaTrain.run { c with MetaIterations = n } TaskData.none ignore (fun () -> false) (MetaTrain.init c)
                let straight = run 24
                Expect.sequenceEqual (phiValues (run 24).Phis) (phiValues straight.Phis) "the same φ twice"
                // stop inside an imitation trajectory and resume from the checkpoint
                let imitated = [ 0L .. 5L ] |> List.find (Shard.imitating c 0)
                let n = int imitated * (c.Horizon / c.Unroll.Unroll) + 2
                let partial = run n
                Expect.isTrue (partial.Trajectory |> Option.exists Imitation.applies) "stopped inside an imitation trajectory"
                match Checkpoint.decode c TaskData.none (Checkpoint.encode c partial []) with
                | Error e -> failtest (CheckpointError.describe e)
                | Ok(resumed, _) ->
                    Expect.isTrue (resumed.Trajectory |> Option.exists Imitation.applies) "resumed as one"
                    let finished = MetaTrain.run c TaskData.none ignore (fun () -> false) resumed
                    Expect.sequenceEqual (phiValues finished.Phis) (phiValues straight.Phis) "resumed: the same φ"
                match Checkpoint.decode { c with Imitation = ImitationConfig.none } TaskData.none (Checkpoint.encode c partial []) with
                | Ok _ -> failtest "resumed without imitation"
                | Error e -> Expect.stringContains (CheckpointError.describe e) "imitation" "named")

        testCase "bad settings are refused, in a config and in a job spec" <| fun () ->
            for i, fragment in [ { Probability = 1.5; Lr = 0.01 }, "imitation probability"; { Probability = 0.5; Lr = 0.0 }, "imitation lr" ] do
                match MetaConfig.validate { cfg with Imitation = i } with
                | Ok _ -> failtestf "%A accepted" i
                | Error es -> Expect.exists es (fun e -> e.StartsWith fragment) (sprintf "%A" es)
            match MetaConfig.validate { cfg with Unroll = { cfg.Unroll with SecondOrder = true } } with
            | Ok _ -> failtest "second order accepted"
            | Error es -> Expect.exists es (fun e -> e.StartsWith "imitation is first order") "named"
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"imitation":{"probability":0.25,"lr":0.003}}""" with
            | Ok s -> Expect.equal s.Meta.Imitation { Probability = 0.25; Lr = 0.003 } "imitation"
            | Error es -> failtest (String.concat "; " es)
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"imitation":{"probability":2}}""" with
            | Ok _ -> failtest "probability 2 accepted"
            | Error es -> Expect.exists es (fun e -> e.Contains "imitation probability") "named"
    ]
