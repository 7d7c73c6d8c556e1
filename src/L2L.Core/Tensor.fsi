namespace L2L

    type Tensor = TorchSharp.torch.Tensor

    /// Where every tensor of a run lives. `Auto` takes CUDA when libtorch reports it, else the CPU.
    type DeviceChoice =
        | Cpu
        | Cuda
        | Auto

    module DeviceChoice =

        val parse: s: string -> Result<DeviceChoice,string>

        val name: _arg1: DeviceChoice -> string

        /// The torch device for a choice. Asking for CUDA where libtorch has none is an error, not a fallback.
        val resolve: choice: DeviceChoice -> TorchSharp.torch.Device

    module Scope =

        /// Runs `f` in a fresh dispose scope; the tensors named by `keep` survive into the caller's scope,
        /// everything else created inside is disposed on return.
        val run: keep: ('T -> #seq<Tensor>) -> f: (unit -> 'T) -> 'T

        /// The tensors of `old` that `current` does not hold (reference identity), each once.
        val replaced: old: Tensor seq -> current: Tensor seq -> Tensor list

        /// Disposes the tensors of `old` that `current` does not hold (reference identity).
        /// Used by loops that replace a state each iteration while sharing some tensors with it.
        val disposeReplaced: old: Tensor seq -> current: Tensor seq -> unit

    /// Buffers recycled within a loop: `within` opens a pool on this thread for the loop's life,
    /// `empty` takes a buffer of the shape asked for from it (or allocates one, then the pool's), and
    /// `give` hands one back when the loop is done with it. glibc 2.36 does not reuse the freed blocks
    /// of libtorch's aligned allocations well: an evaluation loop that allocated m_φ's new state of
    /// [H; n] floats at every step and freed the old one grew the C heap by about 1.3 MiB per step
    /// (250 MiB/s on MNIST), every page of it faulted in fresh. Outside `within` `empty` is torch.empty.
    /// A pool of recycled buffers (see Spare).
    type SparePool

    module Spare =

        /// An uninitialised contiguous tensor, registered on the current dispose scope as a fresh one
        /// would be: a recycled buffer of this shape when the open pool has one.
        val empty:
          shape: int64 array ->
            dtype: TorchSharp.torch.ScalarType ->
            device: TorchSharp.torch.Device -> Tensor

        /// Hands t back to the open pool for reuse: the caller keeps no reference to it or to a view of
        /// it. Tensors the pool did not make, or given with no pool open, are disposed.
        val give: t: Tensor -> unit

        /// `Scope.disposeReplaced`, handing the replaced tensors back to the open pool.
        val giveReplaced: old: Tensor seq -> current: Tensor seq -> unit

        /// Runs f with a pool open on this thread (within an open pool: that one), then disposes what
        /// the pool holds.
        val within: f: (unit -> 'a) -> 'a

        /// A pool of one's own, for work that recycles buffers across calls rather than within one loop
        /// (an optimizer object stepped by its caller's loop).
        val pool: unit -> SparePool

        /// Runs f with `p` open on this thread; the pool open before (if any) is open again afterwards.
        val using: p: SparePool -> f: (unit -> 'a) -> 'a

        /// Disposes the buffers a pool holds for reuse (those handed out stay with their holders).
        val clear: p: SparePool -> unit

    /// Tensor operations with a float operand, safe to call from any thread.
    ///
    /// libtorch reads a TorchSharp `Scalar` through its native handle while an operation runs, and a
    /// Scalar frees that handle in its finalizer. A Scalar made for one call (an implicit conversion,
    /// or the `1` TorchSharp's own `add(t)` makes for alpha) is unreachable once its handle
    /// has been read, so a collection on another thread can finalize it while libtorch still reads it.
    /// Here every Scalar lives until the call has returned. Nothing in the library hands libtorch a
    /// Scalar any other way (a test reads the assemblies' code to check).
    [<AutoOpen>]
    module ScalarOps =

        type TorchSharp.torch.Tensor with

            /// t + u
            member Add: u: Tensor -> Tensor

            /// t + x
            member Add: x: float -> Tensor

            /// t − u
            member Sub: u: Tensor -> Tensor

            /// t − x
            member Sub: x: float -> Tensor

            /// t · x
            member Mul: x: float -> Tensor

            /// t / x
            member Div: x: float -> Tensor

            /// t ← t + u, in place
            member AddInPlace: u: Tensor -> Tensor

            /// t ← t + alpha · u, in place
            member AddInPlace: u: Tensor * alpha: float -> Tensor

            /// t ← t + x, in place
            member AddInPlace: x: float -> Tensor

            /// t ← t · x, in place
            member MulInPlace: x: float -> Tensor

            /// t ← x everywhere, in place
            member FillInPlace: x: float -> Tensor

            /// t + x · a · b
            member Addcmul: a: Tensor * b: Tensor * x: float -> Tensor

            /// t ≥ x, elementwise
            member Ge: x: float -> Tensor

            /// t > x, elementwise
            member Gt: x: float -> Tensor

            /// max(t, x), elementwise
            member ClampMin: x: float -> Tensor

            /// A tensor shaped like t, every element x
            member FullLike: x: float -> Tensor

    module Seeds =

        /// SplitMix64 finaliser: decorrelates seeds derived from one another (seed, stream, index).
        val mix64: z: uint64 -> uint64

        /// A seed for item `index` of stream `stream` under a run's seed: the same triple always gives
        /// the same seed, and no global RNG is involved.
        val derive: seed: int64 -> stream: uint64 -> index: int64 -> int64

        /// A CPU generator for that item. Random tensors are drawn on the CPU and then moved to the
        /// run's device, so a seed gives the same numbers on every device.
        val generator:
          seed: int64 ->
            stream: uint64 -> index: int64 -> TorchSharp.torch.Generator

    module Tensors =

        /// A float64 copy of a tensor's values on the host.
        val toArray: t: Tensor -> float array

        /// Builds tensors in a scope of their own: intermediates are freed, the results survive.
        val build: keep: ('T -> #seq<Tensor>) -> f: (unit -> 'T) -> 'T

        val scalar: t: Tensor -> float

        val isFinite: t: Tensor -> bool

        /// Shape check for the public functions: a programmer error, so an exception.
        val expectShape:
          what: string -> expected: int64 array -> t: Tensor -> unit

