/// m_φ with the backend's choice of cells: the reference operations or the fused kernel, the same
/// function (to float32 rounding) of (φ, state, ∇). The fused kernels compute the cells (LSTM cells for
/// lstm, lstm-gac and ntm-bfgs, whose averaging and memory are tensor operations between and after
/// the layers; GRU cells for gru); the paper's LSTM also has its whole step fused.
namespace L2L

open TorchSharp

module Lstm =
    /// One LSTM cell. x: [in; n], h, c: [H; n] -> h', c': [H; n]
    let cell (b: Backend) (w: LayerWeights) (x: Tensor) (h: Tensor) (c: Tensor) : Tensor * Tensor =
        match b.Cell with
        | Fused when LstmKernel.supports [ x; h; c; w.Wih; w.Whh; w.B ] ->
            LstmKernel.cell (Backend.kernelThreads b) w.Wih w.Whh w.B x h c
        | _ -> LstmReference.cell w x h c

    /// One GRU cell. x: [in; n], h: [H; n] -> h': [H; n]
    let gruCell (b: Backend) (w: LayerWeights) (x: Tensor) (h: Tensor) : Tensor =
        match b.Cell, w.Bhn with
        | Fused, Some bhn when LstmKernel.supports [ x; h; w.Wih; w.Whh; w.B; bhn ] ->
            LstmKernel.gruCell (Backend.kernelThreads b) w.Wih w.Whh w.B bhn x h
        | _ -> LstmReference.gruCell w x h

    /// m_φ applied to preprocessed features: (φ, h_t, x_t) -> (g_t, h_{t+1}).  x: [in; n] -> g: [n]
    let forward (b: Backend) (phi: Phi) (state: LstmState) (x: Tensor) : Tensor * LstmState =
        LstmReference.forwardWith (cell b) (gruCell b) phi state x

    /// m_φ on a raw gradient: (φ, ∇_t, h_t) -> (g_t, h_{t+1}).  grad: [n] -> g: [n]
    /// Fused, the whole step is one kernel pass: without autograd (evaluation), or as one
    /// differentiable function when ∇ carries no graph (meta-training without second derivatives);
    /// with ∂∇/∂φ kept, the cells are fused and the preprocessing and output layer are tensor operations.
    let step (b: Backend) (phi: Phi) (state: LstmState) (grad: Tensor) : Tensor * LstmState =
        let whole =
            b.Cell = Fused
            && PhiKernel.wholeStep phi
            && not (torch.is_grad_enabled () && grad.requires_grad)
            && LstmKernel.supports (grad :: Phi.tensors phi @ LstmState.tensors state)
        if whole then
            // the stateful preprocessing (the moments) outside the kernel, its features handed in
            let input, stats =
                match phi.Config.Preprocessing with
                | NormalizedMoments _ -> Preprocess.step phi.Config.Preprocessing state.Stats grad
                | _ -> grad, state.Stats
            let g, hs, cs =
                (if torch.is_grad_enabled () then LstmKernel.stepDifferentiable else LstmKernel.step)
                    (Backend.kernelThreads b) (PhiKernel.layers phi) phi.WOut phi.BOut phi.Config.OutScale (PhiKernel.logSignP phi) state.H state.C input
            g, { state with H = hs; C = cs; Stats = stats }
        else
            let x, stats = Preprocess.step phi.Config.Preprocessing state.Stats grad
            let g, next = forward b phi state x
            g, { next with Stats = stats }
