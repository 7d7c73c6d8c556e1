/// Tensor plumbing shared by the whole core: the Tensor alias, dispose scopes, recycled buffers,
/// devices, seeds. The only module that knows TorchSharp's disposal rules.
namespace L2L

open System
open System.Collections.Generic
open TorchSharp

type Tensor = torch.Tensor

/// Where every tensor of a run lives. `Auto` takes CUDA when libtorch reports it, else the CPU.
type DeviceChoice =
    | Cpu
    | Cuda
    | Auto

module DeviceChoice =
    let parse (s: string) =
        match s.Trim().ToLowerInvariant() with
        | "cpu" -> Ok Cpu
        | "cuda" -> Ok Cuda
        | "auto" -> Ok Auto
        | other -> Error(sprintf "unknown device '%s' (expected cpu, cuda or auto)" other)

    let name =
        function
        | Cpu -> "cpu"
        | Cuda -> "cuda"
        | Auto -> "auto"

    /// The torch device for a choice. Asking for CUDA where libtorch has none is an error, not a fallback.
    let resolve (choice: DeviceChoice) : torch.Device =
        match choice with
        | Cpu -> torch.CPU
        | Cuda ->
            if torch.cuda.is_available () then torch.CUDA
            else invalidOp "device 'cuda' was asked for, but this libtorch has no CUDA device"
        | Auto -> if torch.cuda.is_available () then torch.CUDA else torch.CPU

module Scope =
    /// Runs `f` in a fresh dispose scope; the tensors named by `keep` survive into the caller's scope,
    /// everything else created inside is disposed on return.
    let run (keep: 'T -> #seq<Tensor>) (f: unit -> 'T) : 'T =
        use scope = torch.NewDisposeScope()
        let r = f ()
        for t in keep r do
            t.MoveToOuterDisposeScope() |> ignore
        r

    /// The tensors of `old` that `current` does not hold (reference identity), each once.
    let replaced (old: seq<Tensor>) (current: seq<Tensor>) : Tensor list =
        let live = HashSet<Tensor>(current, HashIdentity.Reference)
        let seen = HashSet<Tensor>(HashIdentity.Reference)
        [ for t in old do
              if not (live.Contains t) && seen.Add t then yield t ]

    /// Disposes the tensors of `old` that `current` does not hold (reference identity).
    /// Used by loops that replace a state each iteration while sharing some tensors with it.
    let disposeReplaced (old: seq<Tensor>) (current: seq<Tensor>) =
        for t in replaced old current do
            if not t.IsInvalid then t.Dispose()

/// Buffers recycled within a loop: `within` opens a pool on this thread for the loop's life,
/// `empty` takes a buffer of the shape asked for from it (or allocates one, then the pool's), and
/// `give` hands one back when the loop is done with it. glibc 2.36 does not reuse the freed blocks
/// of libtorch's aligned allocations well: an evaluation loop that allocated m_φ's new state of
/// [H; n] floats at every step and freed the old one grew the C heap by about 1.3 MiB per step
/// (250 MiB/s on MNIST), every page of it faulted in fresh. Outside `within` `empty` is torch.empty.
/// A pool of recycled buffers (see Spare).
type SparePool =
    { Free: Dictionary<string, Stack<Tensor>>
      /// what `empty` allocated in this pool (nothing else is ever recycled)
      Ours: HashSet<Tensor> }

module Spare =
    let private active = new System.Threading.ThreadLocal<SparePool option>(fun () -> None)

    let private key (shape: int64[]) (dtype: torch.ScalarType) (device: torch.Device) =
        String.Join(",", shape) + "|" + string dtype + "|" + string device

    /// An uninitialised contiguous tensor, registered on the current dispose scope as a fresh one
    /// would be: a recycled buffer of this shape when the open pool has one.
    let empty (shape: int64[]) (dtype: torch.ScalarType) (device: torch.Device) : Tensor =
        match active.Value with
        | None -> torch.empty(shape, dtype = dtype, device = device)
        | Some pool ->
            match pool.Free.TryGetValue(key shape dtype device) with
            | true, free when free.Count > 0 ->
                let t = free.Pop()
                match torch.CurrentDisposeScope with
                | null -> ()
                | scope -> scope.Attach t
                t
            | _ ->
                let t = torch.empty(shape, dtype = dtype, device = device)
                pool.Ours.Add t |> ignore
                t

    /// Hands t back to the open pool for reuse: the caller keeps no reference to it or to a view of
    /// it. Tensors the pool did not make, or given with no pool open, are disposed.
    let give (t: Tensor) =
        if not t.IsInvalid then
            match active.Value with
            | Some pool when pool.Ours.Contains t ->
                t.DetachFromDisposeScope() |> ignore
                let k = key t.shape t.dtype t.device
                match pool.Free.TryGetValue k with
                | true, free -> free.Push t
                | _ ->
                    let free = Stack<Tensor>()
                    free.Push t
                    pool.Free[k] <- free
            | _ -> t.Dispose()

    /// `Scope.disposeReplaced`, handing the replaced tensors back to the open pool.
    let giveReplaced (old: seq<Tensor>) (current: seq<Tensor>) = Scope.replaced old current |> List.iter give

    /// A pool of one's own, for work that recycles buffers across calls rather than within one loop.
    let pool () : SparePool = { Free = Dictionary(); Ours = HashSet(HashIdentity.Reference) }

    /// Runs f with `p` open on this thread (the pool open before is open again afterwards).
    let using (p: SparePool) (f: unit -> 'a) : 'a =
        let before = active.Value
        active.Value <- Some p
        try
            f ()
        finally
            active.Value <- before

    /// Disposes the buffers a pool holds for reuse (those handed out stay with their holders).
    let clear (p: SparePool) =
        for free in p.Free.Values do
            for t in free do
                t.Dispose()
        p.Free.Clear()
        p.Ours.Clear()

    /// Runs f with a pool open on this thread (within an open pool: that one), then disposes what
    /// the pool holds.
    let within (f: unit -> 'a) : 'a =
        match active.Value with
        | Some _ -> f ()
        | None ->
            let p = pool ()
            try
                using p f
            finally
                clear p

/// Tensor operations with a float operand, safe to call from any thread.
///
/// libtorch reads a TorchSharp `Scalar` through its native handle while an operation runs, and a
/// Scalar frees that handle in its finalizer. A Scalar made for one call (an implicit conversion, or
/// the `1` TorchSharp's own `add(t)` makes for alpha) is unreachable once its handle has
/// been read, so a collection on another thread can finalize it while libtorch still reads it (seen
/// as "Expected false to be true" from `Scalar::toFloat`, or a wrong alpha). Here every Scalar lives
/// until the call has returned: it is disposed right after it, and tensor sums take a Scalar 1 held
/// for the life of the process. Nothing in the library hands libtorch a Scalar any other way (a
/// test reads the assemblies' code to check).
[<AutoOpen>]
module ScalarOps =
    let private one = lazy (Scalar.op_Implicit 1)

    let inline private withScalar (x: float) ([<InlineIfLambda>] f: Scalar -> Tensor) : Tensor =
        let s = Scalar.op_Implicit x
        try f s finally s.Dispose()

    type torch.Tensor with
        /// t + u
        member t.Add(u: Tensor) : Tensor = t.add(u, one.Value)
        /// t + x
        member t.Add(x: float) : Tensor = withScalar x (fun s -> t.add(s, one.Value))
        /// t − u
        member t.Sub(u: Tensor) : Tensor = t.sub(u)
        /// t − x
        member t.Sub(x: float) : Tensor = withScalar x (fun s -> t.sub(s))
        /// t · x
        member t.Mul(x: float) : Tensor = withScalar x (fun s -> t.mul(s))
        /// t / x
        member t.Div(x: float) : Tensor = withScalar x (fun s -> t.div(s))
        /// t ← t + u, in place
        member t.AddInPlace(u: Tensor) : Tensor = t.add_(u, one.Value)
        /// t ← t + alpha · u, in place
        member t.AddInPlace(u: Tensor, alpha: float) : Tensor = withScalar alpha (fun s -> t.add_(u, s))
        /// t ← t + x, in place
        member t.AddInPlace(x: float) : Tensor = withScalar x (fun s -> t.add_(s, one.Value))
        /// t ← t · x, in place
        member t.MulInPlace(x: float) : Tensor = withScalar x (fun s -> t.mul_(s))
        /// t ← x everywhere, in place
        member t.FillInPlace(x: float) : Tensor = withScalar x (fun s -> t.fill_(s))
        /// t + x · a · b
        member t.Addcmul(a: Tensor, b: Tensor, x: float) : Tensor = withScalar x (fun s -> t.addcmul(a, b, s))
        /// t ≥ x, elementwise
        member t.Ge(x: float) : Tensor = withScalar x (fun s -> t.ge(s))
        /// t > x, elementwise
        member t.Gt(x: float) : Tensor = withScalar x (fun s -> t.gt(s))
        /// max(t, x), elementwise
        member t.ClampMin(x: float) : Tensor = withScalar x (fun s -> t.clamp_min(s))
        /// A tensor shaped like t, every element x
        member t.FullLike(x: float) : Tensor = withScalar x (fun s -> torch.full_like(t, s))

module Seeds =
    /// SplitMix64 finaliser: decorrelates seeds derived from one another (seed, stream, index).
    let mix64 (z: uint64) =
        let z = (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
        let z = (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31)

    /// A seed for item `index` of stream `stream` under a run's seed: the same triple always gives
    /// the same seed, and no global RNG is involved.
    let derive (seed: int64) (stream: uint64) (index: int64) : int64 =
        let a = mix64 (uint64 seed + 0x9E3779B97F4A7C15UL * (stream + 1UL))
        int64 (mix64 (a + 0x9E3779B97F4A7C15UL * (uint64 index + 1UL)) &&& 0x7FFFFFFFFFFFFFFFUL)

    /// A CPU generator for that item. Random tensors are drawn on the CPU and then moved to the
    /// run's device, so a seed gives the same numbers on every device.
    let generator (seed: int64) (stream: uint64) (index: int64) =
        new torch.Generator(uint64 (derive seed stream index), torch.CPU)

module Tensors =
    /// A float64 copy of a tensor's values on the host.
    let toArray (t: Tensor) : float[] =
        Scope.run (fun _ -> Seq.empty<Tensor>) (fun () ->
            let c = t.detach().to_type(torch.ScalarType.Float64).cpu().contiguous()
            c.data<float>().ToArray())

    /// Builds tensors in a scope of their own: intermediates are freed, the results survive.
    let build (keep: 'T -> #seq<Tensor>) (f: unit -> 'T) : 'T = Scope.run keep f

    let scalar (t: Tensor) : float = t.ToDouble()

    let isFinite (t: Tensor) : bool =
        Scope.run (fun _ -> Seq.empty<Tensor>) (fun () -> torch.isfinite(t).all().ToBoolean())

    /// Shape check for the public functions: a programmer error, so an exception.
    let expectShape (what: string) (expected: int64[]) (t: Tensor) =
        if t.shape <> expected then
            invalidArg what (sprintf "%s: expected shape %A, got %A" what expected t.shape)
