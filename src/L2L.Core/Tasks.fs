/// Optimizees as data plus pure functions. A problem holds no θ: it is an initial point θ_0 and a
/// loss of (step, θ). A problem may hold B independent functions whose coordinates sit side by side
/// in one θ; its loss is the sum of theirs, so each coordinate sees its own function's gradient.
namespace L2L

open TorchSharp

type Problem =
    { /// Number of independent functions in the problem (B).
      Functions: int
      /// θ_0: [n]
      Theta0: Tensor
      /// Per-function losses at optimizee step t: (t, θ [n]) -> [B].
      Losses: int -> Tensor -> Tensor
      /// The tensors the problem owns (for disposal).
      Owned: Tensor list }

module Problem =
    /// f(θ) at step t: the sum of the functions' losses (a scalar).
    let loss (p: Problem) (t: int) (theta: Tensor) : Tensor = (p.Losses t theta).sum()

    let coordinates (p: Problem) = p.Theta0.numel()

    let dispose (p: Problem) =
        for t in p.Owned do
            t.Dispose()

/// The quadratic family f(θ) = ‖Wθ − y‖², W ∈ R^{d×d}, y ∈ R^d IID N(0, 1) (paper §3.1).
type Quadratic =
    { /// [B; d; d]
      W: Tensor
      /// [B; d]
      Y: Tensor
      /// [B·d]
      Theta0: Tensor }

module Quadratic =
    /// Standard deviation of θ_0 (θ_0 ~ N(0, 0.01²), as in the reference implementations).
    [<Literal>]
    let Theta0Std = 0.01

    let dim (q: Quadratic) = int q.Y.shape[1]
    let functions (q: Quadratic) = int q.Y.shape[0]

    /// θ: [B·d] -> per-function ‖W_b θ_b − y_b‖²: [B]
    let losses (q: Quadratic) (theta: Tensor) : Tensor =
        let b = q.Y.shape[0]
        let d = q.Y.shape[1]
        let r = torch.bmm(q.W, theta.view(b, d, 1L)).squeeze(-1L).sub(q.Y)
        r.mul(r).sum(1L)

    let problem (q: Quadratic) : Problem =
        { Functions = functions q
          Theta0 = q.Theta0
          Losses = fun _ theta -> losses q theta
          Owned = [ q.W; q.Y; q.Theta0 ] }

    /// B functions of dimension d from a torch generator (meta-training problems).
    let private keep (q: Quadratic) = [ q.W; q.Y; q.Theta0 ]

    let sample (gen: torch.Generator) (dim: int) (count: int) (device: torch.Device) (dtype: torch.ScalarType) =
      Tensors.build keep (fun () ->
        let d = int64 dim
        let b = int64 count
        let draw (shape: int64[]) =
            let z = torch.randn(shape, dtype = torch.ScalarType.Float64, generator = gen)
            z.to_type(dtype).``to``(device)
        let w = draw [| b; d; d |]
        let y = draw [| b; d |]
        let th = torch.randn([| b * d |], dtype = torch.ScalarType.Float64, generator = gen)
        let theta0 = th.mul(sc Theta0Std).to_type(dtype).``to``(device)
        { W = w; Y = y; Theta0 = theta0 })

    /// B functions from the portable stream `seed`: per function, in order, W (row-major), y, θ_0/0.01.
    /// Identical to the reference PyTorch implementation's evaluation problems for the same seed.
    let portable (seed: uint64) (dim: int) (count: int) (device: torch.Device) (dtype: torch.ScalarType) =
      Tensors.build keep (fun () ->
        let per = dim * dim + 2 * dim
        let z = Portable.normals seed 0L (count * per)
        // rounded to float32 first, as the portable definition says, then cast to the run's dtype
        let pick (f: int -> int -> float32) (inner: int) =
            Array.init (count * inner) (fun i -> f (i / inner) (i % inner))
        let w = pick (fun b j -> float32 z[b * per + j]) (dim * dim)
        let y = pick (fun b j -> float32 z[b * per + dim * dim + j]) dim
        let th = pick (fun b j -> float32 (Theta0Std * z[b * per + dim * dim + dim + j])) dim
        let mk (data: float32[]) (shape: int64[]) =
            torch.tensor(data).reshape(shape).to_type(dtype).``to``(device)
        { W = mk w [| int64 count; int64 dim; int64 dim |]
          Y = mk y [| int64 count; int64 dim |]
          Theta0 = mk th [| int64 (count * dim) |] })

/// The task families the toolkit knows, with their settings.
type TaskSpec = Quadratic of dim: int

module TaskSpec =
    let name =
        function
        | Quadratic _ -> "quadratic"

    let validate (t: TaskSpec) =
        match t with
        | Quadratic d when d < 1 -> Error [ "quadratic dimension must be ≥ 1" ]
        | _ -> Ok t

    /// Meta-training problem number `index` of a run seeded `seed`: B functions drawn from a
    /// generator derived from (seed, index), so a run can be replayed or resumed from its counter.
    let trainProblem (t: TaskSpec) (seed: int64) (index: int64) (functions: int) device dtype : Problem =
        match t with
        | Quadratic dim ->
            use gen = Seeds.generator seed 1UL index
            Quadratic.problem (Quadratic.sample gen dim functions device dtype)

    /// Held-out or evaluation problems from the portable stream (`count` functions).
    let portableProblem (t: TaskSpec) (seed: uint64) (count: int) device dtype : Problem =
        match t with
        | Quadratic dim -> Quadratic.problem (Quadratic.portable seed dim count device dtype)
