/// The optimizer shape: baselines against their textbook formulas, the θ update, m_φ as an optimizer.
module L2L.Tests.OptimizerTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

/// Textbook update rules over plain arrays, one coordinate at a time: (state, ∇, t) -> (g, state).
let textbook (name: string) (lr: float) : (float[] -> float -> int -> float * float[]) * float[] =
    match name with
    | "sgd" -> (fun s g _ -> -lr * g, s), [||]
    | "momentum" -> (fun s g _ -> let v = 0.9 * s[0] + g in -lr * v, [| v |]), [| 0.0 |]
    | "nag" -> (fun s g _ -> let v = 0.9 * s[0] + g in -lr * (g + 0.9 * v), [| v |]), [| 0.0 |]
    | "rmsprop" -> (fun s g _ -> let r = 0.99 * s[0] + 0.01 * g * g in -lr * g / (sqrt r + 1e-8), [| r |]), [| 0.0 |]
    | "adam" ->
        (fun s g t ->
            let m = 0.9 * s[0] + 0.1 * g
            let v = 0.999 * s[1] + 0.001 * g * g
            let mh = m / (1.0 - 0.9 ** float t)
            let vh = v / (1.0 - 0.999 ** float t)
            -lr * mh / (sqrt vh + 1e-8), [| m; v |]), [| 0.0; 0.0 |]
    | _ -> failwith name

[<Tests>]
let tests =
    testList "optimizers" ([
        for name in Baselines.names ->
            testPropertyWithConfig propConfig (sprintf "%s equals its textbook formula over 6 steps" name) <| fun (Grads xs) (seed: int) ->
                scoped (fun () ->
                    let lr = 10.0 ** (float (abs seed % 60) / 10.0 - 5.0)
                    let opt = Baselines.byName name lr
                    let rng = Random(seed)
                    let steps = [ for k in 0..5 -> xs |> Array.map (fun x -> x * (0.5 + rng.NextDouble()) * (if k % 3 = 2 then -1.0 else 1.0)) ]
                    let theta0 = tensorOf (Array.zeroCreate xs.Length) f64
                    let mutable state = opt.Init 1 theta0
                    let rule, s0 = textbook name lr
                    let mutable ref = Array.init xs.Length (fun _ -> Array.copy s0)
                    steps |> List.iteri (fun k g ->
                        let struct (d, s') = opt.Update state (tensorOf g f64)
                        state <- s'
                        let got = toArray d
                        for i in 0 .. xs.Length - 1 do
                            let e, r = rule ref[i] g[i] (k + 1)
                            ref[i] <- r
                            let tol = 1e-12 * max 1.0 (abs e)
                            Expect.isTrue (abs (got[i] - e) <= tol) (sprintf "step %d coordinate %d: %g vs %g" (k + 1) i got[i] e)))
    ] @ [

        testPropertyWithConfig propConfig "θ_{t+1} − θ_t = g_t" <| fun (Grads xs) ->
            scoped (fun () ->
                let theta = tensorOf (xs |> Array.map (fun x -> x * 0.37 + 1.0)) f64
                let g = tensorOf (xs |> Array.map (fun x -> -x)) f64
                let next = Update.apply theta g
                Expect.sequenceEqual (toArray (next.sub(theta))) (toArray (theta.Add(g).sub(theta))) "difference is g"
                Expect.isLessThan (maxAbsDiff (toArray (next.sub(theta))) (toArray g)) (1e-12 * (1.0 + (xs |> Array.map abs |> Array.max))) "≈ g")

        testPropertyWithConfig propConfig "zero output weights and bias ⇒ g = 0 ⇒ θ unchanged over an evaluation run" <| fun (seed: int) ->
            scoped (fun () ->
                let phi = phiOf tinyLstm (int64 seed) f64
                phi.WOut.detach().zero_() |> ignore
                phi.BOut.detach().zero_() |> ignore
                let q = Quadratic.portable (uint64 (abs seed)) 3 4 torch.CPU f64
                let p = Quadratic.problem q
                let run = Evaluate.run backend (Learned.optimizer backend phi) [ p ] 5
                for t in 1..5 do
                    Expect.sequenceEqual run.Losses[t] run.Losses[0] (sprintf "loss unchanged at step %d" t))

        testCase "the learned optimizer carries one state column per coordinate" <| fun () ->
            scoped (fun () ->
                let phi = phiOf tinyLstm 1L f64
                let opt = Learned.optimizer backend phi
                let s = opt.Init 1 (torch.zeros(7L, dtype = f64))
                Expect.equal (OptState.tensors s).Length (2 * tinyLstm.Layers) "h and c per layer"
                for t in s |> OptState.tensors do
                    Expect.equal t.shape [| int64 tinyLstm.Hidden; 7L |] "[H; n]")

        testPropertyWithConfig propConfig "grouped LSTMs: each φ runs on its own block of θ, as if alone" <| fun (Grads xs) (seed: int) ->
            scoped (fun () ->
                let n = xs.Length
                let split = 1 + abs seed % (max 1 (n - 1))
                if n >= 2 then
                    let a = phiOf tinyLstm (int64 seed) f64
                    let b = phiOf tinyLstm (int64 seed + 1L) f64
                    let grouped = Learned.grouped backend [ "first", split; "second", n - split ] [ a; b ]
                    let alone (phi: Phi) = Learned.optimizer backend phi
                    let theta = torch.zeros(int64 n, dtype = f64)
                    let mutable s = grouped.Init 1 theta
                    let mutable sa = (alone a).Init 1 (theta.narrow(0L, 0L, int64 split))
                    let mutable sb = (alone b).Init 1 (theta.narrow(0L, int64 split, int64 (n - split)))
                    for k in 1..3 do
                        let grad = tensorOf (xs |> Array.map (fun x -> x * float k)) f64
                        let struct (g, s') = grouped.Update s grad
                        let struct (ga, sa') = (alone a).Update sa (grad.narrow(0L, 0L, int64 split))
                        let struct (gb, sb') = (alone b).Update sb (grad.narrow(0L, int64 split, int64 (n - split)))
                        Expect.sequenceEqual (toArray g) (Array.append (toArray ga) (toArray gb)) (sprintf "g at step %d" k)
                        s <- s'
                        sa <- sa'
                        sb <- sb'
                    Expect.equal (OptState.tensors s).Length (4 * tinyLstm.Layers) "h and c per layer, per group")

        testCase "grouped LSTMs: the meta-gradient reaches both φ, and a θ of the wrong size is refused" <| fun () ->
            scoped (fun () ->
                let a = phiOf tinyLstm 3L f64
                let b = phiOf tinyLstm 4L f64
                let grouped = Learned.grouped backend [ "first", 3; "second", 4 ] [ a; b ]
                let q = Quadratic.problem (Quadratic.portable 5UL 7 1 torch.CPU f64)
                let tr = MetaLoss.start grouped q 0L
                let loss, _ = MetaLoss.unroll { Unroll = 3; Weights = Uniform; SecondOrder = false; LogLoss = false } grouped tr
                let grads = torch.autograd.grad([| loss |], List.toArray (Phis.tensors [ a; b ]))
                let norm (ts: Tensor seq) = ts |> Seq.sumBy (fun t -> t.norm().ToDouble())
                Expect.isGreaterThan (norm (Seq.take (Phi.tensors a).Length grads)) 0.0 "the first φ gets a meta-gradient"
                Expect.isGreaterThan (norm (Seq.skip (Phi.tensors a).Length grads)) 0.0 "the second φ gets a meta-gradient"
                Expect.throwsT<ArgumentException> (fun () -> grouped.Init 1 (torch.zeros(8L, dtype = f64)) |> ignore) "8 coordinates for groups of 3 + 4"
                Expect.throwsT<ArgumentException> (fun () -> Learned.grouped backend [ "only", 7 ] [ a; b ] |> ignore) "one group, two φ")
    ])
