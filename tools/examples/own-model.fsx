// Trains your own TorchSharp model with the pretrained MNIST optimizer, the way any TorchSharp
// optimizer is used (zero_grad, backward, step), against torch.optim.Adam (lr 0.03, its tuned value on
// this network): nn.Sequential 784-20-10 sigmoid, 200 steps of minibatches of 128 MNIST images, the
// same θ_0 and the same minibatches for both.
//   tools/pack                      # writes the L2L.Functional package this script references (once)
//   dotnet fsi tools/examples/own-model.fsx
#load "L2L.fsx"

open TorchSharp
open L2L

L2L.run <| fun () ->
    let data =
        match Datasets.mnist L2L.settings.DataDirectory torch.CPU (eprintfn "%s") with
        | Ok d -> d
        | Error e -> raise (System.IO.InvalidDataException("MNIST: " + e))
    let steps, batch = 200, 128L
    // the first 50,000 training images train; the other 10,000 report the loss
    let trainX, trainY = data.TrainX.narrow(0L, 0L, 50000L), data.TrainY.narrow(0L, 0L, 50000L)
    let heldX, heldY = data.TrainX.narrow(0L, 50000L, 10000L), data.TrainY.narrow(0L, 50000L, 10000L)

    let model () =
        let m = torch.nn.Sequential(torch.nn.Linear(784L, 20L), torch.nn.Sigmoid(), torch.nn.Linear(20L, 10L))
        // θ_0 ~ N(0, 0.01²), the initialisation the optimizer was meta-trained with (and the paper's)
        use gen = new torch.Generator(1UL)
        use _ = torch.no_grad()
        for p in m.parameters() do
            p.normal_(0.0, 0.01, generator = gen) |> ignore
        m

    /// 200 steps of `make model`'s optimizer on the same minibatches; the final loss on the 10,000
    /// held-out training images.
    let train (name: string) (makeOptimizer: torch.nn.Module -> torch.optim.Optimizer) =
        use m = model ()
        use opt = makeOptimizer m
        use gen = new torch.Generator(2UL)
        let sw = System.Diagnostics.Stopwatch.StartNew()
        for t in 1 .. steps do
            use _ = torch.NewDisposeScope()
            let idx = torch.randint(50000L, [| batch |], generator = gen)
            let x = Mnist.scale torch.ScalarType.Float32 (trainX.index_select(0L, idx))
            opt.zero_grad()
            let loss = torch.nn.functional.cross_entropy(m.forward x, trainY.index_select(0L, idx))
            loss.backward()
            opt.step() |> ignore
            if t % 50 = 0 then printfn "%-8s step %3d  minibatch loss %.4f" name t (loss.ToDouble())
        use _ = torch.no_grad()
        use _ = torch.NewDisposeScope()
        let logits = m.forward (Mnist.scale torch.ScalarType.Float32 heldX)
        let loss = torch.nn.functional.cross_entropy(logits, heldY).ToDouble()
        let acc = logits.argmax(1L).eq(heldY).to_type(torch.ScalarType.Float32).mean().ToDouble()
        printfn "%-8s after %d steps (%.2f s): loss %.4f, accuracy %.2f%% on the 10,000 held-out images" name steps sw.Elapsed.TotalSeconds loss (100.0 * acc)
        loss

    let learned = train "learned" (fun m -> LearnedOptimizer.Pretrained("mnist", m.parameters()))
    let adam = train "adam" (fun m -> torch.optim.Adam(m.parameters(), lr = 0.03))
    printfn "RESULT learned=%.6f adam=%.6f" learned adam
