// Meta-trains a small LSTM optimizer on 10-d quadratics with the pure core and evaluates it
// against Adam on fresh functions (common random numbers).
//   tools/pack                      # writes the L2L.Functional package this script references (once)
//   dotnet fsi tools/examples/quadratic.fsx [meta-iterations]
#load "L2L.fsx"

open TorchSharp
open L2L

// behind the prelude's boundary: a bad argument is one line and exit code 2
L2L.run <| fun () ->
    let iterations = L2L.countArg "meta-iterations" 1000

    // the paper's setting (2×20 LSTM, logsign preprocessing, output ×0.1), a short budget
    let cfg = { Defaults.quadratic with MetaIterations = iterations; ValidateEvery = max 1 (iterations / 4); Backend = L2L.settings.Backend }

    let report (r: IterationReport) =
        r.Validation |> Option.iter (printfn "meta-iteration %5d  held-out f(θ_100) %.4f" r.Iteration)

    let final = MetaTrain.run cfg TaskData.none report (fun () -> false) (MetaTrain.init cfg)

    // the best φ against Adam (lr 0.3, near its tuned value) on 1000 fresh functions
    let problems = TaskSpec.heldOut TaskData.none cfg.Task EvalSplit 1000UL 1000 100 torch.CPU torch.ScalarType.Float32
    let lossAt (opt: Optimizer) =
        let run = Evaluate.run cfg.Backend opt problems 100
        Evaluate.mean run.Full[100]

    let lstm = lossAt (TaskSpec.learned cfg.Backend cfg.Task final.Best)
    let adam = lossAt (Baselines.adam 0.3 0.9 0.999 1e-8)
    printfn "mean f(θ_100) on 1000 fresh functions: lstm %.4f, adam %.4f" lstm adam
    printfn "RESULT lstm=%.6f adam=%.6f" lstm adam
    List.iter Problem.dispose problems
    TrainState.dispose final
