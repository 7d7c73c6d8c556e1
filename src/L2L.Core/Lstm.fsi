namespace L2L

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

        val all: Architecture list

        /// The name in files and on the command line: lstm, gru, lstm-gac, ntm-bfgs.
        val name: a: Architecture -> string

        val parse: s: string -> Result<Architecture,string>

        /// Gates per layer: 4 for the LSTMs, 3 for the GRU.
        val gates: a: Architecture -> int

        /// Whether each layer keeps a cell state c beside h.
        val hasCellState: a: Architecture -> bool

        /// Whether the layers have global averaging cells (lstm-gac, and ntm-bfgs's controller).
        val averages: a: Architecture -> bool

    /// Hyper-parameters of m_φ (what a saved optimizer records).
    type LstmConfig =
        {
          Architecture: Architecture
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
          MemorySteps: int
        }

    module LstmConfig =

        val paper: LstmConfig

        /// The averaging cells lstm-gac and ntm-bfgs take when none are named: a quarter of each layer,
        /// at least two (the paper's BFGS construction needs 2) where there are as many.
        val defaultAveraged: hidden: int -> int

        /// ntm-bfgs's heads when none are named: one read head and three write heads, the numbers with
        /// which the paper says NTM-BFGS can simulate BFGS.
        val defaultReads: int

        val defaultWrites: int

        /// ntm-bfgs's memory when none is named: the writes of the last 100 steps (the paper's horizon).
        val defaultMemorySteps: int

        /// The configuration for an architecture: the fields it requires at their defaults where unset
        /// (0), and those it has not at 0.
        val withArchitecture: a: Architecture -> c: LstmConfig -> LstmConfig

        val validate: c: LstmConfig -> Result<LstmConfig,string list>

    /// One layer's weights in PyTorch's layout: LSTMCell's gate order (i, f, g, o) with one bias (b_ih +
    /// b_hh), or GRUCell's (r, z, n) with the biases of r and z summed and the hidden side's bias of n
    /// apart (it sits inside r ⊙ (W_hn·h + b_hn)).
    type LayerWeights =
        {

          /// [G·H; in], G = 4 (LSTM) or 3 (GRU)
          Wih: Tensor

          /// [G·H; H]
          Whh: Tensor

          /// [G·H; 1] (a column, broadcast over coordinates)
          B: Tensor

          /// GRU only: b_hn [H; 1]
          Bhn: Tensor option
        }

    /// ntm-bfgs's heads: the read vectors r, then the write vectors a, then b, as one linear layer on
    /// the controller's top h.
    type HeadWeights =
        {

          /// [R + 2W; H]
          W: Tensor

          /// [R + 2W; 1]
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

          /// ntm-bfgs only
          Heads: HeadWeights option
        }

    /// The per-coordinate recurrent state: per layer h, each [H; n], and c (the LSTMs; empty for the GRU).
    type LstmState =
        {
          H: Tensor list
          C: Tensor list

          /// ntm-bfgs: the last read results i [R; n], the memory's write vectors a and b [S·W; n] of the
          /// last S steps (the oldest first); empty for the others.
          Memory: Tensor list

          /// The preprocessing's own state (Preprocess.zeros: the moments' averages and bias
          /// corrections); empty for the stateless ones.
          Stats: Tensor list

          /// θ holds this many functions' coordinates, in equal contiguous blocks (a meta-batch): the
          /// averaging cells and the memory work within each block, never across functions.
          Functions: int
        }

    module Phi =

        /// Tensors per φ of configuration c.
        val tensorCount: c: LstmConfig -> int

        /// Inputs of the first layer: the preprocessed gradient's features (and ntm-bfgs's read results).
        val inputs: c: LstmConfig -> int

        /// φ's tensors in a fixed order (the order of `names`).
        val tensors: phi: Phi -> Tensor list

        /// Names of φ's tensors, as in the saved format: w_ih.k, w_hh.k, b.k (and b_hn.k for the GRU),
        /// w_out, b_out.
        val names: c: LstmConfig -> string list

        /// Shapes of φ's tensors in the saved format (b.k as [G·H], b_hn.k as [H], b_out as [1], b_heads
        /// as [R + 2W]).
        val savedShapes: c: LstmConfig -> int64 array list

        /// Shapes of φ's tensors as `tensors` holds them (the biases as columns: [G·H; 1], [H; 1], [1; 1]).
        val shapes: c: LstmConfig -> int64 array list

        /// Rebuilds φ from tensors in the order of `tensors` (shapes as in `tensors`).
        val ofTensors: c: LstmConfig -> ts: Tensor list -> Phi

        /// Maps every tensor of φ (e.g. a detach, a copy, an update).
        val map: f: (Tensor -> Tensor) -> phi: Phi -> Phi

        /// Number of scalar parameters in φ.
        val count: phi: Phi -> int

        /// A fresh φ: weights U(−1/√H, 1/√H) like PyTorch's LSTMCell and GRUCell, forget-gate bias (the
        /// GRU's update gate z) + ForgetBias, output weights U(−1/√H, 1/√H) and output bias 0 (ntm-bfgs's
        /// heads likewise, drawn last). Leaves that require grad.
        val init:
          c: LstmConfig ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType ->
            gen: TorchSharp.torch.Generator -> Phi

    module internal PhiKernel =

        /// Whether the whole-step kernels (`LstmKernel.step*`, the closed-form meta-gradient's) compute
        /// this φ: the paper's LSTM only; the other architectures fuse their cells alone.
        val wholeStep: phi: Phi -> bool

        /// φ's layers as the fused kernel takes them: (wih, whh, b) per layer.
        val layers: phi: Phi -> (Tensor * Tensor * Tensor) list

        /// The kernel's preprocessing parameter: p of the log-sign preprocessing, None for the identity,
        /// +∞ for the moments (computed outside with `Preprocess.step`, handed to the kernel as features).
        val logSignP: phi: Phi -> float option

    /// Several φ side by side (one per coordinate group of a task), as one list of tensors.
    module Phis =

        val tensors: phis: Phi list -> Tensor list

        /// Rebuilds `count` φ of configuration c from the tensors of `tensors`, in order.
        val ofTensors:
          c: LstmConfig -> count: int -> ts: Tensor list -> Phi list

    module LstmState =

        /// Zero state for n coordinates of `functions` functions (equal contiguous blocks of θ).
        val zeros: phi: Phi -> functions: int -> n: int64 -> LstmState

        val tensors: s: LstmState -> Tensor list

        /// Rebuilds a state of configuration c from the tensors of `tensors`.
        val ofTensors: c: LstmConfig -> functions: int -> ts: Tensor list -> LstmState

        /// The same state with each tensor replaced by f.
        val map: f: (Tensor -> Tensor) -> s: LstmState -> LstmState

        val detach: s: LstmState -> LstmState

    /// The global averaging of lstm-gac (the paper's appendix): a layer's first `cells` rows of h' [H; n]
    /// replaced by their mean over the coordinates of each function, so every coordinate of a function
    /// reads the same value from them. Symmetric in the coordinates of a function; no parameters.
    module GlobalAverage =

        /// h: [H; n], θ of `functions` functions in equal contiguous blocks -> [H; n]
        val apply: cells: int -> functions: int -> h: Tensor -> Tensor

    /// ntm-bfgs's external memory, one per function, held as the write vectors of its last S steps:
    /// M = Σ_k a_k b_kᵀ / n_f over the rows k of A, B [K; n] (K = S·W), restricted to one function's n_f
    /// coordinates. Reading it costs O(K·n), never O(n²); within S steps it is the dense memory exactly.
    module Memory =

        /// i = M·r per function, for each read vector: Σ_k a_k (b_k · r) / n_f.
        /// a, b: [K; n], r: [R; n] -> [R; n]
        val read: functions: int -> a: Tensor -> b: Tensor -> r: Tensor -> Tensor

        /// The memory after one step's writes: its oldest W rows dropped, the new a and b [W; n] appended.
        val write: a: Tensor -> b: Tensor -> aNew: Tensor -> bNew: Tensor -> Tensor * Tensor

    /// m_φ in straight TorchSharp operations: any device and dtype, differentiable to any order. The
    /// definition the fused kernel (LstmKernel) is tested against; `Lstm` chooses between the two.
    module LstmReference =

        /// One LSTM cell on feature-major tensors.
        /// x: [in; n], h, c: [H; n] -> h', c': [H; n]
        val cell:
          w: LayerWeights ->
            x: Tensor -> h: Tensor -> c: Tensor -> Tensor * Tensor

        /// One GRU cell on feature-major tensors (PyTorch's GRUCell): r = σ(W_ir·x + W_hr·h + b_r),
        /// z = σ(W_iz·x + W_hz·h + b_z), n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
        /// x: [in; n], h: [H; n] -> h': [H; n]
        val gruCell: w: LayerWeights -> x: Tensor -> h: Tensor -> Tensor

        /// m_φ applied to preprocessed features with given LSTM and GRU cells: (φ, h_t, x_t) -> (g_t,
        /// h_{t+1}). lstm-gac and ntm-bfgs average each layer's
        /// first cells; ntm-bfgs appends its last read results to x, then reads its memory M_t with this
        /// step's read vectors and writes this step's (a, b) pairs into it (read, then write: g_t =
        /// read(M_t), M_{t+1} = write(M_t), as in the paper's skeleton of BFGS).
        /// x: [in; n] -> g: [n]
        val forwardWith:
          cell: (LayerWeights -> Tensor -> Tensor -> Tensor -> Tensor * Tensor) ->
            gru: (LayerWeights -> Tensor -> Tensor -> Tensor) ->
            phi: Phi -> state: LstmState -> x: Tensor -> Tensor * LstmState

        /// x: [in; n] -> g: [n]
        val forward:
          phi: Phi -> state: LstmState -> x: Tensor -> Tensor * LstmState

        /// m_φ on a raw gradient: (φ, ∇_t, h_t) -> (g_t, h_{t+1}).  grad: [n] -> g: [n]
        val step:
          phi: Phi -> state: LstmState -> grad: Tensor -> Tensor * LstmState

