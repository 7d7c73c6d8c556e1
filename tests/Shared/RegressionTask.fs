/// A small task of one's own shared by the tests: a 4-8-1 tanh network (nn.Sequential) fitting a fixed
/// linear map on 256 points, minibatches of 32, as `Task.ofModule` takes it.
module L2L.Tests.RegressionTask

open TorchSharp
open L2L

/// The spec; its data lives as long as the process.
let spec : ModuleTaskSpec =
    let xs, ys =
        use gen = Seeds.generator 9L 9UL 0L
        let xs = torch.randn([| 256L; 4L |], generator = gen).DetachFromDisposeScope()
        xs, xs.matmul(torch.randn([| 4L; 1L |], generator = gen)).DetachFromDisposeScope()
    { Name = "regression"
      Description = "4-8-1 tanh regression on 256 points"
      Model = fun () -> torch.nn.Sequential(torch.nn.Linear(4L, 8L), torch.nn.Tanh(), torch.nn.Linear(8L, 1L))
      Batch = fun _ gen -> (let idx = torch.randint(256L, [| 32L |], generator = gen) in xs.index_select(0L, idx), ys.index_select(0L, idx))
      Loss = fun out y -> torch.nn.functional.mse_loss(out, y)
      Full = Some(fun _ -> [ xs, ys ])
      Groups = [] }
