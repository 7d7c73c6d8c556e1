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
            Expect.sequenceEqual (Idx.read p) raw "gunzipped"
            let q = tmpFile raw
            Expect.sequenceEqual (Idx.read q) raw "plain"
        testCase "the loader names a bad file in the data directory" <| fun () ->
            let dir = Path.Combine(Path.GetTempPath(), "l2l-mnist-" + Guid.NewGuid().ToString("N"))
            Directory.CreateDirectory dir |> ignore
            File.WriteAllBytes(Path.Combine(dir, "train-images-idx3-ubyte"), imagesFile 5 28 28)
            for name in [ "train-labels-idx1-ubyte"; "t10k-images-idx3-ubyte"; "t10k-labels-idx1-ubyte" ] do
                File.WriteAllBytes(Path.Combine(dir, name), labelsFile 1)
            match Mnist.loadArrays dir ignore with
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
                    let theta0 = torch.randn([| int64 n |], dtype = f64, generator = gen).mul(sc 0.5)
                    let idx = torch.randint(50000L, [| 2L; 5L |], generator = gen)
                    let d64 = { data with TrainX = data.TrainX.to_type(f64); TestX = data.TestX.to_type(f64) }
                    let p = Mlp.problem spec d64 TrainSplit theta0 idx
                    let th = theta0.clone().requires_grad_(true)
                    let _, g = Gradient.at p 1 th false false
                    let ga = toArray g
                    let rng = Random(3)
                    for _ in 1..12 do
                        let i = rng.Next n
                        let eps = 1e-6
                        let at (delta: float) =
                            let v = theta0.clone()
                            v[int64 i] <- v[int64 i].add(sc delta)
                            (Problem.loss p 1 v).ToDouble()
                        let fd = (at eps - at -eps) / (2.0 * eps)
                        Expect.isLessThan (abs (ga[i] - fd)) (1e-7 + 1e-5 * abs fd) (sprintf "%A: ∂f/∂θ[%d] %g vs %g" spec.Hidden i ga[i] fd))

        testCase "MLP: parameter count and the flat layout" <| fun () ->
            Expect.equal (Mlp.count { Hidden = [ 20 ]; Activation = Sigmoid; Batch = 128 }) 15910 "784·20 + 20 + 20·10 + 10"
            Expect.equal (Mlp.count { Hidden = [ 20; 20 ]; Activation = Sigmoid; Batch = 128 }) 16330 "+ 20·20 + 20"
    ]
