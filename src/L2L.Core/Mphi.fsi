namespace L2L

    module Lstm =

        /// One LSTM cell. x: [in; n], h, c: [H; n] -> h', c': [H; n]
        val cell:
          b: Backend ->
            w: LayerWeights ->
            x: Tensor -> h: Tensor -> c: Tensor -> Tensor * Tensor

        /// One GRU cell. x: [in; n], h: [H; n] -> h': [H; n]
        val gruCell:
          b: Backend ->
            w: LayerWeights -> x: Tensor -> h: Tensor -> Tensor

        /// m_φ applied to preprocessed features: (φ, h_t, x_t) -> (g_t, h_{t+1}).  x: [in; n] -> g: [n]
        val forward:
          b: Backend ->
            phi: Phi -> state: LstmState -> x: Tensor -> Tensor * LstmState

        /// m_φ on a raw gradient: (φ, ∇_t, h_t) -> (g_t, h_{t+1}).  grad: [n] -> g: [n]
        /// Fused, the LSTM's whole step is one kernel pass: without autograd (evaluation), or as one
        /// differentiable function when ∇ carries no graph (meta-training without second derivatives);
        /// with ∂∇/∂φ kept, the cells are fused and the preprocessing and output layer are tensor operations.
        val step:
          b: Backend ->
            phi: Phi -> state: LstmState -> grad: Tensor -> Tensor * LstmState

