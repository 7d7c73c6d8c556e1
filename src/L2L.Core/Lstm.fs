/// m_φ: the coordinatewise two-layer LSTM of the paper (§2.1, §3). One set of weights φ is shared by
/// every coordinate; each coordinate has its own state. Coordinates are the batch dimension, so the
/// same φ runs on any number n of coordinates. Tensors are feature-major: states are [H; n], so each
/// gate block of a layer's pre-activation [4H; n] is a contiguous slab.
namespace L2L

open System
open TorchSharp

/// Hyper-parameters of m_φ (what a saved optimizer records).
type LstmConfig =
    { Layers: int
      Hidden: int
      Preprocessing: Preprocessing
      /// g is multiplied by this (0.1 in the paper's setup).
      OutScale: float
      /// Added to the forget-gate bias at initialisation.
      ForgetBias: float }

module LstmConfig =
    let paper =
        { Layers = 2
          Hidden = 20
          Preprocessing = LogSign 10.0
          OutScale = 0.1
          ForgetBias = 1.0 }

    let validate (c: LstmConfig) : Result<LstmConfig, string list> =
        [ if c.Layers < 1 || c.Layers > 100 then "layers must be from 1 to 100"
          if c.Hidden < 1 || c.Hidden > 100_000 then "hidden must be from 1 to 100,000"
          if not (Double.IsFinite c.OutScale) || c.OutScale <= 0.0 then "out-scale must be a positive number"
          if not (Double.IsFinite c.ForgetBias) then "forget-bias must be finite"
          match c.Preprocessing with
          | LogSign p when not (Double.IsFinite p) || p <= 0.0 -> "preprocessing p must be positive"
          | _ -> () ]
        |> function
            | [] -> Ok c
            | errs -> Error errs

/// One LSTM layer's weights in PyTorch's LSTMCell layout, gate order (i, f, g, o), one bias.
type LayerWeights =
    { /// [4H; in]
      Wih: Tensor
      /// [4H; H]
      Whh: Tensor
      /// [4H; 1] (a column, broadcast over coordinates)
      B: Tensor }

/// φ: the parameters of m_φ, the only thing meta-training changes.
type Phi =
    { Config: LstmConfig
      Layers: LayerWeights list
      /// [1; H]
      WOut: Tensor
      /// [1; 1]
      BOut: Tensor }

/// The per-coordinate recurrent state: per layer h and c, each [H; n].
type LstmState = { H: Tensor list; C: Tensor list }

module Phi =
    /// φ's tensors in a fixed order (the order of `names`).
    let tensors (phi: Phi) : Tensor list =
        [ for l in phi.Layers do
              yield l.Wih
              yield l.Whh
              yield l.B
          yield phi.WOut
          yield phi.BOut ]

    /// Names of φ's tensors, as in the saved format: w_ih.k, w_hh.k, b.k, w_out, b_out.
    let names (c: LstmConfig) : string list =
        [ for k in 0 .. c.Layers - 1 do
              yield sprintf "w_ih.%d" k
              yield sprintf "w_hh.%d" k
              yield sprintf "b.%d" k
          yield "w_out"
          yield "b_out" ]

    /// Shapes of φ's tensors in the saved format (b.k as [4H], b_out as [1]).
    let savedShapes (c: LstmConfig) : int64[] list =
        let h = int64 c.Hidden
        [ for k in 0 .. c.Layers - 1 do
              let inputs = if k = 0 then int64 (Preprocess.features c.Preprocessing) else h
              yield [| 4L * h; inputs |]
              yield [| 4L * h; h |]
              yield [| 4L * h |]
          yield [| 1L; h |]
          yield [| 1L |] ]

    /// Rebuilds φ from tensors in the order of `tensors` (shapes as in `tensors`).
    let ofTensors (c: LstmConfig) (ts: Tensor list) : Phi =
        let arr = List.toArray ts
        if arr.Length <> 3 * c.Layers + 2 then
            invalidArg "ts" (sprintf "expected %d tensors for %d layers, got %d" (3 * c.Layers + 2) c.Layers arr.Length)
        { Config = c
          Layers =
            [ for k in 0 .. c.Layers - 1 ->
                  { Wih = arr[3 * k]
                    Whh = arr[3 * k + 1]
                    B = arr[3 * k + 2] } ]
          WOut = arr[3 * c.Layers]
          BOut = arr[3 * c.Layers + 1] }

    /// Maps every tensor of φ (e.g. a detach, a copy, an update).
    let map (f: Tensor -> Tensor) (phi: Phi) : Phi = ofTensors phi.Config (tensors phi |> List.map f)

    /// Number of scalar parameters in φ.
    let count (phi: Phi) = tensors phi |> List.sumBy (fun t -> int (t.numel()))

    /// A fresh φ: weights U(−1/√H, 1/√H) like PyTorch's LSTMCell, forget-gate bias + ForgetBias,
    /// output weights U(−1/√H, 1/√H) and output bias 0. Leaves that require grad.
    let init (c: LstmConfig) (device: torch.Device) (dtype: torch.ScalarType) (gen: torch.Generator) : Phi =
      Tensors.build tensors (fun () ->
        let bound = 1.0 / sqrt (float c.Hidden)
        let h = int64 c.Hidden
        let uniform (shape: int64[]) =
            let u = torch.rand(shape, dtype = torch.ScalarType.Float64, generator = gen)
            u.mul(sc (2.0 * bound)).sub(sc bound).to_type(dtype).``to``(device)
        let leaf (t: Tensor) = t.requires_grad_(true)
        let layers =
            [ for k in 0 .. c.Layers - 1 ->
                  let inputs = if k = 0 then int64 (Preprocess.features c.Preprocessing) else h
                  let wih = uniform [| 4L * h; inputs |]
                  let whh = uniform [| 4L * h; h |]
                  let b = uniform [| 4L * h; 1L |]
                  let forget = b.narrow(0L, h, h)
                  forget.add_(sc c.ForgetBias) |> ignore
                  { Wih = leaf wih; Whh = leaf whh; B = leaf b } ]
        { Config = c
          Layers = layers
          WOut = leaf (uniform [| 1L; h |])
          BOut = leaf (torch.zeros([| 1L; 1L |], dtype = dtype, device = device)) })

module internal PhiKernel =
    /// φ's layers as the fused kernel takes them: (wih, whh, b) per layer.
    let layers (phi: Phi) = [ for l in phi.Layers -> l.Wih, l.Whh, l.B ]

    /// The kernel's preprocessing parameter: p of the log-sign preprocessing, None for the identity.
    let logSignP (phi: Phi) =
        match phi.Config.Preprocessing with
        | LogSign p -> Some p
        | Identity -> None

/// Several φ side by side (one per coordinate group of a task), as one list of tensors.
module Phis =
    let tensors (phis: Phi list) : Tensor list = phis |> List.collect Phi.tensors

    /// Rebuilds `count` φ of configuration c from the tensors of `tensors`, in order.
    let ofTensors (c: LstmConfig) (count: int) (ts: Tensor list) : Phi list =
        let per = 3 * c.Layers + 2
        if ts.Length <> count * per then
            invalidArg "ts" (sprintf "expected %d tensors for %d optimizers of %d layers, got %d" (count * per) count c.Layers ts.Length)
        [ for k in 0 .. count - 1 -> Phi.ofTensors c (ts |> List.skip (k * per) |> List.take per) ]

module LstmState =
    /// Zero state for n coordinates.
    let zeros (phi: Phi) (n: int64) : LstmState =
        let mk () =
            torch.zeros([| int64 phi.Config.Hidden; n |], dtype = phi.WOut.dtype, device = phi.WOut.device)
        { H = [ for _ in 1 .. phi.Config.Layers -> mk () ]
          C = [ for _ in 1 .. phi.Config.Layers -> mk () ] }

    let tensors (s: LstmState) = s.H @ s.C

    let ofTensors (layers: int) (ts: Tensor list) =
        { H = List.take layers ts; C = List.skip layers ts }

    let detach (s: LstmState) =
        { H = s.H |> List.map (fun t -> t.detach())
          C = s.C |> List.map (fun t -> t.detach()) }

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
        let c' = f.mul(c).add(i.mul(g))
        let h' = o.mul(c'.tanh())
        h', c'

    /// m_φ applied to preprocessed features with a given cell: (φ, h_t, x_t) -> (g_t, h_{t+1}).
    /// x: [in; n] -> g: [n]
    let forwardWith (cell: LayerWeights -> Tensor -> Tensor -> Tensor -> Tensor * Tensor) (phi: Phi) (state: LstmState) (x: Tensor) : Tensor * LstmState =
        let rec go (layers: LayerWeights list) hs cs (input: Tensor) accH accC =
            match layers, hs, cs with
            | w :: lt, h :: ht, c :: ct ->
                let h', c' = cell w input h c
                go lt ht ct h' (h' :: accH) (c' :: accC)
            | _ -> input, List.rev accH, List.rev accC
        let top, hs, cs = go phi.Layers state.H state.C x [] []
        // g: [1; n] = BOut + WOut·h_top, times the output scale
        let g = torch.addmm(phi.BOut, phi.WOut, top, 1.0f, 1.0f).mul(sc phi.Config.OutScale).view(-1L)
        g, { H = hs; C = cs }

    /// x: [in; n] -> g: [n]
    let forward (phi: Phi) (state: LstmState) (x: Tensor) : Tensor * LstmState = forwardWith cell phi state x

    /// m_φ on a raw gradient: (φ, ∇_t, h_t) -> (g_t, h_{t+1}).  grad: [n] -> g: [n]
    let step (phi: Phi) (state: LstmState) (grad: Tensor) : Tensor * LstmState =
        forward phi state (Preprocess.apply phi.Config.Preprocessing grad)
