/// The fused kernels behind m_φ (internal: `Lstm` chooses them through the backend).
module internal L2L.LstmKernel

/// Whether the fused kernel can run here (the native entry point it needs was found).
val available: unit -> bool

/// The address of a tensor's first element (any element type; the tensor must stay alive while the
/// address is used).
val address: t: Tensor -> nativeint

/// Whether tensors can go through the kernel: float32, CPU.
val supports: ts: Tensor seq -> bool

/// Releases the gradients the last backward call on this thread returned (idempotent).
val releaseReturned: unit -> unit

/// The cell as an autograd function: inputs x [in; n], h, c [H; n], wih [4H; in], whh [4H; H],
/// b [4H; 1], then the boxed thread count; outputs h', c' [H; n].
type CellFunction =
    inherit TorchSharp.torch.autograd.MultiTensorFunction<CellFunction>

    new: unit -> CellFunction

    override
      backward: ctx: TorchSharp.torch.autograd.AutogradContext *
                grads: System.Collections.Generic.List<TorchSharp.torch.Tensor> ->
                  System.Collections.Generic.List<TorchSharp.torch.Tensor>

    override
      forward: ctx: TorchSharp.torch.autograd.AutogradContext * vars: obj array ->
                 System.Collections.Generic.List<TorchSharp.torch.Tensor>

    override Name: string

/// h', c' = the cell at (x, h, c) with weights (wih, whh, b), differentiable in all of them.
val cell:
  threads: int ->
    wih: Tensor ->
    whh: Tensor ->
    b: Tensor -> x: Tensor -> h: Tensor -> c: Tensor -> Tensor * Tensor

/// The GRU cell as an autograd function: inputs x [in; n], h [H; n], wih [3H; in], whh [3H; H],
/// b [3H; 1], bhn [H; 1], then the boxed thread count; output h' [H; n].
type GruCellFunction =
    inherit TorchSharp.torch.autograd.MultiTensorFunction<GruCellFunction>

    new: unit -> GruCellFunction

    override
      backward: ctx: TorchSharp.torch.autograd.AutogradContext *
                grads: System.Collections.Generic.List<TorchSharp.torch.Tensor> ->
                  System.Collections.Generic.List<TorchSharp.torch.Tensor>

    override
      forward: ctx: TorchSharp.torch.autograd.AutogradContext * vars: obj array ->
                 System.Collections.Generic.List<TorchSharp.torch.Tensor>

    override Name: string

/// h' = the GRU cell at (x, h) with weights (wih, whh, b, bhn), differentiable in all of them;
/// without autograd (evaluation) one forward pass.
val gruCell:
  threads: int ->
    wih: Tensor ->
    whh: Tensor ->
    b: Tensor -> bhn: Tensor -> x: Tensor -> h: Tensor -> Tensor

/// The adjoint of m_φ's whole step (`stepPass`) into given tensors, without autograd: from dL/dg [n]
/// and dL/dh'_l, dL/dc'_l [H; n], and what the forward pass read and wrote (x, h_l, c_l, h'_l),
/// writes dL/dh_l, dL/dc_l into dh, dc and returns dL/dφ in `Phi.tensors` order (wih_l, whh_l, b_l
/// for each layer, wout, bout). dhOut is consumed: overwritten with the total gradients of h'_l
/// (contiguous tensors of this module's making only); `scratch` [H; n] holds a layer's input
/// gradient. The output layer's products are GEMVs; each layer's backward is the fused kernel,
/// from the top.
val stepBackwardInto:
  threads: int ->
    layers: (Tensor * Tensor * Tensor) list ->
    wOut: Tensor ->
    outScale: float ->
    x: Tensor ->
    hs: Tensor list ->
    cs: Tensor list ->
    hOut: Tensor list ->
    dg: Tensor ->
    dhOut: Tensor list ->
    dcOut: Tensor list ->
    dh: Tensor list -> dc: Tensor list -> scratch: Tensor -> Tensor list

/// The adjoint of m_φ's whole step (`stepPass`), without autograd: from dL/dg [n] and dL/dh'_l,
/// dL/dc'_l [H; n], and what the forward pass read and wrote (x, h_l, c_l, h'_l), returns dL/dh_l,
/// dL/dc_l, and dL/dφ in `Phi.tensors` order (wih_l, whh_l, b_l for each layer, wout, bout).
val stepBackward:
  threads: int ->
    layers: (Tensor * Tensor * Tensor) list ->
    wOut: Tensor ->
    outScale: float ->
    x: Tensor ->
    hs: Tensor list ->
    cs: Tensor list ->
    hOut: Tensor list ->
    dg: Tensor ->
    dhOut: Tensor list ->
    dcOut: Tensor list -> Tensor list * Tensor list * Tensor list

/// `stepSaving` into given tensors: the new state into hOut, cOut and the features into x; returns g.
val stepInto:
  threads: int ->
    layers: (Tensor * Tensor * Tensor) list ->
    wOut: Tensor ->
    bOut: Tensor ->
    outScale: float ->
    logSignP: float option ->
    hs: Tensor list ->
    cs: Tensor list ->
    grad: Tensor ->
    x: Tensor -> hOut: Tensor list -> cOut: Tensor list -> Tensor

/// m_φ's whole step as one autograd function, for meta-training with second derivatives dropped
/// (∇ carries no graph): forward, one kernel pass (the preprocessing, every layer's cell, the output
/// layer); backward, the output layer's products, then each layer's fused backward from the top.
/// Saves the preprocessed features and each layer's input state and output h' (the next layer's
/// input). vars: grad [n]; h_l [H; n] for each layer; c_l for each layer; wih_l, whh_l, b_l for each
/// layer; wout [1; H]; bout [1; 1]; then the boxed settings: layers (int), outScale and p (float;
/// NaN: the identity preprocessing), threads (int). Outputs: g [n], then h'_l and c'_l for each layer.
type StepFunction =
    inherit TorchSharp.torch.autograd.MultiTensorFunction<StepFunction>

    new: unit -> StepFunction

    override
      backward: ctx: TorchSharp.torch.autograd.AutogradContext *
                grads: System.Collections.Generic.List<TorchSharp.torch.Tensor> ->
                  System.Collections.Generic.List<TorchSharp.torch.Tensor>

    override
      forward: ctx: TorchSharp.torch.autograd.AutogradContext * vars: obj array ->
                 System.Collections.Generic.List<TorchSharp.torch.Tensor>

    override Name: string

/// m_φ's whole step, differentiable in φ and the state (not in ∇): g [n] and the new state from the
/// raw gradient [n]. `logSignP` is the preprocessing's p (None: the identity;
/// Some +∞: `grad` is the features [features; n] already, computed outside, e.g. the moments').
val stepDifferentiable:
  threads: int ->
    layers: (Tensor * Tensor * Tensor) list ->
    wOut: Tensor ->
    bOut: Tensor ->
    outScale: float ->
    logSignP: float option ->
    hs: Tensor list ->
    cs: Tensor list -> grad: Tensor -> Tensor * Tensor list * Tensor list

/// m_φ's whole step in one kernel pass, for evaluation (no autograd graph): g [n] and the new
/// state from the raw gradient [n]. `logSignP` is the preprocessing's p (None: the identity;
/// Some +∞: `grad` is the features [features; n] already, computed outside, e.g. the moments').
val step:
  threads: int ->
    layers: (Tensor * Tensor * Tensor) list ->
    wOut: Tensor ->
    bOut: Tensor ->
    outScale: float ->
    logSignP: float option ->
    hs: Tensor list ->
    cs: Tensor list -> grad: Tensor -> Tensor * Tensor list * Tensor list

/// `step` that also returns the preprocessed features x [features; n], for `stepBackward`.
val stepSaving:
  threads: int ->
    layers: (Tensor * Tensor * Tensor) list ->
    wOut: Tensor ->
    bOut: Tensor ->
    outScale: float ->
    logSignP: float option ->
    hs: Tensor list ->
    cs: Tensor list ->
    grad: Tensor -> Tensor * Tensor list * Tensor list * Tensor

