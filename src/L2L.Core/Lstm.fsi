namespace L2L

    /// Hyper-parameters of m_φ (what a saved optimizer records).
    type LstmConfig =
        {
          Layers: int
          Hidden: int
          Preprocessing: Preprocessing

          /// g is multiplied by this (0.1 in the paper's setup).
          OutScale: float

          /// Added to the forget-gate bias at initialisation.
          ForgetBias: float
        }

    module LstmConfig =

        val paper: LstmConfig

        val validate: c: LstmConfig -> Result<LstmConfig,string list>

    /// One LSTM layer's weights in PyTorch's LSTMCell layout, gate order (i, f, g, o), one bias.
    type LayerWeights =
        {

          /// [4H; in]
          Wih: Tensor

          /// [4H; H]
          Whh: Tensor

          /// [4H; 1] (a column, broadcast over coordinates)
          B: Tensor
        }

    /// φ: the parameters of m_φ, the only thing meta-training changes.
    type Phi =
        {
          Config: LstmConfig
          Layers: LayerWeights list

          /// [1; H]
          WOut: Tensor

          /// [1; 1]
          BOut: Tensor
        }

    /// The per-coordinate recurrent state: per layer h and c, each [H; n].
    type LstmState =
        {
          H: Tensor list
          C: Tensor list
        }

    module Phi =

        /// φ's tensors in a fixed order (the order of `names`).
        val tensors: phi: Phi -> Tensor list

        /// Names of φ's tensors, as in the saved format: w_ih.k, w_hh.k, b.k, w_out, b_out.
        val names: c: LstmConfig -> string list

        /// Shapes of φ's tensors in the saved format (b.k as [4H], b_out as [1]).
        val savedShapes: c: LstmConfig -> int64 array list

        /// Rebuilds φ from tensors in the order of `tensors` (shapes as in `tensors`).
        val ofTensors: c: LstmConfig -> ts: Tensor list -> Phi

        /// Maps every tensor of φ (e.g. a detach, a copy, an update).
        val map: f: (Tensor -> Tensor) -> phi: Phi -> Phi

        /// Number of scalar parameters in φ.
        val count: phi: Phi -> int

        /// A fresh φ: weights U(−1/√H, 1/√H) like PyTorch's LSTMCell, forget-gate bias + ForgetBias,
        /// output weights U(−1/√H, 1/√H) and output bias 0. Leaves that require grad.
        val init:
          c: LstmConfig ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType ->
            gen: TorchSharp.torch.Generator -> Phi

    module internal PhiKernel =

        /// φ's layers as the fused kernel takes them: (wih, whh, b) per layer.
        val layers: phi: Phi -> (Tensor * Tensor * Tensor) list

        /// The kernel's preprocessing parameter: p of the log-sign preprocessing, None for the identity.
        val logSignP: phi: Phi -> float option

    /// Several φ side by side (one per coordinate group of a task), as one list of tensors.
    module Phis =

        val tensors: phis: Phi list -> Tensor list

        /// Rebuilds `count` φ of configuration c from the tensors of `tensors`, in order.
        val ofTensors:
          c: LstmConfig -> count: int -> ts: Tensor list -> Phi list

    module LstmState =

        /// Zero state for n coordinates.
        val zeros: phi: Phi -> n: int64 -> LstmState

        val tensors: s: LstmState -> Tensor list

        val ofTensors: layers: int -> ts: Tensor list -> LstmState

        val detach: s: LstmState -> LstmState

    /// m_φ in straight TorchSharp operations: any device and dtype, differentiable to any order. The
    /// definition the fused kernel (LstmKernel) is tested against; `Lstm` chooses between the two.
    module LstmReference =

        /// One LSTM cell on feature-major tensors.
        /// x: [in; n], h, c: [H; n] -> h', c': [H; n]
        val cell:
          w: LayerWeights ->
            x: Tensor -> h: Tensor -> c: Tensor -> Tensor * Tensor

        /// m_φ applied to preprocessed features with a given cell: (φ, h_t, x_t) -> (g_t, h_{t+1}).
        /// x: [in; n] -> g: [n]
        val forwardWith:
          cell: (LayerWeights -> Tensor -> Tensor -> Tensor -> Tensor * Tensor) ->
            phi: Phi -> state: LstmState -> x: Tensor -> Tensor * LstmState

        /// x: [in; n] -> g: [n]
        val forward:
          phi: Phi -> state: LstmState -> x: Tensor -> Tensor * LstmState

        /// m_φ on a raw gradient: (φ, ∇_t, h_t) -> (g_t, h_{t+1}).  grad: [n] -> g: [n]
        val step:
          phi: Phi -> state: LstmState -> grad: Tensor -> Tensor * LstmState

