/// Shared helpers of the tests: small problems, tensors from arrays, comparisons.
module L2L.Tests.Helpers

open System
open TorchSharp
open L2L

/// The default backend (fused kernels, closed-form meta-gradients), with the runner's threads.
let backend = Backend.defaults

let f32 = torch.ScalarType.Float32
let f64 = torch.ScalarType.Float64

let tensorOf (xs: float[]) (dtype: torch.ScalarType) =
    use t = torch.tensor(xs)
    t.to_type(dtype)

let toArray = Tensors.toArray

/// φ's values, every tensor in order, as one array (for bit-for-bit comparisons).
let phiValues (phis: Phi list) = Phis.tensors phis |> List.map toArray |> Array.concat

let maxAbsDiff (a: float[]) (b: float[]) =
    Array.map2 (fun x y -> abs (x - y)) a b |> Array.fold max 0.0

/// φ for a config with a fixed seed, in a given dtype.
let phiOf (cfg: LstmConfig) (seed: int64) (dtype: torch.ScalarType) =
    use gen = Seeds.generator seed 0UL 0L
    Phi.init cfg torch.CPU dtype gen

let tinyLstm =
    { LstmConfig.paper with Hidden = 4 }

/// A small meta-training configuration (seconds, not minutes).
let smallMeta =
    { Defaults.quadratic with
        Task = Quadratic 4
        Lstm = { LstmConfig.paper with Hidden = 8 }
        Horizon = 20
        Unroll = { Unroll = 5; Weights = Uniform; SecondOrder = false; LogLoss = false }
        BatchFunctions = 16
        MetaIterations = 8
        ValidateEvery = 0
        ValidationFunctions = 64 }

/// Gradient values over many magnitudes and both signs, zero included.
let gradientGen =
    FsCheck.FSharp.Gen.oneof
        [ FsCheck.FSharp.Gen.constant 0.0
          FsCheck.FSharp.Gen.map2
              (fun (s: bool) (e: float) -> (if s then 1.0 else -1.0) * 10.0 ** e)
              (FsCheck.FSharp.ArbMap.generate FsCheck.FSharp.ArbMap.defaults)
              (FsCheck.FSharp.Gen.choose (-900, 300) |> FsCheck.FSharp.Gen.map (fun k -> float k / 30.0)) ]

/// A non-empty array of gradient values.
type Grads = Grads of float[]

type Arbs =
    static member Grads() =
        FsCheck.FSharp.Gen.arrayOf gradientGen
        |> FsCheck.FSharp.Gen.filter (fun a -> a.Length > 0)
        |> FsCheck.FSharp.Gen.map Grads
        |> FsCheck.FSharp.Arb.fromGen

let propConfig =
    { Expecto.FsCheckConfig.defaultConfig with
        maxTest = 60
        arbitrary = [ typeof<Arbs> ] }

/// A test that must not run beside others: it changes process-wide state (libtorch's thread count,
/// the kernels' register width or worker team) that would change other tests' float32 rounding.
/// Expecto runs such tests one at a time, after the parallel ones.
let testCaseSequenced (name: string) (f: unit -> unit) = Expecto.Tests.testSequenced (Expecto.Tests.testCase name f)

/// Runs f in a dispose scope that keeps nothing.
let scoped (f: unit -> 'T) : 'T =
    use _ = torch.NewDisposeScope()
    f ()
