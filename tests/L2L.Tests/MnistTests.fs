/// The IDX loader and the MNIST MLP task.
module L2L.Tests.MnistTests

open System
open System.IO
open System.IO.Compression
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let be32 (v: int) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]

let imagesFile (n: int) (r: int) (c: int) = Array.concat [ be32 2051; be32 n; be32 r; be32 c; Array.init (n * r * c) byte ]
let labelsFile (n: int) = Array.concat [ be32 2049; be32 n; Array.init n (fun i -> byte (i % 10)) ]

let expectError (r: Result<'a, string>) (fragment: string) =
    match r with
    | Ok _ -> failtestf "accepted; expected an error with '%s'" fragment
    | Error e ->
        Expect.stringContains e fragment "names what is wrong"
        Expect.stringContains e "f.idx" "names the file"

let gzip (b: byte[]) =
    use ms = new MemoryStream()
    (
        use gz = new GZipStream(ms, CompressionLevel.Fastest, true)
        gz.Write(b, 0, b.Length)
    )
    ms.ToArray()

let tmpFile (bytes: byte[]) =
    let p = Path.Combine(Path.GetTempPath(), "l2l-idx-" + Guid.NewGuid().ToString("N"))
    File.WriteAllBytes(p, bytes)
    p

/// A small synthetic data set in the MnistData shape (the MLP's code does not care where it comes from).
let fakeData () =
    use gen = Seeds.generator 3L 7UL 0L
    let x = torch.rand([| 60000L; 784L |], generator = gen)
    let y = torch.randint(10L, [| 60000L |], generator = gen)
    { TrainX = x; TrainY = y; TestX = x.narrow(0L, 0L, 10000L); TestY = y.narrow(0L, 0L, 10000L) }

/// fakeData with float64 images (for finite differences).
let fakeData64 () =
    let data = fakeData ()
    { data with TrainX = data.TrainX.to_type(f64); TestX = data.TestX.to_type(f64) }

/// ∂f/∂θ at step 1 (autograd) equals central finite differences at the given coordinates.
let expectFiniteDifferences (p: Problem) (theta0: Tensor) (coords: int list) (label: string) =
    let _, g = Gradient.at p 1 (theta0.clone().requires_grad_(true)) false false
    let ga = toArray g
    for i in coords do
        let eps = 1e-6
        let at (delta: float) =
            let v = theta0.clone()
            v[int64 i] <- v[int64 i].Add(delta)
            (Problem.loss p 1 v).ToDouble()
        let fd = (at eps - at -eps) / (2.0 * eps)
        Expect.isLessThan (abs (ga[i] - fd)) (1e-7 + 1e-5 * abs fd) (sprintf "%s: ∂f/∂θ[%d] %g vs %g" label i ga[i] fd)

[<Tests>]
let tests =
    testList "mnist" [
        testCase "IDX: a valid image and label file" <| fun () ->
            match Idx.images "f.idx" (imagesFile 3 2 2), Idx.labels "f.idx" (labelsFile 3) with
            | Ok(n, r, c, px), Ok(m, l) ->
                Expect.equal (n, r, c, px.Length) (3, 2, 2, 12) "images"
                Expect.equal (m, l) (3, [| 0uy; 1uy; 2uy |]) "labels"
            | a, b -> failtestf "%A %A" a b
        testCase "IDX: truncated" <| fun () ->
            expectError (Idx.images "f.idx" ((imagesFile 3 2 2).[0..20])) "header announces 3 images"
            expectError (Idx.labels "f.idx" ((labelsFile 3).[0..5])) "truncated"
        testCase "IDX: wrong magic" <| fun () ->
            expectError (Idx.images "f.idx" (labelsFile 20)) "wrong magic number 2049"
            expectError (Idx.labels "f.idx" (imagesFile 1 1 1)) "wrong magic number 2051"
        testCase "IDX: wrong count" <| fun () ->
            let b = labelsFile 3
            b[7] <- 4uy
            expectError (Idx.labels "f.idx" b) "announces 4 labels"
        testCase "IDX: gzipped files are read by content" <| fun () ->
            let raw = imagesFile 2 3 3
            let p = tmpFile (gzip raw)
            Expect.sequenceEqual (Idx.gunzip (File.ReadAllBytes p)) raw "gunzipped"
            let q = tmpFile raw
            Expect.sequenceEqual (Idx.gunzip (File.ReadAllBytes q)) raw "plain"
        testCase "the loader names a bad file in the data directory" <| fun () ->
            let dir = Path.Combine(Path.GetTempPath(), "l2l-mnist-" + Guid.NewGuid().ToString("N"))
            Directory.CreateDirectory dir |> ignore
            File.WriteAllBytes(Path.Combine(dir, "train-images-idx3-ubyte"), imagesFile 5 28 28)
            for name in [ "train-labels-idx1-ubyte"; "t10k-images-idx3-ubyte"; "t10k-labels-idx1-ubyte" ] do
                File.WriteAllBytes(Path.Combine(dir, name), labelsFile 1)
            match Datasets.readMnist dir ignore with
            | Ok _ -> failtest "accepted"
            | Error e ->
                Expect.stringContains e "train-images-idx3-ubyte" "the file"
                Expect.stringContains e "expected 60000" "what is wrong"

        testCase "MLP: gradients equal central finite differences (float64), sigmoid and ReLU, 1 and 2 layers" <| fun () ->
            scoped (fun () ->
                let data = fakeData ()
                for spec in [ { Hidden = [ 3 ]; Activation = Sigmoid; Batch = 5 }; { Hidden = [ 3; 2 ]; Activation = Relu; Batch = 5 } ] do
                    use gen = Seeds.generator 1L 2UL 0L
                    let n = Mlp.count spec
                    let theta0 = torch.randn([| int64 n |], dtype = f64, generator = gen).Mul(0.5)
                    let idx = torch.randint(50000L, [| 2L; 5L |], generator = gen)
                    let d64 = { data with TrainX = data.TrainX.to_type(f64); TestX = data.TestX.to_type(f64) }
                    let p = Mlp.problem spec d64 TrainSplit theta0 idx
                    let rng = Random(3)
                    expectFiniteDifferences p theta0 [ for _ in 1..12 -> rng.Next n ] (sprintf "%A" spec.Hidden))

        testCase "MLP: the hand-derived minibatch loss and gradient equal autograd's (float64), sigmoid and ReLU, 1 and 2 layers" <| fun () ->
            scoped (fun () ->
                let d64 = fakeData64 ()
                for spec in [ { Hidden = [ 7 ]; Activation = Sigmoid; Batch = 16 }; { Hidden = [ 5; 4 ]; Activation = Relu; Batch = 9 }; { Hidden = [ 6; 3 ]; Activation = Sigmoid; Batch = 4 } ] do
                    use gen = Seeds.generator 5L 2UL 0L
                    let n = Mlp.count spec
                    let theta0 = torch.randn([| int64 n |], dtype = f64, generator = gen).Mul(0.3)
                    let idx = torch.randint(50000L, [| 3L; int64 spec.Batch |], generator = gen)
                    let p = Mlp.problem spec d64 TrainSplit theta0 idx
                    for t in 0..2 do
                        let loss, g = Gradient.at p t (theta0.clone().requires_grad_(true)) false false
                        let l2, g2 = p.LossGrad.Value t theta0
                        Expect.isLessThan (maxAbsDiff (toArray g2) (toArray g)) 1e-12 (sprintf "%A %A: gradient at step %d" spec.Hidden spec.Activation t)
                        Expect.floatClose Accuracy.veryHigh (l2.sum().ToDouble()) (loss.ToDouble()) "loss")

        testCaseSequenced "MLP: the fused kernel's minibatch loss and gradient equal the tensor version's (float32, uint8 images; AVX-512, AVX2 and scalar paths)" <| fun () ->
            scoped (fun () ->
                use gen = Seeds.generator 9L 2UL 0L
                // uint8 images as the loader gives them, integer labels
                let x = torch.randint(256L, [| 3000L; 784L |], dtype = torch.ScalarType.Byte, generator = gen)
                let y = torch.randint(10L, [| 3000L |], generator = gen)
                let specs =
                    [ { Hidden = [ 20 ]; Activation = Sigmoid; Batch = 128 }
                      { Hidden = [ 5; 4 ]; Activation = Relu; Batch = 9 }
                      { Hidden = [ 17; 33 ]; Activation = Sigmoid; Batch = 7 }
                      { Hidden = [ 1 ]; Activation = Relu; Batch = 1 }
                      { Hidden = []; Activation = Sigmoid; Batch = 6 } ]
                let width = Kernels.MlpKernel.Width
                try
                    for w in [ 16; 8; 1 ] do
                        Kernels.MlpKernel.Width <- w
                        for spec in specs do
                            let theta = torch.randn([| int64 (Mlp.count spec) |], generator = gen).Mul(0.3)
                            let idx = torch.randint(3000L, [| int64 spec.Batch |], generator = gen)
                            Expect.isTrue (Mlp.fusedFits theta x y idx) "the fused kernel takes float32 θ and uint8 images"
                            let l1, g1 = Mlp.batchLossGrad spec theta x y idx
                            let l2, g2 = Classifier.gathered (Mlp.lossGrad spec) theta x y idx
                            let label = sprintf "width %d, %A %A, batch %d" w spec.Hidden spec.Activation spec.Batch
                            Expect.floatClose { absolute = 1e-6; relative = 1e-5 } (l1.ToDouble()) (l2.ToDouble()) (label + ": loss")
                            let a, b = toArray g1, toArray g2
                            let scale = b |> Array.map abs |> Array.max
                            Expect.isGreaterThan scale 1e-4 (label + ": the gradient is not trivially zero")
                            Expect.isLessThan (maxAbsDiff a b) (1e-5 * scale) (label + ": gradient")
                finally
                    Kernels.MlpKernel.Width <- width)

        testCase "MLP: the fused kernel names a minibatch row outside the images and a label outside the classes" <| fun () ->
            scoped (fun () ->
                let spec = { Hidden = [ 4 ]; Activation = Sigmoid; Batch = 2 }
                let x = torch.zeros([| 10L; 784L |], dtype = torch.ScalarType.Byte)
                let theta = torch.zeros([| int64 (Mlp.count spec) |])
                let bad = Expect.throwsT<ArgumentOutOfRangeException>
                bad (fun () -> Mlp.batchLossGrad spec theta x (torch.zeros([| 10L |], dtype = torch.ScalarType.Int64)) (torch.tensor([| 3L; 10L |])) |> ignore) "row 10 of 10"
                let ex =
                    try
                        Mlp.batchLossGrad spec theta x (torch.tensor(Array.create 10 12L)) (torch.tensor([| 3L; 4L |])) |> ignore
                        None
                    with :? ArgumentOutOfRangeException as e -> Some e.Message
                Expect.isSome ex "label 12 of 10 classes is refused"
                Expect.stringContains ex.Value "label 12" "names the label")

        testCase "MLP: parameter count and the flat layout" <| fun () ->
            Expect.equal (Mlp.count { Hidden = [ 20 ]; Activation = Sigmoid; Batch = 128 }) 15910 "784·20 + 20 + 20·10 + 10"
            Expect.equal (Mlp.count { Hidden = [ 20; 20 ]; Activation = Sigmoid; Batch = 128 }) 16330 "+ 20·20 + 20"

        testCase "conv net: gradients equal central finite differences (float64), in both parameter groups" <| fun () ->
            scoped (fun () ->
                let d64 = fakeData64 ()
                for spec in [ { Channels = [ 2; 3 ]; Dense = 4; Batch = 3 }; { Channels = [ 2 ]; Dense = 0; Batch = 2 } ] do
                    use gen = Seeds.generator 1L 3UL 0L
                    let n = Conv.count spec
                    let theta0 = torch.randn([| int64 n |], dtype = f64, generator = gen).mul(torch.tensor(Conv.initScale spec))
                    let theta0 = theta0.Add(torch.randn([| int64 n |], dtype = f64, generator = gen).Mul(0.05))
                    let idx = torch.randint(50000L, [| 2L; int64 spec.Batch |], generator = gen)
                    let p = Conv.problem spec d64 TrainSplit theta0 idx
                    let rng = Random(5)
                    let nConv = Conv.convCount spec
                    // coordinates from the conv group and from the fully connected group
                    let coords = [ for _ in 1..10 -> rng.Next nConv ] @ [ for _ in 1..10 -> nConv + rng.Next(n - nConv) ]
                    expectFiniteDifferences p theta0 coords (sprintf "%A" spec.Channels))

        testCase "conv net: logits equal libtorch's conv2d / batch_norm / max_pool2d network on the same parameters" <| fun () ->
            scoped (fun () ->
                let spec = { Channels = [ 3; 5 ]; Dense = 6; Batch = 4 }
                use gen = Seeds.generator 2L 3UL 0L
                let n = Conv.count spec
                let theta = torch.randn([| int64 n |], dtype = f64, generator = gen).Mul(0.3)
                let x = torch.rand([| 4L; 784L |], dtype = f64, generator = gen)
                let mutable offset = 0L
                let take (shape: int64[]) =
                    let k = shape |> Array.fold (*) 1L
                    let t = theta.narrow(0L, offset, k).view(shape)
                    offset <- offset + k
                    t
                let bn (z: Tensor) (g: Tensor) (beta: Tensor) =
                    torch.nn.functional.batch_norm(z, null, null, g.Add(1.0), beta, true, 0.1, 1e-5)
                let mutable h = x.view(4L, 1L, 28L, 28L)
                for i, o in List.pairwise (1 :: spec.Channels) do
                    let w = take [| int64 o; int64 i; 3L; 3L |]
                    let g = take [| int64 o |]
                    let beta = take [| int64 o |]
                    let z = bn (torch.nn.functional.conv2d(h, w, null, [| 1L; 1L |], [| 1L; 1L |], [| 1L; 1L |], 1L)) g beta
                    h <- torch.nn.functional.max_pool2d(z.relu(), [| 2L; 2L |], [| 2L; 2L |], [| 0L; 0L |], [| 1L; 1L |], false)
                Expect.equal offset (int64 (Conv.convCount spec)) "conv parameters first"
                let h = h.flatten(1L)
                let w1 = take [| 5L * 7L * 7L; 6L |]
                let g1 = take [| 6L |]
                let beta1 = take [| 6L |]
                let w2 = take [| 6L; 10L |]
                let b2 = take [| 10L |]
                Expect.equal offset (int64 n) "then the fully connected ones"
                let expected = torch.addmm(b2, (bn (torch.mm(h, w1)) g1 beta1).relu(), w2, 1.0f, 1.0f)
                let got = Conv.logits spec theta x
                Expect.isLessThan (got.sub(expected).abs().max().ToDouble()) 1e-9 "same logits")

        testCase "conv net: θ splits into the conv and the fully connected group, every parameter in exactly one" <| fun () ->
            scoped (fun () ->
                for spec in [ TaskSpec.convDefault; { Channels = [ 2; 3; 4 ]; Dense = 0; Batch = 2 } ] do
                    let task = Conv spec
                    let groups = TaskSpec.groups task
                    Expect.equal (groups |> List.map fst) [ "conv"; "fc" ] "two groups, in θ's order"
                    let n = Conv.count spec
                    Expect.equal (groups |> List.sumBy snd) n "the groups cover θ: every parameter in exactly one"
                    let nConv = snd groups[0]
                    // the conv features depend on every coordinate of the conv group and on no other
                    use gen = Seeds.generator 4L 3UL 0L
                    let theta = torch.randn([| int64 n |], dtype = f64, generator = gen).mul(torch.tensor(Conv.initScale spec)).Add(0.01).requires_grad_(true)
                    let x = torch.rand([| 8L; 784L |], dtype = f64, generator = gen)
                    let f = Conv.features spec theta x
                    let g = torch.autograd.grad([| f.mul(f).sum() |], [| theta |])[0]
                    let ga = toArray g
                    Expect.isTrue (ga[.. nConv - 1] |> Array.forall (fun v -> v <> 0.0)) "every conv-group coordinate moves the conv features"
                    Expect.isTrue (ga[nConv ..] |> Array.forall (fun v -> v = 0.0)) "no fully connected coordinate does"
                    // and the logits depend on every fully connected coordinate
                    let l = Conv.logits spec theta x
                    let gl = toArray (torch.autograd.grad([| l.mul(l).sum() |], [| theta |])[0])
                    Expect.isTrue (gl[nConv ..] |> Array.forall (fun v -> v <> 0.0)) "every fully connected coordinate moves the logits")
    ]
