/// Gradient preprocessing (paper, appendix A).
namespace L2L

open TorchSharp

/// How ∇ is turned into the LSTM's input features.
type Preprocessing =
    /// ∇ ↦ (log|∇|/p, sign ∇) if |∇| ≥ e^{-p}, else (−1, e^{p}·∇): two features, scale-free.
    | LogSign of p: float
    /// ∇ fed as it is: one feature (the paper's quadratic experiment).
    | Identity

module Preprocess =
    let features =
        function
        | LogSign _ -> 2
        | Identity -> 1

    let describe =
        function
        | LogSign p -> sprintf "logsign(p=%g)" p
        | Identity -> "none"

    /// grad: [n] -> [features; n] (feature-major: each feature row contiguous).
    let apply (pre: Preprocessing) (grad: Tensor) : Tensor =
        match pre with
        | Identity -> grad.unsqueeze(0L)
        | LogSign p ->
            let a = grad.abs()
            let big = a.Ge(exp -p)
            // clamp keeps log finite where the branch is not taken (|∇| = 0 gives −inf otherwise)
            let logPart = a.ClampMin(1e-38).log().Div(p)
            let x1 = torch.where(big, logPart, grad.FullLike(-1.0))
            let x2 = torch.where(big, grad.sign(), grad.Mul(exp p))
            torch.stack([| x1; x2 |], 0L)
