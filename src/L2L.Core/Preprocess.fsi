namespace L2L

    /// How ∇ is turned into the LSTM's input features.
    type Preprocessing =

        /// ∇ ↦ (log|∇|/p, sign ∇) if |∇| ≥ e^{-p}, else (−1, e^{p}·∇): two features, scale-free.
        | LogSign of p: float

        /// ∇ fed as it is: one feature (the paper's quadratic experiment).
        | Identity

        /// Adam-normalised moments (RNNprop, Lv et al. 2017; several time scales as in Wichrowska et
        /// al. 2017): per coordinate, exponential averages m_β of ∇ for each β of `betas` and v of ∇²
        /// with `beta2`, bias-corrected (m̂ = m/(1 − β^t)); features m̂_β/(√v̂ + ε) for each β, then
        /// ∇/(√v̂ + ε), ε = 1e-8. Invariant to the gradient's scale; the averages are m_φ's state.
        | NormalizedMoments of betas: float list * beta2: float

    module Preprocess =

        /// ε of the moments' normalisation (Adam's).
        val epsilon: float

        val features: _arg1: Preprocessing -> int

        val describe: _arg1: Preprocessing -> string

        /// What is wrong with a preprocessing's settings (empty: nothing).
        val problems: _arg1: Preprocessing -> string list

        /// The per-coordinate state a preprocessing keeps: none, or for the moments the averages
        /// [β count + 1; n] (each m_β, then v) and their bias corrections 1 − β^t (the same in every
        /// column: every state tensor of m_φ is [rows; n], split and saved by coordinates), at zero.
        val zeros: pre: Preprocessing -> n: int64 -> dtype: TorchSharp.torch.ScalarType -> device: TorchSharp.torch.Device -> Tensor list

        /// grad: [n] -> [features; n] (feature-major: each feature row contiguous), for the stateless ones.
        val apply: pre: Preprocessing -> grad: Tensor -> Tensor

        /// One step of any preprocessing: the features [features; n] and the state carried on (the
        /// stateless ones: `apply`, the state as it was).
        val step: pre: Preprocessing -> state: Tensor list -> grad: Tensor -> Tensor * Tensor list
