/// A task of one's own for the worker: this assembly is handed to it as a task assembly
/// (Worker:TaskAssemblies), and job specs name the task.
namespace L2L.Host.Tests

open TorchSharp
open L2L

type RegressionTasks() =
    /// A 4-8-1 tanh network fitting a fixed linear map on 256 points.
    static member Regression =
        let xs, ys =
            use gen = Seeds.generator 9L 9UL 0L
            let xs = torch.randn([| 256L; 4L |], generator = gen).DetachFromDisposeScope()
            xs, xs.matmul(torch.randn([| 4L; 1L |], generator = gen)).DetachFromDisposeScope()
        Task.ofModule
            { Name = "regression"
              Description = "4-8-1 tanh regression on 256 points"
              Model = fun () -> torch.nn.Sequential(torch.nn.Linear(4L, 8L), torch.nn.Tanh(), torch.nn.Linear(8L, 1L))
              Batch = fun _ gen -> (let idx = torch.randint(256L, [| 32L |], generator = gen) in xs.index_select(0L, idx), ys.index_select(0L, idx))
              Loss = fun out y -> torch.nn.functional.mse_loss(out, y)
              Full = Some(fun _ -> [ xs, ys ])
              Groups = [] }

    interface ITaskProvider with
        member _.Tasks = [ RegressionTasks.Regression ]
