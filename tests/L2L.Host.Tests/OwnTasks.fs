/// A task of one's own for the worker: this assembly is handed to it as a task assembly
/// (Worker:TaskAssemblies), and job specs name the task.
namespace L2L.Host.Tests

open L2L

type RegressionTasks() =
    interface ITaskProvider with
        member _.Tasks = [ Task.ofModule L2L.Tests.RegressionTask.spec ]
