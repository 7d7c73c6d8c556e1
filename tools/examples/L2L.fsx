// Makes the pure core available to F# Interactive: references the Release build of the command line
// (run `tools/l2l --help` once to build it) and loads libtorch's native libraries from it.
//   #load "L2L.fsx"
#r "../../src/L2L.Cli/bin/Release/net10.0/TorchSharp.dll"
#r "../../src/L2L.Cli/bin/Release/net10.0/L2L.Core.dll"
#r "../../src/L2L.Cli/bin/Release/net10.0/L2L.Kernels.dll"

open System.IO
open System.Runtime.InteropServices

let private native = Path.Combine(__SOURCE_DIRECTORY__, "../../src/L2L.Cli/bin/Release/net10.0/runtimes/linux-x64/native")
if not (File.Exists(Path.Combine(native, "libLibTorchSharp.so"))) then
    failwithf "the Release build is missing (%s): run tools/l2l --help once" native
L2L.Runtime.prepare ()
for lib in [ "libtorch.so"; "libLibTorchSharp.so" ] do
    NativeLibrary.Load(Path.Combine(native, lib)) |> ignore
