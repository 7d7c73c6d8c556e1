/// m_φ: the coordinatewise two-layer LSTM of the paper (§2.1, §3), or a GRU, or the LSTM with global
/// averaging cells (the paper's appendix). One set of weights φ is shared by every coordinate; each
/// coordinate has its own state. Coordinates are the batch dimension, so the same φ runs on any
/// number n of coordinates. Tensors are feature-major: states are [H; n], so each gate block of a
/// layer's pre-activation [4H; n] (3H for the GRU) is a contiguous slab.
namespace L2L

open System
open TorchSharp

/// The cell m_φ is built from.
[<RequireQualifiedAccess>]
type Architecture =
    /// The paper's LSTM (PyTorch's LSTMCell): gates i, f, g, o; h and c per layer.
    | Lstm
    /// A GRU (PyTorch's GRUCell): gates r, z, n; h per layer.
    | Gru
    /// The LSTM with global averaging cells (the paper's appendix): the first `Averaged` cells of
    /// each layer pass on, as their h, the mean of their h over the coordinates of one function.
    | LstmGac
    /// An LSTM+GAC controller with an external memory per function (the paper's appendix): read heads
    /// give vectors r, write heads pairs (a, b); M_{t+1} = M_t + Σ_w a_w b_wᵀ / n_f over the last
    /// `MemorySteps` steps, and the read results M_t·r are the controller's extra inputs at t + 1.
    | NtmBfgs

module Architecture =
    let all = [ Architecture.Lstm; Architecture.Gru; Architecture.LstmGac; Architecture.NtmBfgs ]

    /// The name in files and on the command line: lstm, gru, lstm-gac, ntm-bfgs.
    let name (a: Architecture) =
        match a with
        | Architecture.Lstm -> "lstm"
        | Architecture.Gru -> "gru"
        | Architecture.LstmGac -> "lstm-gac"
        | Architecture.NtmBfgs -> "ntm-bfgs"

    let parse (s: string) : Result<Architecture, string> =
        match all |> List.tryFind (fun a -> name a = s) with
        | Some a -> Ok a
        | None -> Error(sprintf "unknown architecture '%s' (expected one of %s)" s (all |> List.map name |> String.concat ", "))

    /// Gates per layer: 4 for the LSTMs, 3 for the GRU.
    let gates (a: Architecture) = if a = Architecture.Gru then 3 else 4

    /// Whether each layer keeps a cell state c beside h.
    let hasCellState (a: Architecture) = a <> Architecture.Gru

    /// Whether the layers have global averaging cells (lstm-gac, and ntm-bfgs's controller).
    let averages (a: Architecture) = a = Architecture.LstmGac || a = Architecture.NtmBfgs

/// Hyper-parameters of m_φ (what a saved optimizer records).
type LstmConfig =
    { Architecture: Architecture
      Layers: int
      Hidden: int
      Preprocessing: Preprocessing
      /// g is multiplied by this (0.1 in the paper's setup).
      OutScale: float
      /// Added to the forget-gate bias at initialisation (the GRU's update gate z, its keep gate).
      ForgetBias: float
      /// Global averaging cells per layer (lstm-gac and ntm-bfgs; 0 otherwise).
      Averaged: int
      /// ntm-bfgs: read heads (0 otherwise).
      Reads: int
      /// ntm-bfgs: write heads (0 otherwise).
      Writes: int
      /// ntm-bfgs: the steps whose writes the memory holds (0 otherwise). Beyond them the oldest
      /// writes are dropped (the paper's NTM-L-BFGS); within them the memory is NTM-BFGS's exactly.
      MemorySteps: int }

module LstmConfig =
    let paper =
        { Architecture = Architecture.Lstm
          Layers = 2
          Hidden = 20
          Preprocessing = LogSign 10.0
          OutScale = 0.1
          ForgetBias = 1.0
          Averaged = 0
          Reads = 0
          Writes = 0
          MemorySteps = 0 }

    /// The averaging cells lstm-gac and ntm-bfgs take when none are named: a quarter of each layer,
    /// at least two (the paper's BFGS construction needs 2) where there are as many.
    let defaultAveraged (hidden: int) = min hidden (max 2 (hidden / 4))

    /// ntm-bfgs's heads when none are named: one read head and three write heads, the numbers with
    /// which the paper says NTM-BFGS can simulate BFGS.
    let defaultReads = 1
    let defaultWrites = 3

    /// ntm-bfgs's memory when none is named: the writes of the last 100 steps (the paper's horizon).
    let defaultMemorySteps = 100

    /// The configuration for an architecture: the fields it requires at their defaults where unset
    /// (0), and those it has not at 0.
    let withArchitecture (a: Architecture) (c: LstmConfig) =
        let pick (yes: bool) (v: int) (d: int) = if not yes then 0 elif v > 0 then v else d
        let ntm = a = Architecture.NtmBfgs
        { c with
            Architecture = a
            Averaged = pick (Architecture.averages a) c.Averaged (defaultAveraged c.Hidden)
            Reads = pick ntm c.Reads defaultReads
            Writes = pick ntm c.Writes defaultWrites
            MemorySteps = pick ntm c.MemorySteps defaultMemorySteps }

    let validate (c: LstmConfig) : Result<LstmConfig, string list> =
        [ if c.Layers < 1 || c.Layers > 100 then "layers must be from 1 to 100"
          if c.Hidden < 1 || c.Hidden > 100_000 then "hidden must be from 1 to 100,000"
          if Architecture.averages c.Architecture then
              if c.Averaged < 1 || c.Averaged > c.Hidden then sprintf "averaged cells must be from 1 to hidden (%d)" c.Hidden
          elif c.Averaged <> 0 then "averaged cells are for lstm-gac and ntm-bfgs only"
          if c.Architecture = Architecture.NtmBfgs then
              if c.Reads < 1 || c.Reads > 100 then "read heads must be from 1 to 100"
              if c.Writes < 1 || c.Writes > 100 then "write heads must be from 1 to 100"
              if c.MemorySteps < 1 || c.MemorySteps > 100_000 then "memory steps must be from 1 to 100,000"
          elif c.Reads <> 0 || c.Writes <> 0 || c.MemorySteps <> 0 then "read and write heads and memory steps are for ntm-bfgs only"
          if not (Double.IsFinite c.OutScale) || c.OutScale <= 0.0 then "out-scale must be a positive number"
          if not (Double.IsFinite c.ForgetBias) then "forget-bias must be finite"
          yield! Preprocess.problems c.Preprocessing ]
        |> function
            | [] -> Ok c
            | errs -> Error errs

/// One layer's weights in PyTorch's layout: LSTMCell's gate order (i, f, g, o) with one bias (b_ih +
/// b_hh), or GRUCell's (r, z, n) with the biases of r and z summed and the hidden side's bias of n
/// apart (it sits inside r ⊙ (W_hn·h + b_hn)).
type LayerWeights =
    { /// [G·H; in], G = 4 (LSTM) or 3 (GRU)
      Wih: Tensor
      /// [G·H; H]
      Whh: Tensor
      /// [G·H; 1] (a column, broadcast over coordinates)
      B: Tensor
      /// GRU only: b_hn [H; 1]
      Bhn: Tensor option }

/// ntm-bfgs's heads: the read vectors r, then the write vectors a, then b, as one linear layer on
/// the controller's top h.
type HeadWeights =
    { /// [R + 2W; H]
      W: Tensor
      /// [R + 2W; 1]
      B: Tensor }

/// φ: the parameters of m_φ, the only thing meta-training changes.
type Phi =
    { Config: LstmConfig
      Layers: LayerWeights list
      /// [1; H]
      WOut: Tensor
      /// [1; 1]
      BOut: Tensor
      /// ntm-bfgs only
      Heads: HeadWeights option }

/// The per-coordinate recurrent state: per layer h, each [H; n], and c (the LSTMs; empty for the GRU).
type LstmState =
    { H: Tensor list
      C: Tensor list
      /// ntm-bfgs: the last read results i [R; n], the memory's write vectors a and b [S·W; n] of the
      /// last S steps (the oldest first); empty for the others.
      Memory: Tensor list
      /// The preprocessing's own state (Preprocess.zeros: the moments' averages and bias
      /// corrections); empty for the stateless ones.
      Stats: Tensor list
      /// θ holds this many functions' coordinates, in equal contiguous blocks (a meta-batch): the
      /// averaging cells and the memory work within each block, never across functions.
      Functions: int }

module Phi =
    let private perLayer (c: LstmConfig) = if c.Architecture = Architecture.Gru then 4 else 3

    let private hasHeads (c: LstmConfig) = c.Architecture = Architecture.NtmBfgs

    /// Tensors per φ of configuration c.
    let tensorCount (c: LstmConfig) = perLayer c * c.Layers + 2 + (if hasHeads c then 2 else 0)

    /// Inputs of the first layer: the preprocessed gradient's features (and ntm-bfgs's read results).
    let inputs (c: LstmConfig) = Preprocess.features c.Preprocessing + c.Reads

    /// φ's tensors in a fixed order (the order of `names`).
    let tensors (phi: Phi) : Tensor list =
        [ for l in phi.Layers do
              yield l.Wih
              yield l.Whh
              yield l.B
              match l.Bhn with
              | Some b -> yield b
              | None -> ()
          yield phi.WOut
          yield phi.BOut
          match phi.Heads with
          | Some h ->
              yield h.W
              yield h.B
          | None -> () ]

    /// Names of φ's tensors, as in the saved format: w_ih.k, w_hh.k, b.k (and b_hn.k for the GRU),
    /// w_out, b_out.
    let names (c: LstmConfig) : string list =
        [ for k in 0 .. c.Layers - 1 do
              yield sprintf "w_ih.%d" k
              yield sprintf "w_hh.%d" k
              yield sprintf "b.%d" k
              if c.Architecture = Architecture.Gru then yield sprintf "b_hn.%d" k
          yield "w_out"
          yield "b_out"
          if hasHeads c then
              yield "w_heads"
              yield "b_heads" ]

    /// Shapes of φ's tensors in the saved format (b.k as [G·H], b_hn.k as [H], b_out as [1], b_heads
    /// as [R + 2W]).
    let savedShapes (c: LstmConfig) : int64[] list =
        let h = int64 c.Hidden
        let g = int64 (Architecture.gates c.Architecture)
        [ for k in 0 .. c.Layers - 1 do
              let inputs = if k = 0 then int64 (inputs c) else h
              yield [| g * h; inputs |]
              yield [| g * h; h |]
              yield [| g * h |]
              if c.Architecture = Architecture.Gru then yield [| h |]
          yield [| 1L; h |]
          yield [| 1L |]
          if hasHeads c then
              yield [| int64 (c.Reads + 2 * c.Writes); h |]
              yield [| int64 (c.Reads + 2 * c.Writes) |] ]

    /// Shapes of φ's tensors as `tensors` holds them (the biases as columns: [G·H; 1], [H; 1], [1; 1]).
    let shapes (c: LstmConfig) : int64[] list =
        savedShapes c |> List.map (fun s -> if s.Length = 1 then [| s[0]; 1L |] else s)

    /// Rebuilds φ from tensors in the order of `tensors` (shapes as in `tensors`).
    let ofTensors (c: LstmConfig) (ts: Tensor list) : Phi =
        let arr = List.toArray ts
        let per = perLayer c
        if arr.Length <> tensorCount c then
            invalidArg "ts" (sprintf "expected %d tensors for %d %s layers, got %d" (tensorCount c) c.Layers (Architecture.name c.Architecture) arr.Length)
        { Config = c
          Layers =
            [ for k in 0 .. c.Layers - 1 ->
                  { Wih = arr[per * k]
                    Whh = arr[per * k + 1]
                    B = arr[per * k + 2]
                    Bhn = if per = 4 then Some arr[per * k + 3] else None } ]
          WOut = arr[per * c.Layers]
          BOut = arr[per * c.Layers + 1]
          Heads = if hasHeads c then Some { W = arr[per * c.Layers + 2]; B = arr[per * c.Layers + 3] } else None }

    /// Maps every tensor of φ (e.g. a detach, a copy, an update).
    let map (f: Tensor -> Tensor) (phi: Phi) : Phi = ofTensors phi.Config (tensors phi |> List.map f)

    /// Number of scalar parameters in φ.
    let count (phi: Phi) = tensors phi |> List.sumBy (fun t -> int (t.numel()))

    /// A fresh φ: weights U(−1/√H, 1/√H) like PyTorch's LSTMCell and GRUCell, forget-gate bias (the
    /// GRU's update gate z) + ForgetBias, output weights U(−1/√H, 1/√H) and output bias 0 (ntm-bfgs's
    /// heads likewise, drawn last). Leaves that require grad.
    let init (c: LstmConfig) (device: torch.Device) (dtype: torch.ScalarType) (gen: torch.Generator) : Phi =
      Tensors.build tensors (fun () ->
        let bound = 1.0 / sqrt (float c.Hidden)
        let h = int64 c.Hidden
        let g = int64 (Architecture.gates c.Architecture)
        let uniform (shape: int64[]) =
            let u = torch.rand(shape, dtype = torch.ScalarType.Float64, generator = gen)
            u.Mul(2.0 * bound).Sub(bound).to_type(dtype).``to``(device)
        let leaf (t: Tensor) = t.requires_grad_(true)
        let layers =
            [ for k in 0 .. c.Layers - 1 ->
                  let inputs = if k = 0 then int64 (inputs c) else h
                  let wih = uniform [| g * h; inputs |]
                  let whh = uniform [| g * h; h |]
                  let b = uniform [| g * h; 1L |]
                  // the LSTM's forget gate is its second block, the GRU's update gate z too
                  let keep = b.narrow(0L, h, h)
                  keep.AddInPlace(c.ForgetBias) |> ignore
                  let bhn = if c.Architecture = Architecture.Gru then Some(leaf (uniform [| h; 1L |])) else None
                  { Wih = leaf wih; Whh = leaf whh; B = leaf b; Bhn = bhn } ]
        let wOut = leaf (uniform [| 1L; h |])
        let bOut = leaf (torch.zeros([| 1L; 1L |], dtype = dtype, device = device))
        let heads =
            if hasHeads c then
                let p = int64 (c.Reads + 2 * c.Writes)
                Some { W = leaf (uniform [| p; h |]); B = leaf (torch.zeros([| p; 1L |], dtype = dtype, device = device)) }
            else None
        { Config = c
          Layers = layers
          WOut = wOut
          BOut = bOut
          Heads = heads })

module internal PhiKernel =
    /// Whether the whole-step kernels (`LstmKernel.step*`, the closed-form meta-gradient's) compute
    /// this φ: the paper's LSTM only; the other architectures fuse their cells alone.
    let wholeStep (phi: Phi) = phi.Config.Architecture = Architecture.Lstm

    /// φ's layers as the fused kernel takes them: (wih, whh, b) per layer.
    let layers (phi: Phi) = [ for l in phi.Layers -> l.Wih, l.Whh, l.B ]

    /// The kernel's preprocessing parameter: p of the log-sign preprocessing, None for the identity.
    let logSignP (phi: Phi) =
        match phi.Config.Preprocessing with
        | LogSign p -> Some p
        | Identity -> None
        // the moments keep a state: computed outside, handed to the kernel as its features
        | NormalizedMoments _ -> Some Double.PositiveInfinity

/// Several φ side by side (one per coordinate group of a task), as one list of tensors.
module Phis =
    let tensors (phis: Phi list) : Tensor list = phis |> List.collect Phi.tensors

    /// Rebuilds `count` φ of configuration c from the tensors of `tensors`, in order.
    let ofTensors (c: LstmConfig) (count: int) (ts: Tensor list) : Phi list =
        let per = Phi.tensorCount c
        if ts.Length <> count * per then
            invalidArg "ts" (sprintf "expected %d tensors for %d optimizers of %d layers, got %d" (count * per) count c.Layers ts.Length)
        [ for k in 0 .. count - 1 -> Phi.ofTensors c (ts |> List.skip (k * per) |> List.take per) ]

module LstmState =
    /// Zero state for n coordinates of `functions` functions (equal contiguous blocks of θ).
    let zeros (phi: Phi) (functions: int) (n: int64) : LstmState =
        if functions < 1 || n % int64 functions <> 0L then
            invalidArg "functions" (sprintf "%d coordinates do not split into %d functions" n functions)
        let mk () =
            torch.zeros([| int64 phi.Config.Hidden; n |], dtype = phi.WOut.dtype, device = phi.WOut.device)
        let c = phi.Config
        let rows (r: int) = torch.zeros([| int64 r; n |], dtype = phi.WOut.dtype, device = phi.WOut.device)
        { H = [ for _ in 1 .. c.Layers -> mk () ]
          C = if Architecture.hasCellState c.Architecture then [ for _ in 1 .. c.Layers -> mk () ] else []
          Memory =
            if c.Architecture = Architecture.NtmBfgs then
                [ rows c.Reads; rows (c.MemorySteps * c.Writes); rows (c.MemorySteps * c.Writes) ]
            else []
          Stats = Preprocess.zeros c.Preprocessing n phi.WOut.dtype phi.WOut.device
          Functions = functions }

    let tensors (s: LstmState) = s.H @ s.C @ s.Memory @ s.Stats

    /// Rebuilds a state of configuration c from the tensors of `tensors`.
    let ofTensors (c: LstmConfig) (functions: int) (ts: Tensor list) =
        let k = c.Layers
        let cs = if Architecture.hasCellState c.Architecture then k else 0
        let memory = if c.Architecture = Architecture.NtmBfgs then 3 else 0
        let stats = match c.Preprocessing with NormalizedMoments _ -> 2 | _ -> 0
        if ts.Length <> k + cs + memory + stats then
            invalidArg "ts" (sprintf "%d tensors are not the state of a %d-layer %s" ts.Length k (Architecture.name c.Architecture))
        if functions < 1 || ts.Head.shape[1] % int64 functions <> 0L then
            invalidArg "functions" (sprintf "%d coordinates do not split into %d functions" ts.Head.shape[1] functions)
        { H = List.take k ts
          C = ts |> List.skip k |> List.take cs
          Memory = ts |> List.skip (k + cs) |> List.take memory
          Stats = ts |> List.skip (k + cs + memory)
          Functions = functions }

    /// The same state with each tensor replaced by f.
    let map (f: Tensor -> Tensor) (s: LstmState) =
        { s with H = s.H |> List.map f; C = s.C |> List.map f; Memory = s.Memory |> List.map f; Stats = s.Stats |> List.map f }

    let detach (s: LstmState) = map (fun t -> t.detach()) s

/// The global averaging of lstm-gac (the paper's appendix): a layer's first `cells` rows of h' [H; n]
/// replaced by their mean over the coordinates of each function, so every coordinate of a function
/// reads the same value from them. Symmetric in the coordinates of a function; no parameters.
module GlobalAverage =
    /// h: [H; n], θ of `functions` functions in equal contiguous blocks -> [H; n]
    let apply (cells: int) (functions: int) (h: Tensor) : Tensor =
        let hidden = h.shape[0]
        let n = h.shape[1]
        let c = int64 cells
        let avg = h.narrow(0L, 0L, c).reshape(c, int64 functions, n / int64 functions)
        let mean = avg.mean([| 2L |], keepdim = true).expand(c, int64 functions, n / int64 functions).reshape(c, n)
        if c = hidden then mean else torch.cat([| mean; h.narrow(0L, c, hidden - c) |], 0L)

/// ntm-bfgs's external memory, one per function, held as the write vectors of its last S steps:
/// M = Σ_k a_k b_kᵀ / n_f over the rows k of A, B [K; n] (K = S·W), restricted to one function's n_f
/// coordinates. Reading it costs O(K·n), never O(n²); within S steps it is the dense memory exactly.
module Memory =
    /// i = M·r per function, for each read vector: Σ_k a_k (b_k · r) / n_f.
    /// a, b: [K; n], r: [R; n] -> [R; n]
    let read (functions: int) (a: Tensor) (b: Tensor) (r: Tensor) : Tensor =
        let n = r.shape[1]
        let f = int64 functions
        let per = n / f
        let k = a.shape[0]
        let reads = r.shape[0]
        let dots = torch.einsum("kfj,qfj->kqf", b.view(k, f, per), r.view(reads, f, per)).Div(float per)
        torch.einsum("kfj,kqf->qfj", a.view(k, f, per), dots).reshape(reads, n)

    /// The memory after one step's writes: its oldest W rows dropped, the new a and b [W; n] appended.
    let write (a: Tensor) (b: Tensor) (aNew: Tensor) (bNew: Tensor) : Tensor * Tensor =
        let w = aNew.shape[0]
        let keep = a.shape[0] - w
        torch.cat([| a.narrow(0L, w, keep); aNew |], 0L), torch.cat([| b.narrow(0L, w, keep); bNew |], 0L)

/// m_φ in straight TorchSharp operations: any device and dtype, differentiable to any order. The
/// definition the fused kernel (LstmKernel) is tested against; `Lstm` chooses between the two.
module LstmReference =
    /// One LSTM cell on feature-major tensors.
    /// x: [in; n], h, c: [H; n] -> h', c': [H; n]
    let cell (w: LayerWeights) (x: Tensor) (h: Tensor) (c: Tensor) : Tensor * Tensor =
        // gates: [4H; n] = B + Wih·x + Whh·h
        let gates = torch.addmm(torch.addmm(w.B, w.Wih, x, 1.0f, 1.0f), w.Whh, h, 1.0f, 1.0f)
        let parts = gates.chunk(4L, 0L)
        let i = parts[0].sigmoid()
        let f = parts[1].sigmoid()
        let g = parts[2].tanh()
        let o = parts[3].sigmoid()
        let c' = f.mul(c).Add(i.mul(g))
        let h' = o.mul(c'.tanh())
        h', c'

    /// One GRU cell on feature-major tensors (PyTorch's GRUCell): r = σ(W_ir·x + W_hr·h + b_r),
    /// z = σ(W_iz·x + W_hz·h + b_z), n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
    /// x: [in; n], h: [H; n] -> h': [H; n]
    let gruCell (w: LayerWeights) (x: Tensor) (h: Tensor) : Tensor =
        let bhn =
            match w.Bhn with
            | Some b -> b
            | None -> invalidArg "w" "a GRU layer needs b_hn"
        let gi = torch.addmm(w.B, w.Wih, x, 1.0f, 1.0f).chunk(3L, 0L)
        let gh = torch.mm(w.Whh, h).chunk(3L, 0L)
        let r = gi[0].Add(gh[0]).sigmoid()
        let z = gi[1].Add(gh[1]).sigmoid()
        let cand = gi[2].Add(r.mul(gh[2].Add(bhn))).tanh()
        cand.Add(z.mul(h.sub(cand)))

    /// m_φ applied to preprocessed features with given LSTM and GRU cells: (φ, h_t, x_t) -> (g_t,
    /// h_{t+1}). lstm-gac and ntm-bfgs average each layer's
    /// first cells; ntm-bfgs appends its last read results to x, then reads its memory M_t with this
    /// step's read vectors and writes this step's (a, b) pairs into it (read, then write: g_t =
    /// read(M_t), M_{t+1} = write(M_t), as in the paper's skeleton of BFGS).
    /// x: [in; n] -> g: [n]
    let forwardWith (cell: LayerWeights -> Tensor -> Tensor -> Tensor -> Tensor * Tensor) (gru: LayerWeights -> Tensor -> Tensor -> Tensor)
                    (phi: Phi) (state: LstmState) (x: Tensor) : Tensor * LstmState =
        let c = phi.Config
        let lstmLayers (input: Tensor) =
            let average (h: Tensor) =
                if Architecture.averages c.Architecture then GlobalAverage.apply c.Averaged state.Functions h else h
            let rec go (layers: LayerWeights list) hs cs (input: Tensor) accH accC =
                match layers, hs, cs with
                | w :: lt, h :: ht, cc :: ct ->
                    let h', c' = cell w input h cc
                    let h' = average h'
                    go lt ht ct h' (h' :: accH) (c' :: accC)
                | _ -> input, List.rev accH, List.rev accC
            go phi.Layers state.H state.C input [] []
        let top, hs, cs, memory =
            match c.Architecture with
            | Architecture.Gru ->
                let rec go (layers: LayerWeights list) hs (input: Tensor) accH =
                    match layers, hs with
                    | w :: lt, h :: ht ->
                        let h' = gru w input h
                        go lt ht h' (h' :: accH)
                    | _ -> input, List.rev accH
                let top, hs = go phi.Layers state.H x []
                top, hs, [], []
            | Architecture.Lstm
            | Architecture.LstmGac ->
                let top, hs, cs = lstmLayers x
                top, hs, cs, []
            | Architecture.NtmBfgs ->
                match state.Memory, phi.Heads with
                | [ reads; a; b ], Some heads ->
                    let top, hs, cs = lstmLayers (torch.cat([| x; reads |], 0L))
                    // [R + 2W; n]: read vectors r, then write vectors a, then b
                    let out = torch.addmm(heads.B, heads.W, top, 1.0f, 1.0f)
                    let r = out.narrow(0L, 0L, int64 c.Reads)
                    let aNew = out.narrow(0L, int64 c.Reads, int64 c.Writes)
                    let bNew = out.narrow(0L, int64 (c.Reads + c.Writes), int64 c.Writes)
                    let reads' = Memory.read state.Functions a b r
                    let a', b' = Memory.write a b aNew bNew
                    top, hs, cs, [ reads'; a'; b' ]
                | _ -> invalidArg "state" "ntm-bfgs needs its read results and memory, and φ its heads"
        // g: [1; n] = BOut + WOut·h_top, times the output scale
        let g = torch.addmm(phi.BOut, phi.WOut, top, 1.0f, 1.0f).Mul(c.OutScale).view(-1L)
        g, { state with H = hs; C = cs; Memory = memory }

    /// x: [in; n] -> g: [n]
    let forward (phi: Phi) (state: LstmState) (x: Tensor) : Tensor * LstmState = forwardWith cell gruCell phi state x

    /// m_φ on a raw gradient: (φ, ∇_t, h_t) -> (g_t, h_{t+1}).  grad: [n] -> g: [n]
    let step (phi: Phi) (state: LstmState) (grad: Tensor) : Tensor * LstmState =
        let x, stats = Preprocess.step phi.Config.Preprocessing state.Stats grad
        let g, next = forward phi state x
        g, { next with Stats = stats }
