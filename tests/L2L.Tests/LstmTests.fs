/// m_φ: coordinatewise, any n, and the textbook LSTM cell (paper §2.1, §3).
module L2L.Tests.LstmTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let cfg = { LstmConfig.paper with Hidden = 6 }

/// Runs k steps of m_φ on the gradient sequence `grads` (each [n]); returns every g_t.
let runSteps (phi: Phi) (grads: float[] list) =
    let n = int64 grads.Head.Length
    let mutable state = LstmState.zeros phi 1 n
    [ for g in grads ->
          let out, s = Lstm.step backend phi state (tensorOf g f64)
          state <- s
          toArray out ]

/// A scalar LSTM for one coordinate, written from the textbook equations over plain arrays.
let referenceStep (phi: Phi) (hs: float[][]) (cs: float[][]) (x0: float[]) =
    let sigmoid x = 1.0 / (1.0 + exp -x)
    let mutable x = x0
    let H = phi.Config.Hidden
    let hs' = Array.copy hs
    let cs' = Array.copy cs
    phi.Layers
    |> List.iteri (fun k w ->
        let wih = toArray w.Wih
        let whh = toArray w.Whh
        let b = toArray w.B
        let pre r = b[r] + (Array.init x.Length (fun j -> wih[r * x.Length + j] * x[j]) |> Array.sum) + (Array.init H (fun j -> whh[r * H + j] * hs[k][j]) |> Array.sum)
        let gate q = Array.init H (fun u -> pre (q * H + u))
        let i = gate 0 |> Array.map sigmoid
        let f = gate 1 |> Array.map sigmoid
        let g = gate 2 |> Array.map tanh
        let o = gate 3 |> Array.map sigmoid
        let c = Array.init H (fun u -> f[u] * cs[k][u] + i[u] * g[u])
        let h = Array.init H (fun u -> o[u] * tanh c[u])
        hs'[k] <- h
        cs'[k] <- c
        x <- h)
    let wout = toArray phi.WOut
    let bout = (toArray phi.BOut)[0]
    let g = (bout + (Array.init H (fun j -> wout[j] * x[j]) |> Array.sum)) * phi.Config.OutScale
    g, hs', cs'

[<Tests>]
let tests =
    testList "m_φ" [
        testCase "matches a scalar textbook LSTM, coordinate by coordinate, over several steps" <| fun () ->
            scoped (fun () ->
                let phi = phiOf cfg 3L f64
                let grads = [ [| 0.3; -2e-5; 0.0 |]; [| -1.5; 4e-3; 1e-7 |]; [| 0.02; -0.02; 7.0 |] ]
                let got = runSteps phi grads
                for i in 0..2 do
                    let mutable hs = Array.init cfg.Layers (fun _ -> Array.zeroCreate cfg.Hidden)
                    let mutable cs = Array.init cfg.Layers (fun _ -> Array.zeroCreate cfg.Hidden)
                    grads |> List.iteri (fun t g ->
                        let x = toArray (Preprocess.apply cfg.Preprocessing (tensorOf [| g[i] |] f64))
                        let out, hs', cs' = referenceStep phi hs cs x
                        hs <- hs'
                        cs <- cs'
                        Expect.floatClose Accuracy.high (got[t][i]) out (sprintf "g at step %d, coordinate %d" t i)))

        testPropertyWithConfig propConfig "permuting ∇ (and the state) permutes g" <| fun (Grads xs) (seed: int) ->
            scoped (fun () ->
                let phi = phiOf cfg (int64 seed) f64
                let n = xs.Length
                let rng = Random(seed)
                let perm = Array.init n id |> Array.sortBy (fun _ -> rng.Next())
                let second = xs |> Array.map (fun x -> -0.5 * x + 1e-3)
                let permute (a: float[]) = Array.init n (fun i -> a[perm[i]])
                let g = runSteps phi [ xs; second ]
                let gp = runSteps phi [ permute xs; permute second ]
                for t in 0..1 do
                    Expect.isLessThan (maxAbsDiff (permute g[t]) gp[t]) 1e-12 (sprintf "step %d" t))

        testPropertyWithConfig propConfig "one coordinate's state and gradient never affect another's output" <| fun (Grads xs) (seed: int) ->
            scoped (fun () ->
                let phi = phiOf cfg (int64 seed) f64
                let n = xs.Length
                let j = abs seed % n
                let changed = Array.copy xs
                changed[j] <- (if xs[j] = 0.0 then 1.0 else -3.0 * xs[j])
                let a = runSteps phi [ xs; xs ]
                let b = runSteps phi [ changed; xs ]
                for i in 0 .. n - 1 do
                    if i <> j then
                        Expect.equal (b[1][i]) (a[1][i]) (sprintf "coordinate %d unaffected by coordinate %d" i j))

        testList "any n works" [
            for n in [ 1; 2; 1000; 100000 ] ->
                testCase (sprintf "n = %d" n) <| fun () ->
                    scoped (fun () ->
                        let phi = phiOf LstmConfig.paper 1L f32
                        use gen = Seeds.generator 5L 9UL 0L
                        let g = torch.randn([| int64 n |], generator = gen)
                        let out, s = Lstm.step backend phi (LstmState.zeros phi 1 (int64 n)) g
                        Expect.equal out.shape [| int64 n |] "g has one entry per coordinate"
                        Expect.equal s.H.Head.shape [| 20L; int64 n |] "one state column per coordinate"
                        Expect.isTrue (Tensors.isFinite out) "finite")
        ]

        testCase "the forget-gate bias starts at its U(−1/√H, 1/√H) value plus ForgetBias" <| fun () ->
            scoped (fun () ->
                let phi = phiOf { cfg with ForgetBias = 5.0 } 2L f64
                let b = toArray phi.Layers.Head.B
                let H = cfg.Hidden
                let bound = 1.0 / sqrt (float H)
                for u in 0 .. 4 * H - 1 do
                    let lo, hi = if u >= H && u < 2 * H then 5.0 - bound, 5.0 + bound else -bound, bound
                    Expect.isTrue (b[u] >= lo && b[u] <= hi) (sprintf "bias %d = %g in [%g, %g]" u b[u] lo hi)
                Expect.equal (toArray phi.BOut) [| 0.0 |] "output bias starts at 0")
    ]
