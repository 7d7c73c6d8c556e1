/// The fused coordinatewise LSTM cell (L2L.Kernels) as a differentiable TorchSharp function: the
/// forward pass computes each coordinate's gates and state update in registers without writing the
/// [4H; n] pre-activation; the backward pass recomputes the gates (nothing but the cell's inputs is
/// saved) and leaves the reductions over coordinates to GEMMs. Float32, contiguous, CPU tensors.
module internal L2L.LstmKernel

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

/// Whether the fused kernel can run here (the native entry point it needs was found).
let available () = dataPtr.Force().IsSome

/// The address of a tensor's first element (any element type; the tensor must stay alive while the
/// address is used).
let address (t: Tensor) : nativeint =
    match dataPtr.Force() with
    | Some f -> f.Invoke t.Handle
    | None -> invalidOp "the fused kernels are not available (THSTensor_data not found)"

let private ptr (t: Tensor) : nativeptr<float32> = NativePtr.ofNativeInt (address t)

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

/// One layer's fused backward into given tensors: from dL/dh', dL/dc' [H; n], writes the gradients
/// of its input x (into dx, skipped when dx is null), h and c (into dh, dc), and returns its
/// weights' gradients dwih, dwhh, db.
let private layerBackwardInto (threads: int) (x: Tensor) (h: Tensor) (c: Tensor) (wih: Tensor) (whh: Tensor) (b: Tensor)
                              (dhOut: Tensor) (dcOut: Tensor) (dx: Tensor) (dh: Tensor) (dc: Tensor) =
    let dhOut = dhOut.contiguous()
    let dcOut = dcOut.contiguous()
    let dwih = torch.empty_like(wih)
    let dwhh = torch.empty_like(whh)
    let db = torch.empty_like(b)
    let l = layer x h c wih whh b
    CoordinatewiseLstm.Backward(&l, ptr dhOut, ptr dcOut, (if isNull dx then NativePtr.nullPtr else ptr dx),
                                ptr dh, ptr dc, ptr dwih, ptr dwhh, ptr db, threads)
    dwih, dwhh, db

/// One layer's fused backward: from dL/dh', dL/dc' [H; n], the gradients of its input x (None when
/// `needDx` is false), h, c and its weights wih, whh, b.
let private layerBackward (threads: int) (x: Tensor) (h: Tensor) (c: Tensor) (wih: Tensor) (whh: Tensor) (b: Tensor)
                          (dhOut: Tensor) (dcOut: Tensor) (needDx: bool) =
    let dx = if needDx then torch.empty_like(x) else null
    let dh = torch.empty_like(h)
    let dc = torch.empty_like(c)
    let dwih, dwhh, db = layerBackwardInto threads x h c wih whh b dhOut dcOut dx dh dc
    dx, dh, dc, dwih, dwhh, db

/// Ends a backward call. Memory: a truncation is differentiated once, so the saved inputs (whole
/// [H; n] states of every step) are released now rather than when the collector finalizes the
/// context; the incoming gradients' wrappers are released now; the results are handed to the engine
/// and released at the next call, so that no dispose scope holds every step's gradients.
let private handOver (ctx: torch.autograd.AutogradContext) (grads: List<Tensor>) (results: Tensor list) =
    ctx.Dispose()
    for g in grads do
        if not (isNull g) then g.Dispose()
    for t in results do
        t.DetachFromDisposeScope() |> ignore
    returned.Value <- results

/// A backward call of the cells' autograd functions: `compute threads saved grads` gives the inputs'
/// gradients (in the order of the forward's inputs, the thread count's excepted), handed over.
let private backwardCall (ctx: torch.autograd.AutogradContext) (grads: List<Tensor>) (compute: int -> List<Tensor> -> List<Tensor> -> Tensor list) =
    use _ = torch.no_grad()
    // the previous call's results have been copied by the autograd engine by now
    releaseReturned ()
    let threads = ctx.get_data "threads" :?> int
    let results = Scope.run (fun (ts: Tensor list) -> ts) (fun () -> compute threads (ctx.get_saved_variables()) grads)
    handOver ctx grads results
    List<Tensor>(results @ [ null ])

/// The cell as an autograd function: inputs x [in; n], h, c [H; n], wih [4H; in], whh [4H; H],
/// b [4H; 1], then the boxed thread count; outputs h', c' [H; n].
type CellFunction() =
    inherit torch.autograd.MultiTensorFunction<CellFunction>()

    override _.Name = "CoordinatewiseLstmCell"

    override _.forward(ctx, vars) =
        let t (i: int) = vars[i] :?> Tensor
        let x, h, c, wih, whh, b = t 0, t 1, t 2, t 3, t 4, t 5
        let threads = vars[6] :?> int
        let hOut = torch.empty_like(h)
        let cOut = torch.empty_like(c)
        let l = layer x h c wih whh b
        CoordinatewiseLstm.Forward(&l, ptr hOut, ptr cOut, threads)
        ctx.save_for_backward(List<Tensor>([ x; h; c; wih; whh; b ]))
        ctx.save_data("threads", threads)
        List<Tensor>([ hOut; cOut ])

    override _.backward(ctx, grads) =
        backwardCall ctx grads (fun threads saved grads ->
            let dx, dh, dc, dwih, dwhh, db = layerBackward threads saved[0] saved[1] saved[2] saved[3] saved[4] saved[5] grads[0] grads[1] true
            [ dx; dh; dc; dwih; dwhh; db ])

let private gruLayer (x: Tensor) (h: Tensor) (wih: Tensor) (whh: Tensor) (b: Tensor) (bhn: Tensor) =
    GruLayer(h.shape[1], int x.shape[0], int h.shape[0], ptr x, ptr h, ptr wih, ptr whh, ptr b, ptr bhn)

/// The GRU cell's forward pass into a fresh h'.
let private gruForward (threads: int) (x: Tensor) (h: Tensor) (wih: Tensor) (whh: Tensor) (b: Tensor) (bhn: Tensor) =
    let hOut = torch.empty_like(h)
    let l = gruLayer x h wih whh b bhn
    CoordinatewiseGru.Forward(&l, ptr hOut, threads)
    hOut

/// The GRU cell as an autograd function: inputs x [in; n], h [H; n], wih [3H; in], whh [3H; H],
/// b [3H; 1], bhn [H; 1], then the boxed thread count; output h' [H; n].
type GruCellFunction() =
    inherit torch.autograd.MultiTensorFunction<GruCellFunction>()

    override _.Name = "CoordinatewiseGruCell"

    override _.forward(ctx, vars) =
        let t (i: int) = vars[i] :?> Tensor
        let x, h, wih, whh, b, bhn = t 0, t 1, t 2, t 3, t 4, t 5
        let threads = vars[6] :?> int
        let hOut = gruForward threads x h wih whh b bhn
        ctx.save_for_backward(List<Tensor>([ x; h; wih; whh; b; bhn ]))
        ctx.save_data("threads", threads)
        List<Tensor>([ hOut ])

    override _.backward(ctx, grads) =
        backwardCall ctx grads (fun threads saved grads ->
            let x, h, wih, whh, b, bhn = saved[0], saved[1], saved[2], saved[3], saved[4], saved[5]
            let dhOut = grads[0].contiguous()
            let dx, dh = torch.empty_like(x), torch.empty_like(h)
            let dwih, dwhh, db, dbhn = torch.empty_like(wih), torch.empty_like(whh), torch.empty_like(b), torch.empty_like(bhn)
            let l = gruLayer x h wih whh b bhn
            CoordinatewiseGru.Backward(&l, ptr dhOut, ptr dx, ptr dh, ptr dwih, ptr dwhh, ptr db, ptr dbhn, threads)
            [ dx; dh; dwih; dwhh; db; dbhn ])

/// h' = the GRU cell at (x, h) with weights (wih, whh, b, bhn), differentiable in all of them;
/// without autograd (evaluation) one forward pass.
let gruCell (threads: int) (wih: Tensor) (whh: Tensor) (b: Tensor) (bhn: Tensor) (x: Tensor) (h: Tensor) : Tensor =
    let x, h, wih, whh, b, bhn = x.contiguous(), h.contiguous(), wih.contiguous(), whh.contiguous(), b.contiguous(), bhn.contiguous()
    if torch.is_grad_enabled () && [ x; h; wih; whh; b; bhn ] |> List.exists (fun t -> t.requires_grad) then
        (GruCellFunction.apply(x, h, wih, whh, b, bhn, box threads))[0]
    else gruForward threads x h wih whh b bhn

/// h', c' = the cell at (x, h, c) with weights (wih, whh, b), differentiable in all of them.
let cell (threads: int) (wih: Tensor) (whh: Tensor) (b: Tensor) (x: Tensor) (h: Tensor) (c: Tensor) : Tensor * Tensor =
    let outs =
        CellFunction.apply(x.contiguous(), h.contiguous(), c.contiguous(), wih.contiguous(), whh.contiguous(), b.contiguous(), box threads)
    outs[0], outs[1]

/// m_φ's whole step in one kernel pass (no autograd) into given tensors: writes the new state
/// h'_l, c'_l [H; n] into hOut, cOut and the preprocessed features into x [features; n], returns g
/// [n], from the raw gradient [n] and the state h_l, c_l. `p`: the log-sign preprocessing's
/// parameter (NaN: the identity).
let private stepPassInto (threads: int) (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (bOut: Tensor) (outScale: float) (p: float)
                         (hs: Tensor list) (cs: Tensor list) (grad: Tensor) (x: Tensor) (hOut: Tensor list) (cOut: Tensor list) : Tensor =
    // p = +∞: `grad` is already the features [features; n] (computed outside, e.g. the moments'),
    // and `x` is that same tensor: the kernel reads it instead of preprocessing
    let given = Double.IsPositiveInfinity p
    if given && not (obj.ReferenceEquals(x, grad) || address x = address grad) then
        invalidArg "x" "with the features given, x is the features tensor itself"
    let grad = grad.contiguous()
    let x = if given then grad else x
    let n = if given then grad.shape[1] else grad.shape[0]
    let features = x.shape[0]
    let hs = hs |> List.map (fun t -> t.contiguous())
    let cs = cs |> List.map (fun t -> t.contiguous())
    let g = torch.empty([| n |], dtype = grad.dtype, device = grad.device)
    let weights = layers |> List.map (fun (wih: Tensor, whh: Tensor, b: Tensor) -> wih.contiguous(), whh.contiguous(), b.contiguous())
    let wOut = wOut.contiguous()
    CoordinatewiseLstm.Step(
        n, int (hs.Head.shape[0]), int features, (if given then nan else p), (if given then NativePtr.nullPtr else ptr grad),
        hs |> List.map address |> List.toArray, cs |> List.map address |> List.toArray,
        weights |> List.map (fun (w, _, _) -> address w) |> List.toArray,
        weights |> List.map (fun (_, w, _) -> address w) |> List.toArray,
        weights |> List.map (fun (_, _, b) -> address b) |> List.toArray,
        ptr wOut, ptr bOut, float32 outScale, ptr x, hOut |> List.map address |> List.toArray,
        cOut |> List.map address |> List.toArray, ptr g, threads)
    g

/// A contiguous tensor of t's shape, type and device (values undefined).
let private fresh (t: Tensor) = Spare.empty t.shape t.dtype t.device

/// The number of features m_φ's preprocessing gives a coordinate (`p`: NaN for the identity).
let private featureCount (p: float) = if Double.IsNaN p then 1L else 2L

/// Whether `p` says the features are given (+∞) rather than a gradient to preprocess.
let private featuresGiven (p: float) = Double.IsPositiveInfinity p

/// m_φ's whole step in one kernel pass (no autograd): g [n], h'_l, c'_l [H; n] and the preprocessed
/// features x [features; n], from the raw gradient [n] and the state h_l, c_l. `p`: the log-sign
/// preprocessing's parameter (NaN: the identity).
let private stepPass (threads: int) (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (bOut: Tensor) (outScale: float) (p: float)
                     (hs: Tensor list) (cs: Tensor list) (grad: Tensor) : Tensor * Tensor list * Tensor list * Tensor =
    let x = if featuresGiven p then grad.contiguous() else Spare.empty [| featureCount p; grad.shape[0] |] grad.dtype grad.device
    let hOut = hs |> List.map (fun t -> fresh t)
    let cOut = cs |> List.map (fun t -> fresh t)
    let g = stepPassInto threads layers wOut bOut outScale p hs cs grad x hOut cOut
    g, hOut, cOut, x

/// The adjoint of m_φ's whole step (`stepPass`) into given tensors, without autograd: from dL/dg [n]
/// and dL/dh'_l, dL/dc'_l [H; n], and what the forward pass read and wrote (x, h_l, c_l, h'_l),
/// writes dL/dh_l, dL/dc_l into dh, dc and returns dL/dφ in `Phi.tensors` order (wih_l, whh_l, b_l
/// for each layer, wout, bout). dhOut is consumed: overwritten with the total gradients of h'_l
/// (contiguous tensors of this module's making only); `scratch` [H; n] holds a layer's input
/// gradient. The output layer's products are GEMVs; each layer's backward is the fused kernel,
/// from the top.
let stepBackwardInto (threads: int) (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (outScale: float)
                     (x: Tensor) (hs: Tensor list) (cs: Tensor list) (hOut: Tensor list)
                     (dg: Tensor) (dhOut: Tensor list) (dcOut: Tensor list) (dh: Tensor list) (dc: Tensor list) (scratch: Tensor) : Tensor list =
    let k = List.length layers
    let n = x.shape[1]
    // g = s·(bout + wout·h'_top): its weights' gradients, and the top layer's dh' gains woutᵀ·s·dg
    let dgs = dg.contiguous().view(1L, n).Mul(outScale)
    let dWOut = torch.mm(dgs, (List.last hOut).t())
    let dBOut = dgs.sum().view(1L, 1L)
    dhOut[k - 1].addmm_(wOut.t(), dgs, 1.0f, 1.0f) |> ignore
    let dWeights = Array.create (3 * k) (null: Tensor)
    for l in k - 1 .. -1 .. 0 do
        let wih, whh, b = layers[l]
        // layer l's input is layer l − 1's output (the features for the first; ∇ carries no graph)
        let input = if l = 0 then x else hOut[l - 1]
        let dx = if l > 0 then scratch else null
        let dwih, dwhh, db = layerBackwardInto threads input hs[l] cs[l] wih whh b dhOut[l] dcOut[l] dx dh[l] dc[l]
        if l > 0 then dhOut[l - 1].AddInPlace(scratch) |> ignore
        dWeights[3 * l] <- dwih
        dWeights[3 * l + 1] <- dwhh
        dWeights[3 * l + 2] <- db
    List.ofArray dWeights @ [ dWOut; dBOut ]

/// The adjoint of m_φ's whole step (`stepPass`), without autograd: from dL/dg [n] and dL/dh'_l,
/// dL/dc'_l [H; n], and what the forward pass read and wrote (x, h_l, c_l, h'_l), returns dL/dh_l,
/// dL/dc_l, and dL/dφ in `Phi.tensors` order (wih_l, whh_l, b_l for each layer, wout, bout).
let stepBackward (threads: int) (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (outScale: float)
                 (x: Tensor) (hs: Tensor list) (cs: Tensor list) (hOut: Tensor list)
                 (dg: Tensor) (dhOut: Tensor list) (dcOut: Tensor list) : Tensor list * Tensor list * Tensor list =
    let dhTotal = dhOut |> List.map (fun t -> (fresh t).copy_(t))
    let dh = hs |> List.map (fun t -> fresh t)
    let dc = cs |> List.map (fun t -> fresh t)
    let scratch = fresh hs.Head
    let dPhi = stepBackwardInto threads layers wOut outScale x hs cs hOut dg dhTotal dcOut dh dc scratch
    scratch.Dispose()
    for t in dhTotal do
        t.Dispose()
    dh, dc, dPhi

/// `stepSaving` into given tensors: the new state into hOut, cOut and the features into x; returns g.
let stepInto (threads: int) (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (bOut: Tensor) (outScale: float) (logSignP: float option)
             (hs: Tensor list) (cs: Tensor list) (grad: Tensor) (x: Tensor) (hOut: Tensor list) (cOut: Tensor list) : Tensor =
    stepPassInto threads layers wOut bOut outScale (defaultArg logSignP nan) hs cs grad x hOut cOut

/// m_φ's whole step as one autograd function, for meta-training with second derivatives dropped
/// (∇ carries no graph): forward, one kernel pass (the preprocessing, every layer's cell, the output
/// layer); backward, the output layer's products, then each layer's fused backward from the top.
/// Saves the preprocessed features and each layer's input state and output h' (the next layer's
/// input). vars: grad [n]; h_l [H; n] for each layer; c_l for each layer; wih_l, whh_l, b_l for each
/// layer; wout [1; H]; bout [1; 1]; then the boxed settings: layers (int), outScale and p (float;
/// NaN: the identity preprocessing), threads (int). Outputs: g [n], then h'_l and c'_l for each layer.
type StepFunction() =
    inherit torch.autograd.MultiTensorFunction<StepFunction>()

    override _.Name = "CoordinatewiseLstmStep"

    override _.forward(ctx, vars) =
        let layers = vars[vars.Length - 4] :?> int
        let outScale = vars[vars.Length - 3] :?> float
        let p = vars[vars.Length - 2] :?> float
        let threads = vars[vars.Length - 1] :?> int
        let t (i: int) = vars[i] :?> Tensor
        let grad = t 0
        let hs = [ for l in 0 .. layers - 1 -> t (1 + l) ]
        let cs = [ for l in 0 .. layers - 1 -> t (1 + layers + l) ]
        let ws = [ for l in 0 .. layers - 1 -> t (1 + 2 * layers + 3 * l), t (2 + 2 * layers + 3 * l), t (3 + 2 * layers + 3 * l) ]
        let wOut = t (1 + 5 * layers)
        let bOut = t (2 + 5 * layers)
        let g, hOut, cOut, x = stepPass threads ws wOut bOut outScale p hs cs grad
        ctx.save_for_backward(List<Tensor>(x :: hs @ cs @ hOut @ (ws |> List.collect (fun (a, b, c) -> [ a; b; c ])) @ [ wOut ]))
        ctx.save_data("layers", layers)
        ctx.save_data("outScale", outScale)
        ctx.save_data("threads", threads)
        List<Tensor>(g :: List.collect id (List.map2 (fun h c -> [ h; c ]) hOut cOut))

    override _.backward(ctx, grads) =
        use _ = torch.no_grad()
        releaseReturned ()
        let layers = ctx.get_data "layers" :?> int
        let outScale = ctx.get_data "outScale" :?> float
        let threads = ctx.get_data "threads" :?> int
        let results =
            Scope.run (fun (ts: Tensor list) -> ts) (fun () ->
                let saved = ctx.get_saved_variables()
                let x = saved[0]
                let hs = [ for l in 0 .. layers - 1 -> saved[1 + l] ]
                let cs = [ for l in 0 .. layers - 1 -> saved[1 + layers + l] ]
                let hOut = [ for l in 0 .. layers - 1 -> saved[1 + 2 * layers + l] ]
                let ws = [ for l in 0 .. layers - 1 -> saved[1 + 3 * layers + 3 * l], saved[2 + 3 * layers + 3 * l], saved[3 + 3 * layers + 3 * l] ]
                let wOut = saved[1 + 6 * layers]
                let dh, dc, dPhi =
                    stepBackward threads ws wOut outScale x hs cs hOut grads[0]
                        [ for l in 0 .. layers - 1 -> grads[1 + 2 * l] ] [ for l in 0 .. layers - 1 -> grads[2 + 2 * l] ]
                dh @ dc @ dPhi)
        handOver ctx grads results
        // no gradient for ∇ and the four settings
        List<Tensor>((null: Tensor) :: results @ [ null; null; null; null ])

/// m_φ's whole step, differentiable in φ and the state (not in ∇): g [n] and the new state from the
/// raw gradient [n]. `logSignP` is the preprocessing's p (None: the identity).
let stepDifferentiable (threads: int) (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (bOut: Tensor) (outScale: float) (logSignP: float option)
                       (hs: Tensor list) (cs: Tensor list) (grad: Tensor) : Tensor * Tensor list * Tensor list =
    let c (t: Tensor) = t.contiguous() :> obj
    let vars =
        [| yield c grad
           for h in hs do yield c h
           for s in cs do yield c s
           for wih, whh, b in layers do
               yield c wih
               yield c whh
               yield c b
           yield c wOut
           yield c bOut
           yield box (List.length layers)
           yield box outScale
           yield box (defaultArg logSignP nan)
           yield box threads |]
    let outs = StepFunction.apply vars
    let k = List.length layers
    outs[0], [ for l in 0 .. k - 1 -> outs[1 + 2 * l] ], [ for l in 0 .. k - 1 -> outs[2 + 2 * l] ]

/// m_φ's whole step in one kernel pass, for evaluation (no autograd graph): g [n] and the new
/// state from the raw gradient [n]. `logSignP` is the preprocessing's p (None: the identity).
let step (threads: int) (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (bOut: Tensor) (outScale: float) (logSignP: float option)
         (hs: Tensor list) (cs: Tensor list) (grad: Tensor) : Tensor * Tensor list * Tensor list =
    let p = defaultArg logSignP nan
    let g, hOut, cOut, x = stepPass threads layers wOut bOut outScale p hs cs grad
    if not (featuresGiven p) then Spare.give x
    g, hOut, cOut

/// `step` that also returns the preprocessed features x [features; n], for `stepBackward`.
let stepSaving (threads: int) (layers: (Tensor * Tensor * Tensor) list) (wOut: Tensor) (bOut: Tensor) (outScale: float) (logSignP: float option)
               (hs: Tensor list) (cs: Tensor list) (grad: Tensor) : Tensor * Tensor list * Tensor list * Tensor =
    stepPass threads layers wOut bOut outScale (defaultArg logSignP nan) hs cs grad
