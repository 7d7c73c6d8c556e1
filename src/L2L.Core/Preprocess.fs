/// Gradient preprocessing (paper, appendix A; and the normalised moments of Lv et al. 2017).
namespace L2L

open TorchSharp

/// How ∇ is turned into the LSTM's input features.
type Preprocessing =
    /// ∇ ↦ (log|∇|/p, sign ∇) if |∇| ≥ e^{-p}, else (−1, e^{p}·∇): two features, scale-free.
    | LogSign of p: float
    /// ∇ fed as it is: one feature (the paper's quadratic experiment).
    | Identity
    /// Adam-normalised moments (RNNprop, Lv et al. 2017; several time scales as in Wichrowska et al.
    /// 2017): per coordinate, exponential averages m_β of ∇ for each β of `betas` and v of ∇² with
    /// `beta2`, bias-corrected (m̂ = m/(1 − β^t)); features m̂_β/(√v̂ + ε) for each β, then ∇/(√v̂ + ε),
    /// ε = 1e-8. Invariant to the gradient's scale; the averages are m_φ's state.
    | NormalizedMoments of betas: float list * beta2: float

module Preprocess =
    /// ε of the moments' normalisation (Adam's).
    let epsilon = 1e-8

    let features =
        function
        | LogSign _ -> 2
        | Identity -> 1
        | NormalizedMoments(betas, _) -> betas.Length + 1

    let describe =
        function
        | LogSign p -> sprintf "logsign(p=%g)" p
        | Identity -> "none"
        | NormalizedMoments(betas, beta2) -> sprintf "moments(β=%s; β2=%g)" (betas |> List.map (sprintf "%g") |> String.concat ",") beta2

    /// What is wrong with a preprocessing's settings (empty: nothing).
    let problems =
        function
        | LogSign p when not (System.Double.IsFinite p) || p <= 0.0 -> [ "preprocessing p must be positive" ]
        | NormalizedMoments(betas, beta2) ->
            [ if betas.IsEmpty || betas.Length > 8 then "moments need from 1 to 8 time scales β"
              if betas |> List.exists (fun b -> not (b >= 0.0 && b < 1.0)) then "the moments' β must be in [0, 1)"
              if not (beta2 >= 0.0 && beta2 < 1.0) then "the moments' β2 must be in [0, 1)" ]
        | _ -> []

    /// The per-coordinate state a preprocessing keeps: none, or for the moments the averages
    /// [β count + 1; n] (each m_β, then v) and their bias corrections 1 − β^t (the same in every
    /// column: every state tensor of m_φ is [rows; n], split and saved by coordinates), at zero.
    let zeros (pre: Preprocessing) (n: int64) (dtype: torch.ScalarType) (device: torch.Device) : Tensor list =
        match pre with
        | NormalizedMoments(betas, _) ->
            let rows = int64 betas.Length + 1L
            [ torch.zeros([| rows; n |], dtype = dtype, device = device); torch.zeros([| rows; n |], dtype = dtype, device = device) ]
        | _ -> []

    /// grad: [n] -> [features; n] (feature-major: each feature row contiguous), for the stateless ones.
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
        | NormalizedMoments _ -> invalidArg "pre" "the moments keep a state: Preprocess.step"

    /// One step of any preprocessing: the features [features; n] and the state carried on (the
    /// stateless ones: `apply`, the state as it was).
    let step (pre: Preprocessing) (state: Tensor list) (grad: Tensor) : Tensor * Tensor list =
        match pre, state with
        | NormalizedMoments(betas, beta2), [ acc; corr ] ->
            let k = int64 betas.Length
            // the β rounded once to the state's type
            let decay = torch.tensor(Array.ofList (betas @ [ beta2 ]), dtype = torch.ScalarType.Float64).to_type(acc.dtype).``to``(acc.device).view(-1L, 1L)
            let rest = decay.neg().Add(1.0)
            let g = grad.view(1L, -1L)
            let inputs = torch.cat([| g.expand(k, -1L); g.mul(g) |], 0L)
            let acc' = acc.mul(decay).Add(inputs.mul(rest))
            let corr' = corr.mul(decay).Add(rest)
            let hat = acc'.div(corr')
            let rms = hat.narrow(0L, k, 1L).sqrt().Add(epsilon)
            torch.cat([| hat.narrow(0L, 0L, k); g |], 0L).div(rms), [ acc'; corr' ]
        | NormalizedMoments _, _ -> invalidArg "state" "the moments' state is their averages and corrections"
        | _ -> apply pre grad, state
