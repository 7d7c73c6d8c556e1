/// The fused coordinatewise LSTM cell (L2L.Kernels) as a differentiable TorchSharp function: the
/// forward pass computes each coordinate's gates and state update in registers without writing the
/// [4H; n] pre-activation; the backward pass recomputes the gates (nothing but the cell's inputs is
/// saved) and leaves the reductions over coordinates to GEMMs. Float32, contiguous, CPU tensors.
module L2L.LstmKernel

#nowarn "9" // native pointers into tensor memory

open System
open System.Collections.Generic
open System.Runtime.InteropServices
open Microsoft.FSharp.NativeInterop
open TorchSharp
open L2L.Kernels

[<UnmanagedFunctionPointer(CallingConvention.Cdecl)>]
type private DataPtr = delegate of nativeint -> nativeint

/// THSTensor_data of the TorchSharp native library: the address of a tensor's first element.
let private dataPtr : Lazy<DataPtr option> =
    lazy
        (try
            let lib = NativeLibrary.Load("LibTorchSharp", typeof<torch.Tensor>.Assembly, Nullable())
            let fn = NativeLibrary.GetExport(lib, "THSTensor_data")
            Some(Marshal.GetDelegateForFunctionPointer<DataPtr> fn)
         with _ -> None)

/// Threads the kernel spreads coordinates over (0: TorchSharp's intra-op thread count).
let mutable threads = 0

/// The process's thread policy for n threads: the fused kernel spreads m_φ's coordinates over n
/// threads, and so does libtorch for its own operations, unless L2L_TORCH_THREADS sets libtorch's
/// count apart. With learned-optimizer work only, 1 is faster on few cores (the optimizee's
/// operations are small and waking libtorch's pool for each costs more than it saves: MNIST
/// evaluation on 2 cores 258–330 steps/s with 2, 368–376 with 1); with baselines to tune on whole
/// data sets, n is (the paper's MNIST experiments took about twice as long with 1).
let setThreads (n: int) =
    threads <- n
    let torchThreads =
        match Environment.GetEnvironmentVariable "L2L_TORCH_THREADS" with
        | null | "" -> n
        | t ->
            match Int32.TryParse t with
            | true, v when v >= 1 -> v
            | _ -> invalidArg "L2L_TORCH_THREADS" (sprintf "L2L_TORCH_THREADS must be a positive integer, not '%s'" t)
    torch.set_num_threads torchThreads

let private threadCount () = if threads > 0 then threads else torch.get_num_threads ()

/// Whether the fused kernel can run here (the native entry point it needs was found).
let available () = dataPtr.Force().IsSome

let private ptr (t: Tensor) : nativeptr<float32> =
    match dataPtr.Force() with
    | Some f -> NativePtr.ofNativeInt (f.Invoke t.Handle)
    | None -> invalidOp "the fused LSTM kernel is not available (THSTensor_data not found)"

/// Whether tensors can go through the kernel: float32, CPU.
let supports (ts: Tensor seq) =
    available ()
    && ts |> Seq.forall (fun t -> t.dtype = torch.ScalarType.Float32 && t.device_type = DeviceType.CPU)

let private layer (x: Tensor) (h: Tensor) (c: Tensor) (wih: Tensor) (whh: Tensor) (b: Tensor) =
    LstmLayer(h.shape[1], int x.shape[0], int h.shape[0], ptr x, ptr h, ptr c, ptr wih, ptr whh, ptr b)

/// Gradients handed to the autograd engine by the last backward call on this thread (the engine
/// copies them when the call returns).
let private returned = new System.Threading.ThreadLocal<Tensor list>(fun () -> [])

/// Releases the gradients the last backward call on this thread returned (idempotent).
let releaseReturned () =
    for t in returned.Value do
        t.Dispose()
    returned.Value <- []

/// The cell as an autograd function: inputs x [in; n], h, c [H; n], wih [4H; in], whh [4H; H],
/// b [4H; 1]; outputs h', c' [H; n].
type CellFunction() =
    inherit torch.autograd.MultiTensorFunction<CellFunction>()

    override _.Name = "CoordinatewiseLstmCell"

    override _.forward(ctx, vars) =
        let t (i: int) = vars[i] :?> Tensor
        let x, h, c, wih, whh, b = t 0, t 1, t 2, t 3, t 4, t 5
        let hOut = torch.empty_like(h)
        let cOut = torch.empty_like(c)
        let l = layer x h c wih whh b
        CoordinatewiseLstm.Forward(&l, ptr hOut, ptr cOut, threadCount ())
        ctx.save_for_backward(List<Tensor>([ x; h; c; wih; whh; b ]))
        List<Tensor>([ hOut; cOut ])

    override _.backward(ctx, grads) =
        use _ = torch.no_grad()
        // the previous call's results have been copied by the autograd engine by now
        releaseReturned ()
        let results =
            Scope.run (fun (ts: Tensor list) -> ts) (fun () ->
                let saved = ctx.get_saved_variables()
                let x, h, c, wih, whh, b = saved[0], saved[1], saved[2], saved[3], saved[4], saved[5]
                let dhOut = grads[0].contiguous()
                let dcOut = grads[1].contiguous()
                let dx = torch.empty_like(x)
                let dh = torch.empty_like(h)
                let dc = torch.empty_like(c)
                let dwih = torch.empty_like(wih)
                let dwhh = torch.empty_like(whh)
                let db = torch.empty_like(b)
                let l = layer x h c wih whh b
                CoordinatewiseLstm.Backward(&l, ptr dhOut, ptr dcOut, ptr dx, ptr dh, ptr dc, ptr dwih, ptr dwhh, ptr db, threadCount ())
                [ dx; dh; dc; dwih; dwhh; db ])
        // Memory: a truncation is differentiated once, so the saved inputs (whole [H; n] states of
        // every step) are released now rather than when the collector finalizes the context; the
        // incoming gradients' wrappers are released now; the results are handed to the engine and
        // released at the next call, so that no dispose scope holds every step's gradients.
        ctx.Dispose()
        for g in grads do
            if not (isNull g) then g.Dispose()
        for t in results do
            t.DetachFromDisposeScope() |> ignore
        returned.Value <- results
        List<Tensor>(results)

/// h', c' = the cell at (x, h, c) with weights (wih, whh, b), differentiable in all of them.
let cell (wih: Tensor) (whh: Tensor) (b: Tensor) (x: Tensor) (h: Tensor) (c: Tensor) : Tensor * Tensor =
    let outs =
        CellFunction.apply(x.contiguous(), h.contiguous(), c.contiguous(), wih.contiguous(), whh.contiguous(), b.contiguous())
    outs[0], outs[1]

/// m_φ's whole step in one kernel pass, for evaluation (no autograd graph): g [n] and the new
/// state from the raw gradient [n]. `logSignP` is the preprocessing's p (None: the identity).
let step (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (bOut: Tensor) (outScale: float) (logSignP: float option)
         (hs: Tensor list) (cs: Tensor list) (grad: Tensor) : Tensor * Tensor list * Tensor list =
    let grad = grad.contiguous()
    let n = grad.shape[0]
    let features = if logSignP.IsSome then 2L else 1L
    let x = torch.empty([| features; n |], dtype = grad.dtype, device = grad.device)
    let hs = hs |> List.map (fun t -> t.contiguous())
    let cs = cs |> List.map (fun t -> t.contiguous())
    let hOut = hs |> List.map (fun t -> torch.empty_like(t))
    let cOut = cs |> List.map (fun t -> torch.empty_like(t))
    let g = torch.empty([| n |], dtype = grad.dtype, device = grad.device)
    let addr (t: Tensor) = NativePtr.toNativeInt (ptr t)
    let weights = layers |> List.map (fun (wih: Tensor, whh: Tensor, b: Tensor) -> wih.contiguous(), whh.contiguous(), b.contiguous())
    let wOut = wOut.contiguous()
    CoordinatewiseLstm.Step(
        n, int (hs.Head.shape[0]), int features, defaultArg logSignP nan, ptr grad,
        hs |> List.map addr |> List.toArray, cs |> List.map addr |> List.toArray,
        weights |> List.map (fun (w, _, _) -> addr w) |> List.toArray,
        weights |> List.map (fun (_, w, _) -> addr w) |> List.toArray,
        weights |> List.map (fun (_, _, b) -> addr b) |> List.toArray,
        ptr wOut, ptr bOut, float32 outScale, ptr x, hOut |> List.map addr |> List.toArray,
        cOut |> List.map addr |> List.toArray, ptr g, threadCount ())
    g, hOut, cOut
