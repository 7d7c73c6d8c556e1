/// m_φ's architectures (lstm, gru, lstm-gac, ntm-bfgs): each cell against a plain definition, permutation
/// equivariance, functions kept apart, meta-gradients against finite differences, and the choice
/// carried by every saved form.
module L2L.Tests.ArchitectureTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let configOf (a: Architecture) (hidden: int) =
    LstmConfig.withArchitecture a { LstmConfig.paper with Hidden = hidden }

/// Runs m_φ for a few steps on the given gradients (each [n]); every g_t and the last state's tensors.
let run (b: Backend) (phi: Phi) (functions: int) (grads: Tensor list) =
    let mutable state = LstmState.zeros phi functions grads.Head.shape[0]
    let outs =
        [ for g in grads ->
              let out, s = Lstm.step b phi state g
              state <- s
              toArray out ]
    outs, LstmState.tensors state |> List.map toArray

let randomGrads (gen: torch.Generator) (n: int64) (steps: int) (dtype: torch.ScalarType) =
    [ for _ in 1 .. steps -> torch.randn([| n |], generator = gen).Mul(0.5).to_type(dtype) ]

/// A permutation of n coordinates that keeps each of `functions` equal blocks in place.
let blockPermutation (gen: torch.Generator) (n: int) (functions: int) =
    let per = n / functions
    [| for b in 0 .. functions - 1 do
           let p = torch.randperm(int64 per, generator = gen) |> toArray
           yield! p |> Array.map (fun i -> b * per + int i) |]

[<Tests>]
let tests =
    testList "architectures" [
        testCase "names parse back; unknown names are refused with the list of known ones" <| fun () ->
            for a in Architecture.all do
                Expect.equal (Architecture.parse (Architecture.name a)) (Ok a) (Architecture.name a)
            match Architecture.parse "transformer" with
            | Ok _ -> failtest "accepted"
            | Error e -> Expect.stringContains e "lstm, gru, lstm-gac, ntm-bfgs" "names the choices"

        testCase "configurations are validated: averaging cells only for lstm-gac, at most hidden" <| fun () ->
            let gac = configOf Architecture.LstmGac 8
            Expect.equal gac.Averaged 2 "a quarter of the cells by default"
            Expect.isOk (LstmConfig.validate gac) "default lstm-gac"
            Expect.isError (LstmConfig.validate { gac with Averaged = 9 }) "more averaging cells than cells"
            Expect.isError (LstmConfig.validate { gac with Averaged = 0 }) "lstm-gac without averaging cells"
            Expect.isError (LstmConfig.validate { (configOf Architecture.Gru 8) with Averaged = 2 }) "averaging cells on a GRU"
            let ntm = configOf Architecture.NtmBfgs 20
            Expect.equal (ntm.Averaged, ntm.Reads, ntm.Writes, ntm.MemorySteps) (5, 1, 3, 100) "ntm-bfgs's defaults"
            Expect.isOk (LstmConfig.validate ntm) "default ntm-bfgs"
            Expect.isError (LstmConfig.validate { ntm with Writes = 0 }) "no write head"
            Expect.isError (LstmConfig.validate { ntm with MemorySteps = 0 }) "no memory"
            Expect.isError (LstmConfig.validate { (configOf Architecture.LstmGac 8) with Reads = 1 }) "read heads without a memory"

        testCase "the GRU cell is PyTorch's GRUCell (weights copied in; float64)" <| fun () ->
            scoped (fun () ->
                let hidden, inputs, n = 5, 3, 7
                use gen = Seeds.generator 11L 0UL 0L
                let phi = phiOf { (configOf Architecture.Gru hidden) with Layers = 1; Preprocessing = Identity } 2L f64
                let w = { phi.Layers.Head with Wih = torch.randn([| 15L; int64 inputs |], dtype = f64, generator = gen) }
                let x = torch.randn([| int64 inputs; int64 n |], dtype = f64, generator = gen)
                let h = torch.randn([| int64 hidden; int64 n |], dtype = f64, generator = gen)
                let ours = LstmReference.gruCell w x h
                use cell = torch.nn.GRUCell(int64 inputs, int64 hidden, dtype = f64)
                (
                    use _ = torch.no_grad()
                    cell.weight_ih.copy_(w.Wih) |> ignore
                    cell.weight_hh.copy_(w.Whh) |> ignore
                    // ours: b holds b_ih + b_hh for r and z, b_ih for n; b_hn apart
                    cell.bias_ih.copy_(w.B.view(-1L)) |> ignore
                    cell.bias_hh.zero_() |> ignore
                    cell.bias_hh.narrow(0L, 2L * int64 hidden, int64 hidden).copy_(w.Bhn.Value.view(-1L)) |> ignore
                )
                let theirs = cell.forward(x.t(), h.t()).t()
                Expect.isLessThan (maxAbsDiff (toArray ours) (toArray theirs)) 1e-12 "h'")

        testCase "global averaging: the first cells take their function's mean, the others are untouched (a plain loop)" <| fun () ->
            scoped (fun () ->
                use gen = Seeds.generator 12L 0UL 0L
                let hidden, functions, per, cells = 6, 3, 4, 2
                let n = functions * per
                let h = torch.randn([| int64 hidden; int64 n |], dtype = f64, generator = gen)
                let got = GlobalAverage.apply cells functions h |> toArray
                let v = toArray h
                for u in 0 .. hidden - 1 do
                    for j in 0 .. n - 1 do
                        let expected =
                            if u < cells then
                                let b = j / per
                                ([ for k in b * per .. b * per + per - 1 -> v[u * n + k] ] |> List.sum) / float per
                            else v[u * n + j]
                        Expect.floatClose Accuracy.high got[u * n + j] expected (sprintf "cell %d, coordinate %d" u j))

        testCase "lstm-gac is the LSTM with each layer's first cells averaged (the LSTM's cell and a plain average)" <| fun () ->
            scoped (fun () ->
                use gen = Seeds.generator 13L 0UL 0L
                let cfg = { (configOf Architecture.LstmGac 6) with Averaged = 2 }
                let phi = phiOf cfg 3L f64
                let n, functions = 8L, 2
                let state = LstmState.zeros phi functions n
                let grad = torch.randn([| n |], dtype = f64, generator = gen)
                let g, s = LstmReference.step phi state grad
                // by hand: layer by layer with the LSTM cell, then the average of cells 0 and 1 per function
                let mutable input = Preprocess.apply cfg.Preprocessing grad
                let hs = ResizeArray()
                for w, (h, c) in List.zip phi.Layers (List.zip state.H state.C) do
                    let h', _ = LstmReference.cell w input h c
                    let v = toArray h'
                    let per = int n / functions
                    let averaged =
                        Array.init v.Length (fun i ->
                            let u, j = i / int n, i % int n
                            if u < 2 then
                                let b = j / per
                                ([ for k in b * per .. b * per + per - 1 -> v[u * int n + k] ] |> List.sum) / float per
                            else v[i])
                    hs.Add averaged
                    input <- torch.tensor(averaged, dtype = f64).view(6L, n)
                let expectedG = torch.addmm(phi.BOut, phi.WOut, input, 1.0f, 1.0f).Mul(cfg.OutScale).view(-1L) |> toArray
                Expect.isLessThan (maxAbsDiff (toArray g) expectedG) 1e-12 "g"
                List.iteri (fun k (h: Tensor) -> Expect.isLessThan (maxAbsDiff (toArray h) hs[k]) 1e-12 (sprintf "h of layer %d" k)) s.H)

        testCase "the memory's read is the dense matrix's product, per function (a plain loop); a write drops the oldest step" <| fun () ->
            scoped (fun () ->
                use gen = Seeds.generator 17L 0UL 0L
                let functions, per, k, reads = 2, 5, 6, 2
                let n = functions * per
                let a = torch.randn([| int64 k; int64 n |], dtype = f64, generator = gen)
                let b = torch.randn([| int64 k; int64 n |], dtype = f64, generator = gen)
                let r = torch.randn([| int64 reads; int64 n |], dtype = f64, generator = gen)
                let got = Memory.read functions a b r |> toArray
                let av, bv, rv = toArray a, toArray b, toArray r
                for f in 0 .. functions - 1 do
                    // M_f[i, j] = Σ_k a_k[i]·b_k[j] / n_f over the function's coordinates
                    let m = Array2D.init per per (fun i j -> ([ for q in 0 .. k - 1 -> av[q * n + f * per + i] * bv[q * n + f * per + j] ] |> List.sum) / float per)
                    for q in 0 .. reads - 1 do
                        for i in 0 .. per - 1 do
                            let expected = [ for j in 0 .. per - 1 -> m[i, j] * rv[q * n + f * per + j] ] |> List.sum
                            Expect.floatClose Accuracy.high got[q * n + f * per + i] expected (sprintf "function %d, head %d, coordinate %d" f q i)
                let aNew = torch.randn([| 2L; int64 n |], dtype = f64, generator = gen)
                let bNew = torch.randn([| 2L; int64 n |], dtype = f64, generator = gen)
                let a', b' = Memory.write a b aNew bNew
                Expect.equal a'.shape a.shape "the same size"
                Expect.sequenceEqual (toArray a') (Array.append av[2 * n ..] (toArray aNew)) "a: the oldest 2 rows out, the new ones last"
                Expect.sequenceEqual (toArray b') (Array.append bv[2 * n ..] (toArray bNew)) "b likewise")

        testCase "ntm-bfgs: each step reads M_t (the dense sum of the last S steps' a·bᵀ / n_f), then writes its own heads' vectors" <| fun () ->
            scoped (fun () ->
                use gen = Seeds.generator 18L 0UL 0L
                let cfg = { (configOf Architecture.NtmBfgs 6) with Reads = 2; Writes = 2; MemorySteps = 3 }
                let phi = phiOf cfg 7L f64
                let heads = phi.Heads.Value
                let functions, per = 2, 4
                let n = functions * per
                let grads = randomGrads gen (int64 n) 6 f64
                let mutable state = LstmState.zeros phi functions (int64 n)
                // every step's (r, a, b), recomputed from the controller's top h
                let history = ResizeArray<float[] * float[] * float[]>()
                for t, g in List.indexed grads do
                    let _, s = LstmReference.step phi state g
                    let out = torch.addmm(heads.B, heads.W, List.last s.H, 1.0f, 1.0f) |> toArray
                    let rows (from: int) (count: int) = out[from * n .. (from + count) * n - 1]
                    let r, a, b = rows 0 2, rows 2 2, rows 4 2
                    // M_t: the writes of steps t − 3 .. t − 1
                    let earlier = [ for u in max 0 (t - 3) .. t - 1 -> history[u] ]
                    let reads = toArray s.Memory[0]
                    for f in 0 .. functions - 1 do
                        for q in 0 .. 1 do
                            for i in 0 .. per - 1 do
                                let expected =
                                    [ for _, a', b' in earlier do
                                          for w in 0 .. 1 do
                                              let dot = [ for j in 0 .. per - 1 -> b'[w * n + f * per + j] * r[q * n + f * per + j] ] |> List.sum
                                              yield a'[w * n + f * per + i] * dot / float per ] |> List.sum
                                Expect.floatClose Accuracy.high reads[q * n + f * per + i] expected (sprintf "step %d: read %d of function %d, coordinate %d" t q f i)
                    history.Add(r, a, b)
                    // the memory now holds the last 3 steps' a and b, the oldest first (zeros before step 0)
                    let held (pick: float[] * float[] * float[] -> float[]) =
                        [| for u in t - 2 .. t do
                               if u < 0 then yield! Array.zeroCreate (2 * n) else yield! pick history[u] |]
                    Expect.sequenceEqual (toArray s.Memory[1]) (held (fun (_, a, _) -> a)) (sprintf "step %d: a held" t)
                    Expect.sequenceEqual (toArray s.Memory[2]) (held (fun (_, _, b) -> b)) (sprintf "step %d: b held" t)
                    state <- s)

        testCase "ntm-bfgs feeds its last read results to the controller: other reads, other updates (the same h and c)" <| fun () ->
            scoped (fun () ->
                use gen = Seeds.generator 19L 0UL 0L
                let phi = phiOf (configOf Architecture.NtmBfgs 6) 8L f64
                let n = 8L
                let zero = LstmState.zeros phi 2 n
                let reads = torch.randn([| 1L; n |], dtype = f64, generator = gen)
                let withReads = { zero with Memory = reads :: List.tail zero.Memory }
                let grad = torch.randn([| n |], dtype = f64, generator = gen)
                let g0, _ = LstmReference.step phi zero grad
                let g1, _ = LstmReference.step phi withReads grad
                Expect.isGreaterThan (maxAbsDiff (toArray g0) (toArray g1)) 1e-6 "the reads change g"
                // and exactly as extra inputs after the features: the first layer by hand
                let x = torch.cat([| Preprocess.apply phi.Config.Preprocessing grad; reads |], 0L)
                let w = phi.Layers.Head
                let h', _ = LstmReference.cell w x zero.H.Head zero.C.Head
                let _, s1 = LstmReference.step phi withReads grad
                let averaged = GlobalAverage.apply phi.Config.Averaged 2 h'
                Expect.isLessThan (maxAbsDiff (toArray s1.H.Head) (toArray averaged)) 1e-12 "layer 0's h from [features; reads]")

        testCase "every architecture is permutation-equivariant within a function (float64 reference; float32 on the default backend)" <| fun () ->
            scoped (fun () ->
                for a in Architecture.all do
                    for dtype, b, tol in [ f64, Backend.reference, 1e-12; f32, backend, 1e-5 ] do
                        use gen = Seeds.generator 14L 0UL 0L
                        let phi = phiOf (configOf a 7) 4L dtype
                        let functions, n = 2, 10
                        let grads = randomGrads gen (int64 n) 4 dtype
                        let perm = blockPermutation gen n functions
                        let index = torch.tensor(perm |> Array.map int64)
                        let permuted = grads |> List.map (fun g -> g.index_select(0L, index))
                        let outs, _ = run b phi functions grads
                        let outsP, _ = run b phi functions permuted
                        List.iteri2 (fun t (o: float[]) (p: float[]) ->
                            let expected = perm |> Array.map (fun i -> o[i])
                            Expect.isLessThan (maxAbsDiff p expected) tol (sprintf "%s, %A, step %d" (Architecture.name a) dtype t)) outs outsP)

        testCase "lstm-gac keeps the functions of a meta-batch apart: one function's gradients do not move another's updates" <| fun () ->
            scoped (fun () ->
                use gen = Seeds.generator 15L 0UL 0L
                let phi = phiOf (configOf Architecture.LstmGac 6) 5L f64
                let functions, per = 3, 4
                let grads = randomGrads gen (int64 (functions * per)) 3 f64
                let changed = grads |> List.map (fun g -> let c = g.clone() in c.narrow(0L, int64 per, int64 per).MulInPlace(7.0) |> ignore; c)
                let outs, _ = run Backend.reference phi functions grads
                let outsC, _ = run Backend.reference phi functions changed
                for o, c in List.zip outs outsC do
                    Expect.sequenceEqual c[0 .. per - 1] o[0 .. per - 1] "function 0"
                    Expect.sequenceEqual c[2 * per ..] o[2 * per ..] "function 2"
                    Expect.notEqual c[per .. 2 * per - 1] o[per .. 2 * per - 1] "function 1 moved"
                // and the average couples a function's coordinates: one coordinate moves the others
                let one = grads |> List.map (fun g -> let c = g.clone() in c.narrow(0L, 0L, 1L).MulInPlace(7.0) |> ignore; c)
                let outsO, _ = run Backend.reference phi functions one
                let seen = outsO[2]
                let alone = outs[2]
                Expect.notEqual seen[1 .. per - 1] alone[1 .. per - 1] "coordinates 1.. of function 0 see coordinate 0")

        testCase "the default backend computes what the reference does, for every architecture (float32)" <| fun () ->
            scoped (fun () ->
                for a in Architecture.all do
                    use gen = Seeds.generator 16L 0UL 0L
                    let phi = phiOf (configOf a 8) 6L f32
                    let grads = randomGrads gen 33L 5 f32
                    let outsR, stateR = run Backend.reference phi 3 grads
                    let outsF, stateF = run backend phi 3 grads
                    List.iter2 (fun (r: float[]) (f: float[]) -> Expect.isLessThan (maxAbsDiff r f) 1e-6 (Architecture.name a + ": g")) outsR outsF
                    List.iter2 (fun (r: float[]) (f: float[]) -> Expect.isLessThan (maxAbsDiff r f) 1e-5 (Architecture.name a + ": state")) stateR stateF
                    let expected = (if a = Architecture.Gru then 1 else 2) * 2 + (if a = Architecture.NtmBfgs then 3 else 0)
                    Expect.equal stateF.Length expected (Architecture.name a + ": h (and c) per layer, and the memory"))

        testCase "meta-gradients through autograd equal central finite differences of L(φ) (float64, second derivatives kept)" <| fun () ->
            scoped (fun () ->
                let unroll = { Unroll = 3; Weights = Uniform; SecondOrder = true; LogLoss = false }
                let problem = TaskSpec.trainProblem TaskData.none (Quadratic 3) 7L 0L 2 10 torch.CPU f64
                for a in Architecture.all do
                    let cfg = { (configOf a 3) with Averaged = (if Architecture.averages a then 1 else 0) }
                    Expect.isOk (LstmConfig.validate cfg) (Architecture.name a + ": a valid configuration")
                    let phi = phiOf cfg 8L f64
                    let lossOf (p: Phi) =
                        let opt = Learned.optimizer Backend.reference p
                        let loss, _ = MetaLoss.unroll unroll opt (MetaLoss.start opt problem 0L)
                        loss
                    let _, grads, _ = MetaGradient.autograd Backend.reference unroll (Quadratic 3) [ phi ] (MetaLoss.start (Learned.optimizer Backend.reference phi) problem 0L)
                    let values = Phi.tensors phi |> List.map toArray
                    let eps = 1e-6
                    for ti, (g: Tensor) in List.indexed grads do
                        let analytic = toArray g
                        for i in [ 0; analytic.Length / 2; analytic.Length - 1 ] |> List.distinct do
                            let at (delta: float) =
                                let shift k (v: float[]) =
                                    let w = Array.copy v
                                    if k = ti then w[i] <- w[i] + delta
                                    let shape = (List.item k (Phi.tensors phi)).shape
                                    torch.tensor(w, dtype = f64).view(shape)
                                let ts = values |> List.mapi shift
                                (lossOf (Phi.ofTensors cfg ts)).ToDouble()
                            let fd = (at eps - at -eps) / (2.0 * eps)
                            let name = List.item ti (Phi.names cfg)
                            Expect.floatClose { absolute = 1e-7; relative = 1e-5 } analytic[i] fd
                                (sprintf "%s: dL/d%s[%d]" (Architecture.name a) name i)
                Problem.dispose problem)

        testCase "the closed-form meta-gradient is the LSTM's; the others go through autograd" <| fun () ->
            scoped (fun () ->
                let unroll = { Unroll = 4; Weights = Uniform; SecondOrder = false; LogLoss = false }
                for a in Architecture.all do
                    let phi = phiOf (configOf a 6) 9L f32
                    let tr = MetaLoss.start (Learned.optimizer backend phi) (TaskSpec.trainProblem TaskData.none (Quadratic 10) 3L 0L 8 20 torch.CPU f32) 0L
                    Expect.equal (MetaGradient.usesClosedForm backend unroll [ phi ] tr) (a = Architecture.Lstm) (Architecture.name a)
                    // and compute's result is autograd's where it takes it
                    if a <> Architecture.Lstm then
                        let la, ga, _ = MetaGradient.compute backend unroll (Quadratic 10) [ phi ] tr
                        let lb, gb, _ = MetaGradient.autograd backend unroll (Quadratic 10) [ phi ] tr
                        Expect.equal (la.ToDouble()) (lb.ToDouble()) "L(φ)"
                        List.iter2 (fun (x: Tensor) (y: Tensor) -> Expect.sequenceEqual (toArray x) (toArray y) "dL/dφ") ga gb)

        testCase "meta-training runs for every architecture, reproducibly, and moves φ" <| fun () ->
            for a in [ Architecture.Gru; Architecture.LstmGac; Architecture.NtmBfgs ] do
                let cfg = { smallMeta with Lstm = configOf a 8; MetaIterations = 4 }
                let train () = MetaTrain.run cfg TaskData.none ignore (fun () -> false) (MetaTrain.init cfg)
                let x = train ()
                let y = train ()
                let values (s: TrainState) = Phis.tensors s.Phis |> List.map toArray |> Array.concat
                Expect.sequenceEqual (values x) (values y) (Architecture.name a + ": same seed, same φ")
                let init = MetaTrain.init cfg
                Expect.notEqual (values x) (values init) (Architecture.name a + ": φ moved")
                for s in [ x; y; init ] do
                    TrainState.dispose s

        testCase "the optimizer file records the architecture and reads it back exactly; a GRU file is refused as an LSTM" <| fun () ->
            scoped (fun () ->
                for a in Architecture.all do
                    let phi = phiOf (configOf a 5) 10L f32
                    let text = OptimizerFile.toJson phi []
                    if a = Architecture.Lstm then Expect.isFalse (text.Contains "architecture") "the paper's LSTM: no field, as before"
                    else Expect.stringContains text (sprintf "\"architecture\":\"%s\"" (Architecture.name a)) "recorded"
                    match OptimizerFile.ofJson text torch.CPU f32 with
                    | Error e -> failtest e
                    | Ok back ->
                        Expect.equal back.Config phi.Config (Architecture.name a + ": configuration")
                        List.iter2 (fun (x: Tensor) (y: Tensor) -> Expect.sequenceEqual (toArray y) (toArray x) "φ") (Phi.tensors phi) (Phi.tensors back)
                let gru = OptimizerFile.toJson (phiOf (configOf Architecture.Gru 5) 10L f32) []
                let relabelled = gru.Replace("\"architecture\":\"gru\"", "\"architecture\":\"lstm\"")
                match OptimizerFile.ofJson relabelled torch.CPU f32 with
                | Ok _ -> failtest "a GRU's tensors accepted as an LSTM's"
                | Error e -> Expect.stringContains e "shape" "names the mismatch"
                match OptimizerFile.ofJson (gru.Replace("\"architecture\":\"gru\"", "\"architecture\":\"rnn\"")) torch.CPU f32 with
                | Ok _ -> failtest "an unknown architecture accepted"
                | Error e -> Expect.stringContains e "unknown architecture 'rnn'" "names it")

        testCase "ntm-bfgs and gru resume from a mid-trajectory checkpoint to the same φ, bit for bit" <| fun () ->
            for a in [ Architecture.Gru; Architecture.NtmBfgs ] do
                let cfg = { smallMeta with Lstm = configOf a 6; MetaIterations = 6 }
                let run (c: MetaConfig) s = MetaTrain.run c TaskData.none ignore (fun () -> false) s
                let straight = run cfg (MetaTrain.init cfg)
                let partial = run { cfg with MetaIterations = 3 } (MetaTrain.init cfg)
                Expect.isSome partial.Trajectory (Architecture.name a + ": taken mid-trajectory")
                let bytes = Checkpoint.encode cfg partial []
                TrainState.dispose partial
                match Checkpoint.decode cfg TaskData.none bytes with
                | Error e -> failtest (CheckpointError.describe e)
                | Ok(resumed, _) ->
                    let finished = run cfg resumed
                    let values (s: TrainState) = Phis.tensors s.Phis |> List.map toArray |> Array.concat
                    Expect.sequenceEqual (values finished) (values straight) (Architecture.name a + ": final φ")
                    TrainState.dispose finished
                TrainState.dispose straight

        testCase "a checkpoint records the architecture; resuming with another is refused" <| fun () ->
            let cfg = { smallMeta with Lstm = configOf Architecture.Gru 6 }
            let s = MetaTrain.init cfg
            let bytes = Checkpoint.encode cfg s []
            match Checkpoint.decode cfg TaskData.none bytes with
            | Error e -> failtest (CheckpointError.describe e)
            | Ok(r, _) ->
                Expect.equal r.Phis.Head.Config.Architecture Architecture.Gru "read back"
                TrainState.dispose r
            match Checkpoint.decode { cfg with Lstm = configOf Architecture.Lstm 6 } TaskData.none bytes with
            | Ok _ -> failtest "resumed a GRU's checkpoint as an LSTM"
            | Error e -> Expect.stringContains (CheckpointError.describe e) "optimizer differ" (CheckpointError.describe e)
            TrainState.dispose s

        testCase "job specs take optimizer.architecture and optimizer.averaged, and name bad values" <| fun () ->
            let spec (optimizer: string) = sprintf """{ "id": "a", "task": "quadratic", "metaIterations": 2, "optimizer": %s }""" optimizer
            match JobSpec.parse (spec """{ "architecture": "lstm-gac", "averaged": 3 }""") with
            | Ok j -> Expect.equal (j.Meta.Lstm.Architecture, j.Meta.Lstm.Averaged) (Architecture.LstmGac, 3) "lstm-gac, 3 cells"
            | Error e -> failtestf "%A" e
            match JobSpec.parse (spec """{ "architecture": "gru" }""") with
            | Ok j -> Expect.equal (j.Meta.Lstm.Architecture, j.Meta.Lstm.Averaged) (Architecture.Gru, 0) "gru"
            | Error e -> failtestf "%A" e
            match JobSpec.parse (spec """{ "architecture": "lstm-gac" }""") with
            | Ok j -> Expect.equal j.Meta.Lstm.Averaged 5 "the default averaging cells"
            | Error e -> failtestf "%A" e
            match JobSpec.parse (spec """{ "architecture": "ntm-bfgs", "writes": 2 }""") with
            | Ok j ->
                let c = j.Meta.Lstm
                Expect.equal (c.Architecture, c.Averaged, c.Reads, c.Writes, c.MemorySteps) (Architecture.NtmBfgs, 5, 1, 2, 100) "ntm-bfgs, its defaults but 2 write heads"
            | Error e -> failtestf "%A" e
            match JobSpec.parse (spec """{ "architecture": "gcn" }""") with
            | Ok _ -> failtest "accepted"
            | Error e -> Expect.stringContains (sprintf "%A" e) "unknown architecture 'gcn'" "names it"
            match JobSpec.parse (spec """{ "architecture": "gru", "averaged": 2 }""") with
            | Ok _ -> failtest "accepted"
            | Error e -> Expect.stringContains (sprintf "%A" e) "lstm-gac and ntm-bfgs only" "names it"
    ]
