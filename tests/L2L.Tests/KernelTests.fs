#nowarn "9" // the exp test hands pinned arrays to the kernel

/// The fused coordinatewise LSTM kernel against the straightforward TorchSharp cell: the same g_t,
/// states and gradients (meta-gradient included) to float32 tolerance, on every register width and
/// tail length, any thread count.
module L2L.Tests.KernelTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Kernels
open L2L.Tests.Helpers

/// Max |a − b| relative to max |a| (1 when a is all zero).
let relDiff (a: Tensor) (b: Tensor) =
    let scale = max (a.abs().max().ToDouble()) 1e-30
    a.sub(b).abs().max().ToDouble() / scale

/// Runs f with the kernel's register width set to w (restored afterwards).
let withWidth (w: int) (f: unit -> 'T) =
    let saved = CoordinatewiseLstm.Width
    CoordinatewiseLstm.Width <- w
    try f () finally CoordinatewiseLstm.Width <- saved

let widths = [ 16; 8; 1 ]

/// A φ, a random state and gradient of n coordinates (float32), with requires_grad on φ and the state.
let problemOf (cfg: LstmConfig) (n: int64) (seed: int64) =
    let phi = phiOf cfg seed f32
    use gen = Seeds.generator seed 3UL 0L
    let hidden = int64 cfg.Hidden
    let rnd (scale: float) = torch.rand([| hidden; n |], generator = gen).Sub(0.5).Mul(scale).requires_grad_(true)
    let state = { H = [ for _ in 1 .. cfg.Layers -> rnd 1.6 ]; C = [ for _ in 1 .. cfg.Layers -> rnd 4.0 ]; Memory = []; Stats = []; Functions = 1 }
    let magnitudes = torch.rand([| n |], generator = gen).Mul(12.0).Sub(10.0)
    let grad = torch.randn([| n |], generator = gen).mul(magnitudes.Mul(log 10.0).exp())
    phi, state, grad

/// g, the new state, and the gradients of a fixed random functional of them w.r.t. φ and the old state.
let stepAndGradsOn (b: Backend) (phi: Phi) (state: LstmState) (grad: Tensor) =
    let g, s = Lstm.step b phi state grad
    use gen = Seeds.generator 11L 4UL 0L
    let weight (t: Tensor) = torch.randn(t.shape, generator = gen)
    let outputs = g :: LstmState.tensors s
    let objective = outputs |> List.map (fun t -> t.mul(weight t).sum()) |> List.reduce (fun a b -> a.Add(b))
    let wrt = Phi.tensors phi @ LstmState.tensors state
    let grads = torch.autograd.grad([| objective |], List.toArray wrt) |> List.ofSeq
    outputs, grads

type Sizes = Sizes of n: int * hidden: int * layers: int

type KernelArbs =
    static member Sizes() =
        FsCheck.FSharp.Gen.map3 (fun n h l -> Sizes(n, h, l))
            (FsCheck.FSharp.Gen.choose (1, 300)) (FsCheck.FSharp.Gen.choose (1, 24)) (FsCheck.FSharp.Gen.choose (1, 3))
        |> FsCheck.FSharp.Arb.fromGen

let kernelConfig = { propConfig with maxTest = 30; arbitrary = [ typeof<KernelArbs> ] }

/// The fused cells' outputs and gradients against the reference's, at every register width.
let expectFusedAsReference (phi: Phi) (state: LstmState) (grad: Tensor) (label: string) =
    let outR, gradsR = stepAndGradsOn { backend with Cell = Reference } phi state grad
    for w in widths do
        withWidth w (fun () ->
            let outF, gradsF = stepAndGradsOn { backend with Cell = Fused } phi state grad
            List.iteri2 (fun i (a: Tensor) (b: Tensor) ->
                Expect.isLessThan (a.sub(b).abs().max().ToDouble()) 2e-6 (sprintf "width %d, output %d (%s)" w i label)) outR outF
            List.iteri2 (fun i (a: Tensor) (b: Tensor) ->
                Expect.isLessThan (relDiff a b) 1e-4 (sprintf "width %d, gradient %d (%s)" w i label)) gradsR gradsF)

/// A GRU φ, a random state (h only) and gradient of n coordinates (float32), requiring grad.
let gruProblemOf (hidden: int) (layers: int) (n: int64) (seed: int64) =
    let cfg = LstmConfig.withArchitecture Architecture.Gru { LstmConfig.paper with Hidden = hidden; Layers = layers }
    let phi = phiOf cfg seed f32
    use gen = Seeds.generator seed 3UL 0L
    let state =
        { H = [ for _ in 1 .. layers -> torch.rand([| int64 hidden; n |], generator = gen).Sub(0.5).Mul(1.6).requires_grad_(true) ]
          C = []
          Memory = []
          Stats = []
          Functions = 1 }
    let magnitudes = torch.rand([| n |], generator = gen).Mul(12.0).Sub(10.0)
    let grad = torch.randn([| n |], generator = gen).mul(magnitudes.Mul(log 10.0).exp())
    phi, state, grad

[<Tests>]
let tests =
    // sequenced: the tests change the kernels' register width and worker team (process-wide)
    testSequenced <| testList "fused LSTM kernel" [
        testCase "every kernel body compiled fully optimised is compiled on its own, never inlined into a tiered caller" <| fun () ->
            // Inlined into a caller that tiered compilation recompiles (with profile-guided delegate
            // inlining, a lambda handing out chunks), a body marked AggressiveOptimization becomes part
            // of that caller's code, and what exceeds the inlining budget there is left as calls that
            // start unoptimised: the LSTM cell's forward ran at 25 ms instead of 1.7 on 15,910
            // coordinates that way. NoInlining keeps every such body a method of its own.
            let flags = Reflection.BindingFlags.Public ||| Reflection.BindingFlags.NonPublic ||| Reflection.BindingFlags.Static ||| Reflection.BindingFlags.Instance ||| Reflection.BindingFlags.DeclaredOnly
            let optimised =
                [ for t in typeof<CoordinatewiseLstm>.Assembly.GetTypes() do
                    for m in t.GetMethods flags do
                        let impl = m.MethodImplementationFlags
                        if impl.HasFlag Reflection.MethodImplAttributes.AggressiveOptimization then
                            t.Name + "." + m.Name, impl.HasFlag Reflection.MethodImplAttributes.NoInlining ]
            Expect.isGreaterThanOrEqual optimised.Length 20 "the kernels' bodies are found"
            let inlinable = optimised |> List.filter (snd >> not) |> List.map fst
            Expect.isEmpty inlinable "AggressiveOptimization without NoInlining"

        testCase "the kernel is available here, and float32 CPU tensors take it" <| fun () ->
            Expect.isTrue (LstmKernel.available ()) "THSTensor_data found"
            scoped (fun () ->
                let phi, state, grad = problemOf LstmConfig.paper 5L 1L
                Expect.isTrue (LstmKernel.supports (grad :: Phi.tensors phi @ LstmState.tensors state)) "float32 on the CPU"
                Expect.isFalse (LstmKernel.supports [ grad.to_type(f64) ]) "float64 is not")

        testPropertyWithConfig kernelConfig "g_t, h, c and all gradients equal the reference cell's, every register width" <| fun (Sizes(n, hidden, layers)) (seed: int) ->
            scoped (fun () ->
                let cfg = { LstmConfig.paper with Hidden = hidden; Layers = layers }
                let phi, state, grad = problemOf cfg (int64 n) (int64 seed)
                expectFusedAsReference phi state grad (sprintf "n=%d, H=%d, layers=%d" n hidden layers))

        testPropertyWithConfig kernelConfig "without autograd the whole step is one kernel pass with the reference's g_t and state (log-sign and identity preprocessing)" <| fun (Sizes(n, hidden, layers)) (seed: int) ->
            scoped (fun () ->
                for pre in [ LogSign 10.0; LogSign 3.0; Identity ] do
                    let cfg = { LstmConfig.paper with Hidden = hidden; Layers = layers; Preprocessing = pre }
                    let phi, state, grad = problemOf cfg (int64 n) (int64 seed)
                    use _ = torch.no_grad()
                    let gR, sR = Lstm.step { backend with Cell = Reference } phi state grad
                    for w in widths do
                        withWidth w (fun () ->
                            let gF, sF = Lstm.step { backend with Cell = Fused } phi state grad
                            List.iteri2 (fun i (a: Tensor) (b: Tensor) ->
                                Expect.isLessThan (a.sub(b).abs().max().ToDouble()) 2e-6 (sprintf "%A width %d output %d (n=%d, H=%d, layers=%d)" pre w i n hidden layers))
                                (gR :: LstmState.tensors sR) (gF :: LstmState.tensors sF)))

        testPropertyWithConfig kernelConfig "the GRU: g_t, h and all gradients equal the reference cell's, every register width" <| fun (Sizes(n, hidden, layers)) (seed: int) ->
            scoped (fun () ->
                let phi, state, grad = gruProblemOf hidden layers (int64 n) (int64 seed)
                expectFusedAsReference phi state grad (sprintf "n=%d, H=%d, layers=%d" n hidden layers))

        testCase "the GRU's tails, and its evaluation pass: n around the register and tile sizes, two threads" <| fun () ->
            scoped (fun () ->
                for n in [ 1L; 15L; 16L; 17L; 33L; 255L; 256L; 257L; 513L; 5000L ] do
                    let phi, state, grad = gruProblemOf 20 2 n 4L
                    let outR, gradsR = stepAndGradsOn { backend with Cell = Reference } phi state grad
                    for w in widths do
                        withWidth w (fun () ->
                            let outF, gradsF = stepAndGradsOn { backend with Cell = Fused; KernelThreads = 2 } phi state grad
                            List.iter2 (fun (a: Tensor) (b: Tensor) -> Expect.isLessThan (a.sub(b).abs().max().ToDouble()) 2e-6 (sprintf "n=%d width %d outputs" n w)) outR outF
                            List.iter2 (fun (a: Tensor) (b: Tensor) -> Expect.isLessThan (relDiff a b) 1e-4 (sprintf "n=%d width %d gradients" n w)) gradsR gradsF
                            use _ = torch.no_grad()
                            let g, s = Lstm.step { backend with Cell = Fused; KernelThreads = 2 } phi (LstmState.detach state) grad
                            List.iter2 (fun (a: Tensor) (b: Tensor) -> Expect.isLessThan (a.sub(b).abs().max().ToDouble()) 2e-6 (sprintf "n=%d width %d, no autograd" n w))
                                outR (g :: LstmState.tensors s)
                            // the kernel itself, called directly: the dispatch above cannot have hidden it
                            let l = phi.Layers.Head
                            let x = Preprocess.apply phi.Config.Preprocessing grad
                            let direct = LstmKernel.gruCell 2 l.Wih l.Whh l.B l.Bhn.Value x (state.H.Head.detach())
                            let reference = LstmReference.gruCell l x (state.H.Head.detach())
                            Expect.isLessThan (direct.sub(reference).abs().max().ToDouble()) 2e-6 (sprintf "n=%d width %d, LstmKernel.gruCell" n w)))

        testCase "tails: n around the register and tile sizes" <| fun () ->
            scoped (fun () ->
                for n in [ 15L; 16L; 17L; 31L; 32L; 33L; 255L; 256L; 257L; 511L; 513L ] do
                    let phi, state, grad = problemOf LstmConfig.paper n 2L
                    let outR, gradsR = stepAndGradsOn { backend with Cell = Reference } phi state grad
                    for w in widths do
                        withWidth w (fun () ->
                            let outF, gradsF = stepAndGradsOn { backend with Cell = Fused } phi state grad
                            List.iter2 (fun (a: Tensor) (b: Tensor) -> Expect.isLessThan (a.sub(b).abs().max().ToDouble()) 2e-6 (sprintf "n=%d width %d outputs" n w)) outR outF
                            List.iter2 (fun (a: Tensor) (b: Tensor) -> Expect.isLessThan (relDiff a b) 1e-4 (sprintf "n=%d width %d gradients" n w)) gradsR gradsF))

        testCase "the log-sign features' logarithm: within 3 float32 ulp of float64's over 16 decades, the same bits in every register width and tail" <| fun () ->
            scoped (fun () ->
                use _ = torch.no_grad()
                let n = 4099L
                use gen = Seeds.generator 13L 5UL 0L
                let magnitude = torch.rand([| n |], generator = gen, dtype = f64).Mul(16.0).Sub(10.0).Mul(log 10.0).exp()
                let grad = magnitude.mul(torch.randn([| n |], generator = gen, dtype = f64).sign()).to_type(f32)
                let phi = phiOf LstmConfig.paper 3L f32
                let state = LstmState.zeros phi 1 n
                let features (w: int) =
                    withWidth w (fun () ->
                        let _, _, _, x = LstmKernel.stepSaving 2 (PhiKernel.layers phi) phi.WOut phi.BOut 0.1 (Some 10.0) state.H state.C grad
                        x[0L].clone())
                let x16 = features 16
                for w in [ 8; 1 ] do
                    Expect.equal (toArray (features w)) (toArray x16) (sprintf "width %d: the same bits as width 16" w)
                // where |∇| ≥ e^{−p} the feature is log|∇|/p
                let a = grad.abs().to_type(f64)
                let taken = a.Ge(exp -10.0)
                let exact = a.log()
                let got = x16.to_type(f64).Mul(10.0)
                let err = got.sub(exact).abs().masked_select(taken)
                let bound = exact.abs().masked_select(taken).Mul(3.0 * 1.19e-7).Add(1e-7)
                Expect.isGreaterThan (taken.sum().ToInt64()) 2000L "most coordinates take the logarithm"
                Expect.isTrue (err.le(bound).all().ToBoolean()) (sprintf "max error %g" (err.max().ToDouble())))

        testCase "the exp's scaling by 2^k through the exponent field is the product by 2^k, bit for bit, on every float, one register at a time or two or four interleaved" <| fun () ->
            // the product's formula, scalar: MathF's FMA and round-half-even are the registers' lanes'
            let byProduct (a: float32) =
                let x = if Single.IsNaN a then a else min (max a ExpF.Lo) ExpF.Hi
                let k = MathF.Round(x * ExpF.Log2E)
                let r = MathF.FusedMultiplyAdd(k, -ExpF.Ln2Hi, x)
                let r = MathF.FusedMultiplyAdd(k, -ExpF.Ln2Lo, r)
                let p = MathF.FusedMultiplyAdd(ExpF.P0, r, ExpF.P1)
                let p = MathF.FusedMultiplyAdd(p, r, ExpF.P2)
                let p = MathF.FusedMultiplyAdd(p, r, ExpF.P3)
                let p = MathF.FusedMultiplyAdd(p, r, ExpF.P4)
                let p = MathF.FusedMultiplyAdd(p, r, ExpF.P5)
                let p = MathF.FusedMultiplyAdd(p, r * r, r + 1.0f)
                p * BitConverter.Int32BitsToSingle((int k + 127) <<< 23)
            // every 251st bit pattern (both signs, every exponent, NaNs and infinities among them), and
            // every float within 2^16 patterns of the clamps and of where k reaches −126 and 127
            let near (v: float32) = let b = BitConverter.SingleToInt32Bits v in [| b - 65536 .. b + 65536 |]
            let special =
                Array.concat
                    [ near ExpF.Lo; near ExpF.Hi; near -87.0f; near 87.68f; near -86.99f
                      [| 0; Int32.MinValue; BitConverter.SingleToInt32Bits Single.PositiveInfinity; BitConverter.SingleToInt32Bits Single.NegativeInfinity |] ]
            let chunks =
                seq {
                    yield special
                    for c in 0L .. (1L <<< 20) * 251L .. 0xFFFFFFFFL ->
                        [| for i in c .. 251L .. min 0xFFFFFFFFL (c + (1L <<< 20) * 251L - 1L) -> int (uint32 i) |] }
            let widths = [ 16; 8 ] |> List.filter (fun w -> w = 8 || Runtime.Intrinsics.Vector512.IsHardwareAccelerated)
            let mutable checkedCount = 0L
            for chunk in chunks do
                let xs = Array.append (chunk |> Array.map BitConverter.Int32BitsToSingle) (Array.zeroCreate ((64 - chunk.Length % 64) % 64))
                let expected = xs |> Array.map byProduct
                for w, chains in List.allPairs widths [ 1; 2; 4 ] do
                    let ys = Array.zeroCreate<float32> xs.Length
                    use px = fixed xs
                    use py = fixed ys
                    ExpF.Vector(px, py, int64 xs.Length, w, chains)
                    for i in 0 .. xs.Length - 1 do
                        let e, y = expected[i], ys[i]
                        if not (Single.IsNaN e && Single.IsNaN y) && BitConverter.SingleToInt32Bits e <> BitConverter.SingleToInt32Bits y then
                            failtestf "width %d, %d chains: e^%g (0x%08x) = %g, the product gives %g" w chains xs[i] (BitConverter.SingleToInt32Bits xs[i]) y e
                        if not (Single.IsNaN y || (Single.IsNormal y && y > 0.0f)) then
                            failtestf "width %d, %d chains: e^%g = %g, not a positive normal float" w chains xs[i] y
                checkedCount <- checkedCount + int64 chunk.Length
            Expect.isGreaterThan checkedCount 17_000_000L "floats checked"

        testCase "the thread count changes nothing elementwise and the weight gradients only by rounding" <| fun () ->
            scoped (fun () ->
                    let phi, state, grad = problemOf LstmConfig.paper 9000L 3L
                    let out1, grads1 = stepAndGradsOn { backend with KernelThreads = 1 } phi state grad
                    let out2, grads2 = stepAndGradsOn { backend with KernelThreads = 2 } phi state grad
                    List.iter2 (fun (a: Tensor) (b: Tensor) -> Expect.equal (toArray a) (toArray b) "outputs bit for bit") out1 out2
                    let nPhi = List.length (Phi.tensors phi)
                    List.iteri2 (fun i (a: Tensor) (b: Tensor) ->
                        if i < nPhi then Expect.isLessThan (relDiff a b) 1e-5 (sprintf "φ gradient %d" i)
                        else Expect.equal (toArray a) (toArray b) (sprintf "state gradient %d bit for bit" i)) grads1 grads2)

        testCase "the kernel's worker team and the thread pool give the same bits, also with callers on several threads at once" <| fun () ->
            let savedTeam = CoordinatewiseLstm.UseTeam
            try
                let run (n: int64) =
                    scoped (fun () ->
                        use _ = torch.no_grad()
                        let phi, state, grad = problemOf LstmConfig.paper n (n % 7L)
                        let g, s = Lstm.step { backend with Cell = Fused; KernelThreads = 2 } phi (LstmState.detach state) grad
                        g :: LstmState.tensors s |> List.map toArray)
                let sizes = [ 5000L; 9000L; 4097L; 20000L ]
                CoordinatewiseLstm.UseTeam <- false
                let pool = sizes |> List.map run
                CoordinatewiseLstm.UseTeam <- true
                Expect.equal (sizes |> List.map run) pool "one caller: the team's results are the thread pool's"
                for _ in 1..3 do
                    let concurrent =
                        sizes |> List.map (fun n -> Threading.Tasks.Task.Run(fun () -> run n)) |> List.map (fun t -> t.Result)
                    Expect.equal concurrent pool "four callers at once"
            finally
                CoordinatewiseLstm.UseTeam <- savedTeam

        testCase "the meta-gradient of a truncation equals the reference path's" <| fun () ->
            scoped (fun () ->
                let cfg = { smallMeta with Lstm = LstmConfig.paper; Task = Quadratic 10; BatchFunctions = 8; Unroll = { smallMeta.Unroll with Unroll = 10 } }
                let phi = phiOf cfg.Lstm 4L f32
                let metaGrad (impl: LstmImpl) =
                    let b = { backend with Cell = impl }
                    let problem = TaskSpec.trainProblem TaskData.none cfg.Task 7L 0L cfg.BatchFunctions cfg.Horizon torch.CPU f32
                    let tr = MetaLoss.start (Learned.optimizer b phi) problem 0L
                    let loss, _ = MetaLoss.unroll cfg.Unroll (Learned.optimizer b phi) tr
                    loss.ToDouble(), torch.autograd.grad([| loss |], List.toArray (Phi.tensors phi)) |> List.ofSeq
                let lossR, gr = metaGrad Reference
                let lossF, gf = metaGrad Fused
                Expect.floatClose { absolute = 0.0; relative = 1e-5 } lossF lossR "L(φ)"
                List.iteri2 (fun i a b -> Expect.isLessThan (relDiff a b) 1e-3 (sprintf "dL/dφ tensor %d" i)) gr gf)

    ]
