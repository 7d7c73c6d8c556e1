// Meta-trains m_φ on a network of your own and evaluates it against tuned Adam. The network, an
// nn.Sequential that sees MNIST at half resolution: 2×2 average pooling (28×28 → 14×14), a 196-16 tanh
// layer and a 16-10 output (3,322 parameters), minibatches of 64. `Task.ofModule` makes it a task: θ
// is its parameters flattened, θ_0 its own initialisation; meta-training, validation and evaluation
// are the library's, first order through the closed-form meta-gradient.
//   tools/pack                      # writes the L2L.Functional package this script references (once)
//   dotnet fsi tools/examples/meta-train-own-model.fsx [meta-iterations, default 300]
#load "L2L.fsx"

open TorchSharp
open L2L

L2L.run <| fun () ->
    let iterations = L2L.countArg "meta-iterations" 300
    let data =
        match Datasets.mnist L2L.settings.DataDirectory torch.CPU (eprintfn "%s") with
        | Ok d -> d
        | Error e -> raise (System.IO.InvalidDataException("MNIST: " + e))

    // the task's data: meta-training, tuning and validation draw from the first 50,000 training
    // images, evaluation from the other 10,000
    let rows split =
        let offset, length = DataSplit.range split
        data.TrainX.narrow(0L, offset, length), data.TrainY.narrow(0L, offset, length)
    let task =
        Task.ofModule
            { Name = "mnist-half"
              Description = "MNIST at 14×14 (2×2 average pooling), 196-16 tanh, 10-way output; batch 64"
              Model =
                fun () ->
                    torch.nn.Sequential(
                        torch.nn.Unflatten(1L, [| 1L; 28L; 28L |]),
                        torch.nn.AvgPool2d(2L),
                        torch.nn.Flatten(),
                        torch.nn.Linear(196L, 16L),
                        torch.nn.Tanh(),
                        torch.nn.Linear(16L, 10L))
              Batch =
                fun split gen ->
                    let x, y = rows split
                    let idx = torch.randint(x.shape[0], [| 64L |], generator = gen)
                    Mnist.scale torch.ScalarType.Float32 (x.index_select(0L, idx)), y.index_select(0L, idx)
              Loss = fun logits y -> torch.nn.functional.cross_entropy(logits, y)
              // the loss results report: on the split's images, 2,000 at a time
              Full =
                Some(fun split ->
                    let x, y = rows split
                    [ for start in 0L .. 2000L .. x.shape[0] - 1L ->
                          let n = min 2000L (x.shape[0] - start)
                          Mnist.scale torch.ScalarType.Float32 (x.narrow(0L, start, n)), y.narrow(0L, start, n) ])
              Groups = [] }

    let cfg =
        { Defaults.meta task with
            MetaIterations = iterations
            ValidateEvery = max 1 (iterations / 5)
            ValidationFunctions = 3
            Backend = L2L.settings.Backend }
    printfn "%s: %d coordinates; %d meta-iterations of %d steps (horizon %d)" (TaskSpec.describe task) (TaskSpec.coordinates task) iterations cfg.Unroll.Unroll cfg.Horizon
    let sw = System.Diagnostics.Stopwatch.StartNew()
    let report (r: IterationReport) =
        r.Validation |> Option.iter (printfn "meta-iteration %4d  held-out f(θ_%d) %.4f" r.Iteration cfg.Horizon)
    let final = MetaTrain.run cfg TaskData.none report (fun () -> false) (MetaTrain.init cfg)
    printfn "meta-training: %.1f s" sw.Elapsed.TotalSeconds

    // Adam's learning rate tuned on 3 held-out networks (training split) by the loss at the horizon,
    // then both on 10 fresh networks of the evaluation split (the same θ_0 and minibatches for both)
    let steps = cfg.Horizon
    let tuneOn = TaskSpec.heldOut TaskData.none task TrainSplit 2000UL 3 steps torch.CPU cfg.DType
    let tuned = Tuning.tuneRefined cfg.Backend "adam" 1e-4 1.0 2 6 tuneOn steps
    List.iter Problem.dispose tuneOn
    let problems = TaskSpec.heldOut TaskData.none task EvalSplit 1000UL 10 steps torch.CPU cfg.DType
    let lossOf (opt: Optimizer) = Evaluate.mean (Evaluate.run cfg.Backend opt problems steps).Full[steps]
    let lstm = lossOf (TaskSpec.learned cfg.Backend task final.Best)
    let adam = lossOf (Baselines.byName "adam" tuned.Lr)
    printfn "loss after %d steps on 10 fresh networks: lstm %.4f, adam (tuned lr %.3g%s) %.4f" steps lstm tuned.Lr (if tuned.AtGridEdge then ", at the grid's edge" else "") adam
    printfn "RESULT lstm=%.6f adam=%.6f" lstm adam
    List.iter Problem.dispose problems
    TrainState.dispose final
