namespace L2L

    /// How ∇ is turned into the LSTM's input features.
    type Preprocessing =

        /// ∇ ↦ (log|∇|/p, sign ∇) if |∇| ≥ e^{-p}, else (−1, e^{p}·∇): two features, scale-free.
        | LogSign of p: float

        /// ∇ fed as it is: one feature (the paper's quadratic experiment).
        | Identity

    module Preprocess =

        val features: _arg1: Preprocessing -> int

        val describe: _arg1: Preprocessing -> string

        /// grad: [n] -> [features; n] (feature-major: each feature row contiguous).
        val apply: pre: Preprocessing -> grad: Tensor -> Tensor

