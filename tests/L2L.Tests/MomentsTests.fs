/// The Adam-normalised moments as m_φ's input (RNNprop): the features against a plain float64
/// reference, their invariance to the gradient's scale, the state they keep, and m_φ on them.
module L2L.Tests.MomentsTests

open System
open Expecto
open FsCheck.FSharp
open TorchSharp
open L2L
open L2L.Tests.Helpers

let pre = NormalizedMoments([ 0.5; 0.9; 0.99 ], 0.999)

/// The features of a gradient sequence, step by step, in plain float64 arithmetic.
let reference (betas: float list) (beta2: float) (grads: float[][]) : float[][][] =
    let n = grads[0].Length
    let m = Array.init betas.Length (fun _ -> Array.zeroCreate<float> n)
    let v = Array.zeroCreate<float> n
    [| for t in 1 .. grads.Length ->
           let g = grads[t - 1]
           for i in 0 .. n - 1 do
               for k, b in List.indexed betas do
                   m[k][i] <- b * m[k][i] + (1.0 - b) * g[i]
               v[i] <- beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
           let rms i = sqrt (v[i] / (1.0 - beta2 ** float t)) + Preprocess.epsilon
           Array.append
               [| for k, b in List.indexed betas -> Array.init n (fun i -> m[k][i] / (1.0 - b ** float t) / rms i) |]
               [| Array.init n (fun i -> g[i] / rms i) |] |]

let run (p: Preprocessing) (grads: float[][]) (dtype: torch.ScalarType) =
    let mutable state = Preprocess.zeros p (int64 grads[0].Length) dtype torch.CPU
    [| for g in grads ->
           let x, s = Preprocess.step p state (tensorOf g dtype)
           state <- s
           [| for r in 0L .. x.shape[0] - 1L -> toArray x[r] |] |]

let sequences =
    Gen.choose (1, 6) |> Gen.bind (fun n -> Gen.choose (1, 12) |> Gen.bind (fun steps -> Gen.arrayOfLength steps (Gen.arrayOfLength n gradientGen)))

[<Tests>]
let tests =
    testList "moments" [
        testProperty "the features are the normalised, bias-corrected averages, step by step" <|
            Prop.forAll (Arb.fromGen sequences) (fun grads ->
                scoped (fun () ->
                    // gradients within float64's comfortable range (the generator reaches 1e±30)
                    let grads = grads |> Array.map (Array.map (fun g -> if abs g > 1e100 || (g <> 0.0 && abs g < 1e-100) then 1.0 else g))
                    let ours = run pre grads f64
                    let theirs = reference [ 0.5; 0.9; 0.99 ] 0.999 grads
                    for t in 0 .. grads.Length - 1 do
                        Expect.equal ours[t].Length 4 "three time scales and ∇"
                        for r in 0 .. 3 do
                            for i in 0 .. grads[0].Length - 1 do
                                let a, b = ours.[t].[r].[i], theirs.[t].[r].[i]
                                Expect.isTrue (abs (a - b) <= 1e-9 * (1.0 + abs b)) (sprintf "step %d, feature %d, coordinate %d: %g against %g" (t + 1) r i a b)))

        testProperty "scaling the gradients leaves the features as they were (float64, gradients away from ε)" <|
            Prop.forAll (Arb.fromGen (Gen.zip sequences (Gen.choose (-3, 3)))) (fun (grads, e) ->
                scoped (fun () ->
                    let grads = grads |> Array.map (Array.map (fun g -> if g = 0.0 then 0.0 else float (sign g) * (1.0 + abs (log10 (abs g)) % 3.0)))
                    let c = 10.0 ** float e
                    let a = run pre grads f64
                    let b = run pre (grads |> Array.map (Array.map ((*) c))) f64
                    for t in 0 .. grads.Length - 1 do
                        for r in 0 .. 3 do
                            // ε = 1e-8 against gradients of 1e-3 and more: 1e-5 at most
                            Expect.isLessThan (maxAbsDiff (a[t]).[r] (b[t]).[r]) 1e-4 (sprintf "×%g: step %d, feature %d" c (t + 1) r)))

        testCase "the first step's features are the gradient's sign (every average is ∇ itself)" <| fun () ->
            scoped (fun () ->
                let x = run pre [| [| 3.0; -0.002; 0.0; 7e5 |] |] f32
                for r in 0 .. 3 do
                    Expect.sequenceEqual (x[0][r] |> Array.map (fun v -> Math.Round(v, 4))) [| 1.0; -1.0; 0.0; 1.0 |] (sprintf "feature %d" r))

        testCase "m_φ on the moments: fused cells agree with the reference, the state carries the averages" <| fun () ->
            scoped (fun () ->
                let cfg = { tinyLstm with Preprocessing = pre }
                let phi = phiOf cfg 3L f32
                use gen = Seeds.generator 5L 0UL 0L
                let grads = [ for _ in 1..6 -> torch.randn([| 40L |], generator = gen).Mul(0.01) ]
                let steps (b: Backend) =
                    let mutable s = LstmState.zeros phi 1 40L
                    [ for g in grads ->
                          let out, s' = Lstm.step b phi s g
                          s <- s'
                          toArray out, s' ]
                let fused = steps backend
                let slow = steps Backend.reference
                for (a, _), (b, _) in List.zip fused slow do
                    Expect.isLessThan (maxAbsDiff a b) 1e-5 "the same g"
                let _, last = List.last fused
                Expect.equal last.Stats.Length 2 "averages and corrections"
                Expect.equal last.Stats[0].shape [| 4L; 40L |] "[β count + 1; n]"
                let corr = toArray last.Stats[1]
                let expected = [| for b in [ 0.5; 0.9; 0.99; 0.999 ] -> 1.0 - b ** 6.0 |]
                for r in 0..3 do
                    Expect.floatClose { absolute = 1e-6; relative = 1e-5 } corr.[r * 40] expected.[r] (sprintf "correction of row %d after 6 steps" r)
                let named = OptState.named "opt" { Step = 6; Memory = Recurrent last } |> List.map fst
                Expect.contains named "opt.lstm.stat.0" "named for checkpoints"
                Expect.equal (LstmState.ofTensors cfg 1 (LstmState.tensors last)).Stats.Length 2 "rebuilt from its tensors")

        testCase "the closed-form meta-gradient on the moments is autograd's, and carries the averages" <| fun () ->
            scoped (fun () ->
                let cfg = { smallMeta with Lstm = { smallMeta.Lstm with Preprocessing = pre } }
                let s0 = MetaTrain.init cfg
                let start () = MetaLoss.start (TaskSpec.learned cfg.Backend cfg.Task s0.Phis) (Shard.problem cfg TaskData.none 0 0L) 0L
                let tr = start ()
                Expect.isTrue (MetaGradient.usesClosedForm cfg.Backend cfg.Unroll s0.Phis tr) "the closed form applies"
                // two truncations in a row, so the second starts from carried averages
                let l1, g1, c1 = FirstOrder.metaGradient 1 cfg.Unroll s0.Phis.Head tr
                let l2, g2, c2 = FirstOrder.metaGradient 1 cfg.Unroll s0.Phis.Head c1
                let a1, ga1, d1 = MetaGradient.autograd backend cfg.Unroll cfg.Task s0.Phis (start ())
                let a2, ga2, d2 = MetaGradient.autograd backend cfg.Unroll cfg.Task s0.Phis d1
                for (l: Tensor), (a: Tensor) in [ l1, a1; l2, a2 ] do
                    Expect.floatClose Accuracy.medium (l.ToDouble()) (a.ToDouble()) "L(φ)"
                for gs, gas in [ g1, ga1; g2, ga2 ] do
                    for (g: Tensor), (ga: Tensor) in List.zip gs gas do
                        let scale = 1e-3 + (ga.abs().max().ToDouble())
                        Expect.isLessThan (maxAbsDiff (toArray g) (toArray ga) / scale) 1e-4 "dL/dφ"
                let stats (t: Trajectory) = (OptState.recurrent t.Opt).Stats |> List.map toArray
                for a, b in List.zip (stats c2) (stats d2) do
                    Expect.isLessThan (maxAbsDiff a b) 1e-5 "the carried averages"
                Expect.isGreaterThan (abs (List.head (stats c2)).[0]) 0.0 "the averages moved")

        testCase "meta-training on the moments: reproducible, resumable" <| fun () ->
            scoped (fun () ->
                let cfg = { smallMeta with Lstm = { smallMeta.Lstm with Preprocessing = pre }; MetaIterations = 10 }
                let s0 = MetaTrain.init cfg
                let run n = MetaTrain.run { cfg with MetaIterations = n } TaskData.none ignore (fun () -> false) (MetaTrain.init cfg)
                let a = run 10
                let b = run 10
                Expect.sequenceEqual (phiValues a.Phis) (phiValues b.Phis) "the same φ twice"
                Expect.isTrue (phiValues a.Phis |> Array.forall Double.IsFinite) "finite"
                let partial = run 7
                match Checkpoint.decode cfg TaskData.none (Checkpoint.encode cfg partial []) with
                | Error e -> failtest (CheckpointError.describe e)
                | Ok(resumed, _) ->
                    let finished = MetaTrain.run cfg TaskData.none ignore (fun () -> false) resumed
                    Expect.sequenceEqual (phiValues finished.Phis) (phiValues a.Phis) "resumed mid-trajectory: the same φ"
                    TrainState.dispose finished
                match Checkpoint.decode { cfg with Lstm = { cfg.Lstm with Preprocessing = NormalizedMoments([ 0.5 ], 0.999) } } TaskData.none (Checkpoint.encode cfg partial []) with
                | Ok _ -> failtest "resumed with other moments"
                | Error e -> Expect.stringContains (CheckpointError.describe e) "optimizer" "named"
                for s in [ s0; a; b; partial ] do
                    TrainState.dispose s)

        testCase "bad moments are refused" <| fun () ->
            for p, fragment in [ NormalizedMoments([], 0.9), "from 1 to 8"; NormalizedMoments([ 1.0 ], 0.9), "β must be in [0, 1)"; NormalizedMoments([ 0.9 ], -0.1), "β2 must be in [0, 1)" ] do
                match LstmConfig.validate { LstmConfig.paper with Preprocessing = p } with
                | Ok _ -> failtestf "%A accepted" p
                | Error es -> Expect.exists es (fun e -> e.Contains fragment) (sprintf "%A" es)
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"optimizer":{"preprocessing":"moments","betas":[0.9,0.99],"beta2":0.99}}""" with
            | Ok s -> Expect.equal s.Meta.Lstm.Preprocessing (NormalizedMoments([ 0.9; 0.99 ], 0.99)) "moments from a job spec"
            | Error es -> failtest (String.concat "; " es)
    ]
