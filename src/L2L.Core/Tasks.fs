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
      /// Per-function losses at optimizee step t (on step t's minibatch): (t, θ [n]) -> [B].
      Losses: int -> Tensor -> Tensor
      /// Per-function loss on all of the problem's data (what results report): θ [n] -> [B].
      Full: Tensor -> Tensor
      /// Further metrics at θ (e.g. test-set loss and accuracy), one value per function each.
      Metrics: Tensor -> (string * float[]) list
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
          Full = losses q
          Metrics = fun _ -> []
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

type Activation =
    | Sigmoid
    | Relu

/// A multi-layer perceptron on MNIST: 784 → hidden… → 10, cross-entropy on minibatches.
type MlpSpec =
    { Hidden: int list
      Activation: Activation
      Batch: int }

/// Which images an MNIST problem trains on: meta-training, tuning and validation use the first
/// 50,000 training images; evaluation uses the other 10,000 (and reports the 10,000 test images too).
type DataSplit =
    | TrainSplit
    | EvalSplit

module Datasets =
    /// The MNIST directory (None: $L2L_DATA_DIR or the user cache; see Mnist.directory).
    let mutable dataDir: string option = None

    let mnist (device: torch.Device) =
        match Mnist.load (Mnist.directory dataDir) device (eprintfn "%s") with
        | Ok d -> d
        | Error e -> raise (System.IO.InvalidDataException(sprintf "MNIST: %s" e))

    /// (offset, length) of a split in the 60,000 training images.
    let range =
        function
        | TrainSplit -> 0L, 50000L
        | EvalSplit -> 50000L, 10000L

module Mlp =
    let sizes (m: MlpSpec) = 784 :: m.Hidden @ [ 10 ]

    /// Number of parameters: per layer W [in; out] (row-major, h' = act(h·W + b)) then b [out].
    let count (m: MlpSpec) =
        sizes m |> List.pairwise |> List.sumBy (fun (i, o) -> i * o + o)

    /// Logits of a batch. theta: [n], x: [B; 784] -> [B; 10]
    let logits (m: MlpSpec) (theta: Tensor) (x: Tensor) : Tensor =
        let layers = sizes m |> List.pairwise
        let last = layers.Length - 1
        let mutable h = x
        let mutable offset = 0L
        layers
        |> List.iteri (fun k (i, o) ->
            let w = theta.narrow(0L, offset, int64 (i * o)).view(int64 i, int64 o)
            let b = theta.narrow(0L, offset + int64 (i * o), int64 o)
            offset <- offset + int64 (i * o + o)
            let z = torch.addmm(b, h, w, 1.0f, 1.0f)
            h <-
                if k = last then z
                else
                    match m.Activation with
                    | Sigmoid -> z.sigmoid()
                    | Relu -> z.relu())
        h

    let private crossEntropy (logits: Tensor) (y: Tensor) = torch.nn.functional.cross_entropy(logits, y)

    /// Rows per chunk when a loss is taken over a whole split (bounds the float copy of the images).
    let private chunkRows = 1000L

    /// Mean cross-entropy over all of `x` and the number of correct predictions, a chunk of rows at
    /// a time (each chunk's float images and activations are released before the next).
    let private fullLoss (m: MlpSpec) (theta: Tensor) (x: Tensor) (y: Tensor) : Tensor * int64 =
        let n = x.shape[0]
        let mutable total = torch.zeros([||], dtype = theta.dtype, device = theta.device)
        let mutable correct = 0L
        let mutable start = 0L
        while start < n do
            let len = min chunkRows (n - start)
            let next =
                Scope.run (fun (t: Tensor) -> [ t ]) (fun () ->
                    let lg = logits m theta (Mnist.scale theta.dtype (x.narrow(0L, start, len)))
                    let labels = y.narrow(0L, start, len)
                    correct <- correct + lg.detach().argmax(1L).eq(labels).sum().ToInt64()
                    total.add(torch.nn.functional.cross_entropy(lg, labels, reduction = torch.nn.Reduction.Sum)))
            total.Dispose()
            total <- next
            start <- start + len
        total.div(sc (float n)), correct

    /// A problem: θ_0 [n] and minibatch indices [steps + 1; batch] into the split's images.
    let problem (m: MlpSpec) (data: MnistData) (split: DataSplit) (theta0: Tensor) (indices: Tensor) : Problem =
        let offset, length = Datasets.range split
        let x = data.TrainX.narrow(0L, offset, length)
        let y = data.TrainY.narrow(0L, offset, length)
        { Functions = 1
          Theta0 = theta0
          Losses =
            fun t theta ->
                let idx = indices[int64 t]
                let batch = Mnist.scale theta.dtype (x.index_select(0L, idx))
                crossEntropy (logits m theta batch) (y.index_select(0L, idx)) |> fun l -> l.unsqueeze(0L)
          Full = fun theta -> (fst (fullLoss m theta x y)).unsqueeze(0L)
          Metrics =
            fun theta ->
                let loss, correct = fullLoss m theta data.TestX data.TestY
                [ "test_loss", [| loss.ToDouble() |]; "test_acc", [| float correct / float data.TestX.shape[0] |] ]
          Owned = [ theta0; indices; x; y ] }

    /// θ_0 ~ N(0, 0.01²) and uniform minibatch indices from a torch generator (meta-training).
    let sample (m: MlpSpec) (gen: torch.Generator) (split: DataSplit) (steps: int) (device: torch.Device) (dtype: torch.ScalarType) =
        let data = Datasets.mnist device
        let _, length = Datasets.range split
        let theta0, indices =
            Tensors.build (fun (a: Tensor, b: Tensor) -> [ a; b ]) (fun () ->
                let th = torch.randn([| int64 (count m) |], dtype = torch.ScalarType.Float64, generator = gen).mul(sc 0.01).to_type(dtype).``to``(device)
                let idx = torch.randint(length, [| int64 (steps + 1); int64 m.Batch |], generator = gen).``to``(device)
                th, idx)
        problem m data split theta0 indices

    /// The portable stream `seed`: first n normals (θ_0 = 0.01·normal), then (steps + 1)·batch
    /// indices (u64 mod the split's length), row t = step t.
    let portable (m: MlpSpec) (seed: uint64) (split: DataSplit) (steps: int) (device: torch.Device) (dtype: torch.ScalarType) =
        let data = Datasets.mnist device
        let n = count m
        let _, length = Datasets.range split
        let theta0, indices =
            Tensors.build (fun (a: Tensor, b: Tensor) -> [ a; b ]) (fun () ->
                let th = Portable.normals seed 0L n |> Array.map (fun z -> float32 (0.01 * z))
                let idx = Portable.randints seed (2L * int64 n) ((steps + 1) * m.Batch) (int length)
                torch.tensor(th).to_type(dtype).``to``(device), torch.tensor(idx).reshape(int64 (steps + 1), int64 m.Batch).``to``(device))
        problem m data split theta0 indices

/// The task families the toolkit knows, with their settings.
type TaskSpec =
    | Quadratic of dim: int
    | Mlp of MlpSpec

module TaskSpec =
    let name =
        function
        | Quadratic _ -> "quadratic"
        | Mlp _ -> "mnist"

    /// A short description with the settings (for logs and results).
    let describe =
        function
        | Quadratic d -> sprintf "quadratic (d=%d)" d
        | Mlp m ->
            sprintf "mnist MLP 784-%s-10 %s, batch %d" (m.Hidden |> List.map string |> String.concat "-")
                (match m.Activation with Sigmoid -> "sigmoid" | Relu -> "relu") m.Batch

    /// Optimizee coordinates of one function.
    let coordinates =
        function
        | Quadratic d -> d
        | Mlp m -> Mlp.count m

    let validate (t: TaskSpec) =
        match t with
        | Quadratic d when d < 1 -> Error [ "quadratic dimension must be ≥ 1" ]
        | Mlp m when m.Hidden |> List.exists (fun h -> h < 1) -> Error [ "hidden layer widths must be ≥ 1" ]
        | Mlp m when m.Batch < 1 -> Error [ "batch must be ≥ 1" ]
        | _ -> Ok t

    /// Meta-training problem number `index` of a run seeded `seed`, drawn from a generator derived
    /// from (seed, index), so a run can be replayed or resumed from its counter. Quadratic: B
    /// functions side by side; MNIST: one network on the training split.
    let trainProblem (t: TaskSpec) (seed: int64) (index: int64) (functions: int) (steps: int) device dtype : Problem =
        use gen = Seeds.generator seed 1UL index
        match t with
        | Quadratic dim -> Quadratic.problem (Quadratic.sample gen dim functions device dtype)
        | Mlp m -> Mlp.sample m gen TrainSplit steps device dtype

    /// Held-out problems from the portable stream: quadratic, one problem of `count` functions;
    /// MNIST, `count` networks (seeds seed, seed + 1, ...) on the given split.
    let heldOut (t: TaskSpec) (split: DataSplit) (seed: uint64) (count: int) (steps: int) device dtype : Problem list =
        match t with
        | Quadratic dim -> [ Quadratic.problem (Quadratic.portable seed dim count device dtype) ]
        | Mlp m -> [ for r in 0 .. count - 1 -> Mlp.portable m (seed + uint64 r) split steps device dtype ]
