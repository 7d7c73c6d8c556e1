/// Optimizees as data plus pure functions. A problem holds no θ: it is an initial point θ_0 and a
/// loss of (step, θ). A problem may hold B independent functions whose coordinates sit side by side
/// in one θ; its loss is the sum of theirs, so each coordinate sees its own function's gradient.
namespace L2L

#nowarn "9" // native pointers into tensor memory (the fused MLP kernel)

open System
open Microsoft.FSharp.NativeInterop
open TorchSharp

type Problem =
    { /// Number of independent functions in the problem (B).
      Functions: int
      /// θ_0: [n]
      Theta0: Tensor
      /// Per-function losses at optimizee step t (on step t's minibatch): (t, θ [n]) -> [B].
      Losses: int -> Tensor -> Tensor
      /// Per-function losses at step t and ∇θ of their sum, by a hand-derived gradient without
      /// autograd: (t, θ [n]) -> [B], [n]. Evaluation's fast path; None: autograd on `Losses`.
      LossGrad: (int -> Tensor -> Tensor * Tensor) option
      /// Per-function loss on all of the problem's data (what results report): θ [n] -> [B].
      Full: Tensor -> Tensor
      /// Further metrics at θ (e.g. test-set loss and accuracy), one value per function each.
      Metrics: Tensor -> (string * float[]) list
      /// The tensors the problem owns (for disposal).
      Owned: Tensor list
      /// Releases what else the problem owns (e.g. a module), after its tensors.
      Release: unit -> unit }

module Problem =
    /// f(θ) at step t: the sum of the functions' losses (a scalar).
    let loss (p: Problem) (t: int) (theta: Tensor) : Tensor = (p.Losses t theta).sum()

    let coordinates (p: Problem) = p.Theta0.numel()

    let dispose (p: Problem) =
        for t in p.Owned do
            t.Dispose()
        p.Release()

    /// The problem in coordinates scaled by c [n] (positive): f'(θ) = f(c ⊙ θ), from θ'_0 = θ_0 / c
    /// (the same point), so ∇f'(θ) = c ⊙ ∇f(c ⊙ θ). The optimizer sees the function's curvature
    /// stretched coordinate by coordinate; losses and metrics are the function's own at c ⊙ θ.
    let scaled (c: Tensor) (p: Problem) : Problem =
        let at (theta: Tensor) = theta.mul(c)
        let theta0 = p.Theta0.div(c)
        { p with
            Theta0 = theta0
            Losses = fun t theta -> p.Losses t (at theta)
            LossGrad = p.LossGrad |> Option.map (fun lossGrad -> fun t theta -> let l, g = lossGrad t (at theta) in l, g.mul(c))
            Full = fun theta -> p.Full (at theta)
            Metrics = fun theta -> p.Metrics (at theta)
            Owned = c :: theta0 :: p.Owned }

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

    /// Per-function losses and ∇ = 2 Wᵀ(Wθ − y), without autograd. θ: [B·d] -> [B], [B·d]
    let lossGrad (q: Quadratic) (theta: Tensor) : Tensor * Tensor =
        let b = q.Y.shape[0]
        let d = q.Y.shape[1]
        let r = torch.bmm(q.W, theta.view(b, d, 1L)).squeeze(-1L).sub(q.Y)
        r.mul(r).sum(1L), torch.bmm(q.W.transpose(1L, 2L), r.unsqueeze(-1L)).view(-1L).Mul(2.0)

    let problem (q: Quadratic) : Problem =
        { Functions = functions q
          Theta0 = q.Theta0
          Losses = fun _ theta -> losses q theta
          LossGrad = Some(fun _ theta -> lossGrad q theta)
          Full = losses q
          Metrics = fun _ -> []
          Owned = [ q.W; q.Y; q.Theta0 ]
          Release = ignore }

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
        let theta0 = th.Mul(Theta0Std).to_type(dtype).``to``(device)
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

module DataSplit =
    /// (offset, length) of a split in the 60,000 training images.
    let range =
        function
        | TrainSplit -> 0L, 50000L
        | EvalSplit -> 50000L, 10000L

/// The data sets a task's problems are drawn from, loaded by the caller (L2L.Runtime's `Datasets`
/// reads them from disk): a task never fetches or reads files.
type TaskData =
    { Mnist: MnistData option }

module TaskData =
    /// No data sets: enough for the quadratics.
    let none = { Mnist = None }

    let ofMnist (d: MnistData) = { Mnist = Some d }

    let mnist (d: TaskData) =
        match d.Mnist with
        | Some m -> m
        | None -> invalidArg "data" "an MNIST task needs the MNIST data (TaskData.ofMnist)"

/// What the MNIST classifiers share: a problem from a logits function, whole-split losses taken a
/// chunk of rows at a time, and θ_0 and minibatches drawn from a generator or the portable stream.
module Classifier =
    /// Rows per chunk when a loss is taken over a whole split (bounds the float copy of the images).
    let private chunkRows = 1000L

    /// Mean cross-entropy over all of `x` and the number of correct predictions, a chunk of rows at
    /// a time (each chunk's float images and activations are released before the next).
    let fullLoss (logits: Tensor -> Tensor -> Tensor) (theta: Tensor) (x: Tensor) (y: Tensor) : Tensor * int64 =
        let n = x.shape[0]
        let mutable total = torch.zeros([||], dtype = theta.dtype, device = theta.device)
        let mutable correct = 0L
        let mutable start = 0L
        while start < n do
            let len = min chunkRows (n - start)
            let next =
                Scope.run (fun (t: Tensor) -> [ t ]) (fun () ->
                    let lg = logits theta (Mnist.scale theta.dtype (x.narrow(0L, start, len)))
                    let labels = y.narrow(0L, start, len)
                    correct <- correct + lg.detach().argmax(1L).eq(labels).sum().ToInt64()
                    total.Add(torch.nn.functional.cross_entropy(lg, labels, reduction = torch.nn.Reduction.Sum)))
            total.Dispose()
            total <- next
            start <- start + len
        total.Div(float n), correct

    /// A minibatch's loss and gradient over gathered rows (θ, x [B; 784] in [0, 1], labels [B]) as
    /// one over a split's images and labels and the minibatch's row indices [B].
    let gathered (lossGrad: Tensor -> Tensor -> Tensor -> Tensor * Tensor) (theta: Tensor) (x: Tensor) (y: Tensor) (idx: Tensor) =
        lossGrad theta (Mnist.scale theta.dtype (x.index_select(0L, idx))) (y.index_select(0L, idx))

    /// A problem: θ_0 [n] and minibatch indices [steps + 1; batch] into the split's images.
    /// logits: θ [n], x [B; 784] -> [B; 10]; lossGrad (optional): θ, the split's images and labels,
    /// the minibatch's row indices [B] -> loss, ∇θ loss.
    let problem (logits: Tensor -> Tensor -> Tensor) (lossGrad: (Tensor -> Tensor -> Tensor -> Tensor -> Tensor * Tensor) option) (data: MnistData) (split: DataSplit) (theta0: Tensor) (indices: Tensor) : Problem =
        let offset, length = DataSplit.range split
        let x = data.TrainX.narrow(0L, offset, length)
        let y = data.TrainY.narrow(0L, offset, length)
        { Functions = 1
          Theta0 = theta0
          Losses =
            fun t theta ->
                let idx = indices[int64 t]
                let batch = Mnist.scale theta.dtype (x.index_select(0L, idx))
                torch.nn.functional.cross_entropy(logits theta batch, y.index_select(0L, idx)).unsqueeze(0L)
          LossGrad =
            lossGrad
            |> Option.map (fun f t theta ->
                let loss, grad = f theta x y indices[int64 t]
                loss.unsqueeze(0L), grad)
          Full = fun theta -> (fst (fullLoss logits theta x y)).unsqueeze(0L)
          Metrics =
            fun theta ->
                let loss, correct = fullLoss logits theta data.TestX data.TestY
                [ "test_loss", [| loss.ToDouble() |]; "test_acc", [| float correct / float data.TestX.shape[0] |] ]
          Owned = [ theta0; indices; x; y ]
          Release = ignore }

    /// θ_0 = scale ⊙ N(0, 1) and uniform minibatch indices from a torch generator (meta-training).
    let sample (logits: Tensor -> Tensor -> Tensor) lossGrad (scale: float[]) (batch: int) (data: MnistData) (gen: torch.Generator) (split: DataSplit) (steps: int) (device: torch.Device) (dtype: torch.ScalarType) =
        let _, length = DataSplit.range split
        let theta0, indices =
            Tensors.build (fun (a: Tensor, b: Tensor) -> [ a; b ]) (fun () ->
                let z = torch.randn([| int64 scale.Length |], dtype = torch.ScalarType.Float64, generator = gen)
                let th = z.mul(torch.tensor(scale)).to_type(dtype).``to``(device)
                let idx = torch.randint(length, [| int64 (steps + 1); int64 batch |], generator = gen).``to``(device)
                th, idx)
        problem logits lossGrad data split theta0 indices

    /// The portable stream `seed`: first n normals (θ_0 = scale ⊙ normal), then (steps + 1)·batch
    /// indices (u64 mod the split's length), row t = step t.
    let portable (logits: Tensor -> Tensor -> Tensor) lossGrad (scale: float[]) (batch: int) (data: MnistData) (seed: uint64) (split: DataSplit) (steps: int) (device: torch.Device) (dtype: torch.ScalarType) =
        let n = scale.Length
        let _, length = DataSplit.range split
        let theta0, indices =
            Tensors.build (fun (a: Tensor, b: Tensor) -> [ a; b ]) (fun () ->
                let z = Portable.normals seed 0L n
                let th = Array.init n (fun i -> float32 (scale[i] * z[i]))
                let idx = Portable.randints seed (2L * int64 n) ((steps + 1) * batch) (int length)
                torch.tensor(th).to_type(dtype).``to``(device), torch.tensor(idx).reshape(int64 (steps + 1), int64 batch).``to``(device))
        problem logits lossGrad data split theta0 indices

module Mlp =
    let sizes (m: MlpSpec) = 784 :: m.Hidden @ [ 10 ]

    /// Number of parameters: per layer W [in; out] (row-major, h' = act(h·W + b)) then b [out].
    let count (m: MlpSpec) =
        sizes m |> List.pairwise |> List.sumBy (fun (i, o) -> i * o + o)

    /// Each layer's W [in; out] and b [out], as views of θ.
    let private layerViews (m: MlpSpec) (theta: Tensor) : (Tensor * Tensor)[] =
        let layers = sizes m |> List.pairwise |> Array.ofList
        let offsets = layers |> Array.scan (fun o (i, k) -> o + int64 (i * k + k)) 0L
        layers
        |> Array.mapi (fun j (i, o) ->
            theta.narrow(0L, offsets[j], int64 (i * o)).view(int64 i, int64 o), theta.narrow(0L, offsets[j] + int64 (i * o), int64 o))

    let private activate (m: MlpSpec) (z: Tensor) =
        match m.Activation with
        | Sigmoid -> z.sigmoid()
        | Relu -> z.relu()

    /// Logits of a batch. theta: [n], x: [B; 784] -> [B; 10]
    let logits (m: MlpSpec) (theta: Tensor) (x: Tensor) : Tensor =
        let views = layerViews m theta
        let mutable h = x
        views
        |> Array.iteri (fun k (w, b) ->
            let z = torch.addmm(b, h, w, 1.0f, 1.0f)
            h <- if k = views.Length - 1 then z else activate m z)
        h

    /// Mean cross-entropy of a batch and its gradient by hand-derived backpropagation, without
    /// autograd (evaluation's fast path). theta: [n], x: [B; 784], y: [B] -> loss [], ∇ [n]
    let lossGrad (m: MlpSpec) (theta: Tensor) (x: Tensor) (y: Tensor) : Tensor * Tensor =
        let views = layerViews m theta
        let last = views.Length - 1
        // forward, keeping each layer's input
        let inputs = Array.zeroCreate<Tensor> views.Length
        let mutable h = x
        for j in 0 .. last do
            inputs[j] <- h
            let w, b = views[j]
            let z = torch.addmm(b, h, w, 1.0f, 1.0f)
            h <- if j = last then z else activate m z
        let logp = torch.nn.functional.log_softmax(h, 1L)
        let onehot = torch.nn.functional.one_hot(y, 10L).to_type(theta.dtype)
        let loss = logp.mul(onehot).sum().Div(float x.shape[0]).neg()
        // ∂loss/∂logits = (softmax − onehot) / B, then back through the layers
        let mutable d = logp.exp().sub(onehot).Div(float x.shape[0])
        let pieces = Array.zeroCreate<Tensor> (2 * views.Length)
        for j in last .. -1 .. 0 do
            pieces[2 * j] <- torch.mm(inputs[j].t(), d).view(-1L)
            pieces[2 * j + 1] <- d.sum(0L)
            if j > 0 then
                let dh = torch.mm(d, (fst views[j]).t())
                let a = inputs[j]
                d <-
                    match m.Activation with
                    | Sigmoid -> dh.mul(a).mul(a.neg().Add(1.0))
                    | Relu -> dh.mul(a.Gt(0.0).to_type(a.dtype))
        loss, torch.cat(pieces, 0L)

    /// Whether `batchLossGrad` runs the fused kernel for these tensors: float32 θ on the CPU, uint8
    /// images of 784 pixels, int64 labels (one per image) and indices.
    let fusedFits (theta: Tensor) (x: Tensor) (y: Tensor) (idx: Tensor) =
        LstmKernel.available ()
        && theta.dtype = torch.ScalarType.Float32 && theta.device_type = DeviceType.CPU && theta.dim() = 1L
        && x.dtype = torch.ScalarType.Byte && x.device_type = DeviceType.CPU && x.dim() = 2L && x.shape[1] = 784L
        && y.dtype = torch.ScalarType.Int64 && y.device_type = DeviceType.CPU && y.dim() = 1L && y.shape[0] = x.shape[0]
        && idx.dtype = torch.ScalarType.Int64 && idx.device_type = DeviceType.CPU && idx.dim() = 1L

    /// `lossGrad` of the minibatch whose rows of the split's images x [rows; 784] and labels y are
    /// idx [B]: one call of the fused kernel (L2L.Kernels.MlpKernel: the gather, forward pass, loss and
    /// backward pass in its own buffers, instead of about 25 tensor operations) where `fusedFits`,
    /// else the tensor version on the gathered rows. The two agree to float32 rounding.
    let batchLossGrad (m: MlpSpec) (theta: Tensor) (x: Tensor) (y: Tensor) (idx: Tensor) : Tensor * Tensor =
        if fusedFits theta x y idx then
            let sizes = sizes m |> Array.ofList
            if int64 (count m) <> theta.shape[0] then
                invalidArg "theta" (sprintf "θ has %d coordinates; the network %A has %d" theta.shape[0] sizes (count m))
            let theta = theta.contiguous()
            let x = x.contiguous()
            let y = y.contiguous()
            let idx = idx.contiguous()
            let grad = torch.empty_like(theta)
            let at (t: Tensor) = NativePtr.ofNativeInt (LstmKernel.address t)
            let loss =
                Kernels.MlpKernel.LossGrad(sizes, (m.Activation = Relu), at theta, at x, at y, y.shape[0], at idx,
                                           int idx.shape[0], 255.0f, at grad)
            torch.tensor(loss), grad
        else
            Classifier.gathered (lossGrad m) theta x y idx

    /// θ_0 ~ N(0, 0.01²): the standard deviation of each coordinate.
    let initScale (m: MlpSpec) = Array.create (count m) 0.01

    /// A problem on MNIST (see Classifier.problem).
    let problem (m: MlpSpec) (data: MnistData) (split: DataSplit) (theta0: Tensor) (indices: Tensor) : Problem =
        Classifier.problem (logits m) (Some(batchLossGrad m)) data split theta0 indices

    /// θ_0 ~ N(0, 0.01²) and uniform minibatch indices from a torch generator (meta-training).
    let sample (m: MlpSpec) (data: MnistData) (gen: torch.Generator) (split: DataSplit) (steps: int) (device: torch.Device) (dtype: torch.ScalarType) =
        Classifier.sample (logits m) (Some(batchLossGrad m)) (initScale m) m.Batch data gen split steps device dtype

    /// The portable stream `seed` (θ_0 = 0.01·normal; identical to the reference implementation's).
    let portable (m: MlpSpec) (data: MnistData) (seed: uint64) (split: DataSplit) (steps: int) (device: torch.Device) (dtype: torch.ScalarType) =
        Classifier.portable (logits m) (Some(batchLossGrad m)) (initScale m) m.Batch data seed split steps device dtype

/// A small convolutional network on MNIST (the paper's CIFAR-10 architecture, §3.4, scaled to
/// MNIST): per conv layer a 3×3 convolution (padding 1), batch normalisation, ReLU and 2×2
/// max-pooling; then a fully connected layer with batch normalisation and ReLU, and the 10-way
/// output. θ holds the conv parameters first, then the fully connected ones, so the two
/// coordinatewise LSTMs each own one contiguous block. Batch normalisation uses the statistics of
/// the batch it sees (a minibatch; 1000 rows at a time for a loss on a whole split): the network
/// is a function of θ alone, with no running averages.
type ConvSpec =
    { /// Output channels of each conv layer (input: 1 channel, 28×28).
      Channels: int list
      /// Units of the fully connected hidden layer (0: the conv features go straight to the output).
      Dense: int
      Batch: int }

module Conv =
    /// Side of the feature maps after the conv layers (each pooling halves it, rounding down).
    let side (c: ConvSpec) = c.Channels |> List.fold (fun s _ -> s / 2) 28

    let private convLayers (c: ConvSpec) = List.pairwise (1 :: c.Channels)

    /// Dense layers (in, out): the flattened conv features → Dense (if any) → 10.
    let denseLayers (c: ConvSpec) =
        let features = (List.last (1 :: c.Channels)) * side c * side c
        (if c.Dense > 0 then [ features; c.Dense; 10 ] else [ features; 10 ]) |> List.pairwise

    /// Conv parameters: per layer W [out; in; 3; 3], then the normalisation's scale γ − 1 [out] and
    /// shift β [out] (β takes the place of the convolution's bias).
    let convCount (c: ConvSpec) = convLayers c |> List.sumBy (fun (i, o) -> o * i * 9 + 2 * o)

    /// Fully connected parameters: per hidden layer W [in; out] (h·W), γ − 1 [out] and β [out]; the
    /// output layer W [in; out] and b [out].
    let denseCount (c: ConvSpec) =
        let layers = denseLayers c
        layers |> List.mapi (fun k (i, o) -> i * o + (if k = layers.Length - 1 then o else 2 * o)) |> List.sum

    let count (c: ConvSpec) = convCount c + denseCount c

    /// θ_0: weights N(0, 2/fan_in) (He initialisation: with ReLU, the scale N(0, 0.01²) of the MLP
    /// leaves the output layer's input near zero), γ − 1, β and the output bias 0.
    let initScale (c: ConvSpec) : float[] =
        [| for i, o in convLayers c do
               yield! Array.create (o * i * 9) (sqrt (2.0 / float (i * 9)))
               yield! Array.zeroCreate<float> (2 * o)
           let dense = denseLayers c
           for k, (i, o) in List.indexed dense do
               yield! Array.create (i * o) (sqrt (2.0 / float i))
               yield! Array.zeroCreate<float> (if k = dense.Length - 1 then o else 2 * o) |]

    [<Literal>]
    let private NormEps = 1e-5

    /// Batch normalisation over `dims` with the batch's own statistics, scale 1 + g and shift β.
    /// z: [B; o; ...], g, beta: [o] viewed as `shape`
    let private normalise (z: Tensor) (dims: int64[]) (g: Tensor) (beta: Tensor) (shape: int64[]) =
        let centred = z.sub(z.mean(dims, true))
        let var = centred.mul(centred).mean(dims, true)
        centred.div(var.Add(NormEps).sqrt()).mul(g.view(shape).Add(1.0)).Add(beta.view(shape))

    /// A 3×3 convolution with padding 1 as a product with the input's 3×3 patches (im2col: the
    /// padded input's nine shifted views, stacked). Measured here, libtorch's CPU conv2d backward
    /// (2.10) intermittently returned NaN weight gradients for this network (12 of 300 identical
    /// calls), and its unfold was 4–7× slower than these views; this form never returned a NaN.
    /// h: [B; in; s; s], w: [out; in; 3; 3] -> [B; out; s; s]
    let private conv3x3 (w: Tensor) (h: Tensor) =
        let n, channels, side, o = h.shape[0], h.shape[1], h.shape[2], w.shape[0]
        let padded = torch.nn.functional.pad(h, [| 1L; 1L; 1L; 1L |])
        let patches =
            torch.stack([| for dy in 0L .. 2L do
                               for dx in 0L .. 2L -> padded.narrow(2L, dy, side).narrow(3L, dx, side) |], 2L)
        // patches: [B; in; 9; s; s] -> [B; in·9; s·s], the order of w's [in; 3; 3]
        torch.matmul(w.reshape(o, -1L), patches.view(n, channels * 9L, side * side)).view(n, o, side, side)

    /// The conv layers' output, flattened: what the fully connected layers see. Reads only the
    /// first `convCount` coordinates of θ. theta: [n], x: [B; 784] -> [B; features]
    let features (c: ConvSpec) (theta: Tensor) (x: Tensor) : Tensor =
        let mutable offset = 0L
        let take (n: int) =
            let t = theta.narrow(0L, offset, int64 n)
            offset <- offset + int64 n
            t
        let mutable h = x.view(-1L, 1L, 28L, 28L)
        for i, o in convLayers c do
            let w = (take (o * i * 9)).view(int64 o, int64 i, 3L, 3L)
            let g = take o
            let beta = take o
            let z = normalise (conv3x3 w h) [| 0L; 2L; 3L |] g beta [| 1L; int64 o; 1L; 1L |]
            h <- torch.nn.functional.max_pool2d(z.relu(), [| 2L; 2L |], [| 2L; 2L |], [| 0L; 0L |], [| 1L; 1L |], false)
        h.flatten(1L)

    /// Logits of a batch. theta: [n], x: [B; 784] -> [B; 10]
    let logits (c: ConvSpec) (theta: Tensor) (x: Tensor) : Tensor =
        let mutable h = features c theta x
        let mutable offset = int64 (convCount c)
        let take (n: int) =
            let t = theta.narrow(0L, offset, int64 n)
            offset <- offset + int64 n
            t
        let dense = denseLayers c
        for k, (i, o) in List.indexed dense do
            let w = (take (i * o)).view(int64 i, int64 o)
            if k = dense.Length - 1 then
                h <- torch.addmm(take o, h, w, 1.0f, 1.0f)
            else
                let g = take o
                let beta = take o
                h <- (normalise (torch.mm(h, w)) [| 0L |] g beta [| 1L; int64 o |]).relu()
        h

    let problem (c: ConvSpec) (data: MnistData) (split: DataSplit) (theta0: Tensor) (indices: Tensor) : Problem =
        Classifier.problem (logits c) None data split theta0 indices

    let sample (c: ConvSpec) (data: MnistData) (gen: torch.Generator) (split: DataSplit) (steps: int) (device: torch.Device) (dtype: torch.ScalarType) =
        Classifier.sample (logits c) None (initScale c) c.Batch data gen split steps device dtype

    let portable (c: ConvSpec) (data: MnistData) (seed: uint64) (split: DataSplit) (steps: int) (device: torch.Device) (dtype: torch.ScalarType) =
        Classifier.portable (logits c) None (initScale c) c.Batch data seed split steps device dtype

/// A task defined outside the toolkit's families (e.g. a TorchSharp module, L2L.Functional's
/// `Task.ofModule`): its problems come from functions. Two are equal when their names, coordinates
/// and groups are, which is what a checkpoint records of them.
[<CustomEquality; NoComparison>]
type CustomTask =
    { Name: string
      Description: string
      Coordinates: int
      Groups: (string * int) list
      UsesMnist: bool
      SecondOrder: bool
      Train: TaskData -> int64 -> int64 -> int -> int -> torch.Device -> torch.ScalarType -> Problem
      HeldOut: TaskData -> DataSplit -> uint64 -> int -> int -> torch.Device -> torch.ScalarType -> Problem list }

    member private t.Key = t.Name, t.Coordinates, t.Groups

    override t.Equals(o: obj) =
        match o with
        | :? CustomTask as u -> t.Key = u.Key
        | _ -> false

    override t.GetHashCode() = hash t.Key

module CustomTask =
    /// A task known only by what a checkpoint records (name, coordinates, groups): enough to compare
    /// with the configuration resuming it; drawing a problem from it fails.
    let recorded (name: string) (description: string) (coordinates: int) (groups: (string * int) list) =
        let missing _ = invalidOp (sprintf "task '%s' was read from a checkpoint: resume it with the task itself" name)
        { Name = name
          Description = description
          Coordinates = coordinates
          Groups = groups
          UsesMnist = false
          SecondOrder = false
          Train = fun _ _ _ _ _ _ _ -> missing ()
          HeldOut = fun _ _ _ _ _ _ _ -> missing () }

/// The task families the toolkit knows, with their settings, and tasks defined outside it.
type TaskSpec =
    | Quadratic of dim: int
    | Mlp of MlpSpec
    | Conv of ConvSpec
    | Custom of CustomTask

module TaskSpec =
    /// The small conv net of `mnist-conv`: 3×3 convs with 4 and 8 channels, batch normalisation,
    /// max-pooling, 32 dense units.
    let convDefault = { Channels = [ 4; 8 ]; Dense = 32; Batch = 128 }

    let name =
        function
        | Quadratic _ -> "quadratic"
        | Mlp _ -> "mnist"
        | Conv _ -> "mnist-conv"
        | Custom c -> c.Name

    /// A short description with the settings (for logs and results).
    let describe =
        function
        | Quadratic d -> sprintf "quadratic (d=%d)" d
        | Mlp m ->
            sprintf "mnist MLP 784-%s-10 %s, batch %d" (m.Hidden |> List.map string |> String.concat "-")
                (match m.Activation with Sigmoid -> "sigmoid" | Relu -> "relu") m.Batch
        | Conv c ->
            sprintf "mnist conv net: %s, 3×3 conv + batch norm + ReLU + 2×2 max-pool each, %s10; batch %d"
                (c.Channels |> List.map (sprintf "%d ch") |> String.concat ", ")
                (if c.Dense > 0 then sprintf "dense %d + batch norm + ReLU, " c.Dense else "") c.Batch
        | Custom c -> c.Description

    /// Optimizee coordinates of one function.
    let coordinates =
        function
        | Quadratic d -> d
        | Mlp m -> Mlp.count m
        | Conv c -> Conv.count c
        | Custom c -> c.Coordinates

    /// The coordinate groups of one function, each with its own learned optimizer, in θ's order:
    /// (name, coordinates). One group for the quadratic and the MLP; the conv net has two, its conv
    /// parameters and its fully connected ones (paper §3.4).
    let groups (t: TaskSpec) : (string * int) list =
        match t with
        | Conv c -> [ "conv", Conv.convCount c; "fc", Conv.denseCount c ]
        | Custom c -> c.Groups
        | _ -> [ "all", coordinates t ]

    let validate (t: TaskSpec) =
        match t with
        | Quadratic d when d < 1 -> Error [ "quadratic dimension must be ≥ 1" ]
        | Mlp m when m.Hidden |> List.exists (fun h -> h < 1) -> Error [ "hidden layer widths must be ≥ 1" ]
        | Mlp m when m.Batch < 1 -> Error [ "batch must be ≥ 1" ]
        | Conv c when c.Channels.IsEmpty || c.Channels |> List.exists (fun h -> h < 1) -> Error [ "conv channels must be a non-empty list of positive counts" ]
        | Conv c when c.Channels.Length > 4 -> Error [ "at most 4 conv layers (each halves the 28×28 image)" ]
        | Conv c when c.Dense < 0 -> Error [ "dense units must be ≥ 0" ]
        | Conv c when c.Batch < 1 -> Error [ "batch must be ≥ 1" ]
        | Custom c when String.IsNullOrWhiteSpace c.Name -> Error [ "a task needs a name" ]
        | Custom c when c.Groups.IsEmpty || c.Groups |> List.exists (fun (_, k) -> k < 1) ->
            Error [ sprintf "task '%s': every coordinate group needs at least one coordinate" c.Name ]
        | Custom c when List.sumBy snd c.Groups <> c.Coordinates ->
            Error [ sprintf "task '%s': its groups cover %d coordinates, not its %d" c.Name (List.sumBy snd c.Groups) c.Coordinates ]
        | _ -> Ok t

    /// Meta-training problem number `index` of a run seeded `seed`, drawn from a generator derived
    /// from (seed, index), so a run can be replayed or resumed from its counter. Quadratic: B
    /// functions side by side; MNIST: one network on the training split.
    let trainProblem (data: TaskData) (t: TaskSpec) (seed: int64) (index: int64) (functions: int) (steps: int) device dtype : Problem =
        use gen = Seeds.generator seed 1UL index
        match t with
        | Quadratic dim -> Quadratic.problem (Quadratic.sample gen dim functions device dtype)
        | Mlp m -> Mlp.sample m (TaskData.mnist data) gen TrainSplit steps device dtype
        | Conv c -> Conv.sample c (TaskData.mnist data) gen TrainSplit steps device dtype
        | Custom c -> c.Train data seed index functions steps device dtype

    /// Held-out problems from the portable stream: quadratic, one problem of `count` functions;
    /// MNIST, `count` networks (seeds seed, seed + 1, ...) on the given split.
    let heldOut (data: TaskData) (t: TaskSpec) (split: DataSplit) (seed: uint64) (count: int) (steps: int) device dtype : Problem list =
        match t with
        | Quadratic dim -> [ Quadratic.problem (Quadratic.portable seed dim count device dtype) ]
        | Mlp m -> [ for r in 0 .. count - 1 -> Mlp.portable m (TaskData.mnist data) (seed + uint64 r) split steps device dtype ]
        | Conv c -> [ for r in 0 .. count - 1 -> Conv.portable c (TaskData.mnist data) (seed + uint64 r) split steps device dtype ]
        | Custom c -> c.HeldOut data split seed count steps device dtype

    /// Whether the task's problems are drawn from MNIST (so need TaskData.ofMnist).
    let usesMnist =
        function
        | Quadratic _ -> false
        | Mlp _
        | Conv _ -> true
        | Custom c -> c.UsesMnist

    /// The learned optimizer for task t: one φ per coordinate group (see `groups`), each on its own
    /// block of θ.
    let learned (backend: Backend) (t: TaskSpec) (phis: Phi list) : Optimizer =
        Learned.grouped backend (groups t) phis

/// One task of a meta-training mixture: drawn for a trajectory with probability proportional to
/// Weight, with Functions functions side by side (quadratics; 1 for a network), and Validation
/// held-out functions (networks) in the mixture's validation problems (0: none).
type MixtureComponent =
    { Task: TaskSpec
      Weight: float
      Functions: int
      Validation: int }

/// A distribution of tasks to meta-train one φ on (Wichrowska et al. 2017; Metz et al. 2020): each
/// trajectory's problem is drawn from one component, chosen from the trajectory's own seed and counter.
module Mixture =
    /// What is wrong with a list of components (empty: nothing).
    let problems (components: MixtureComponent list) : string list =
        [ if components.IsEmpty then "a mixture needs at least one task"
          for c in components do
              match TaskSpec.validate c.Task with
              | Error e -> yield! e
              | Ok _ -> ()
              match c.Task with
              | Custom _ -> sprintf "a mixture's tasks are built-in ones, not '%s'" (TaskSpec.name c.Task)
              | _ -> ()
              if not (Double.IsFinite c.Weight) || c.Weight <= 0.0 then sprintf "%s: weight must be positive" (TaskSpec.describe c.Task)
              if c.Functions < 1 then sprintf "%s: functions must be ≥ 1" (TaskSpec.describe c.Task)
              if c.Validation < 0 then sprintf "%s: validation functions must be ≥ 0" (TaskSpec.describe c.Task)
          if not components.IsEmpty && components |> List.forall (fun c -> c.Validation = 0) then
              "a mixture needs validation functions in at least one of its tasks" ]

    /// The component of trajectory `index` of a run seeded `seed`.
    let pick (components: MixtureComponent list) (seed: int64) (index: int64) : int =
        use gen = Seeds.generator seed 0x4D495854UL index
        let u = torch.rand([| 1L |], dtype = torch.ScalarType.Float64, generator = gen).ToDouble() * List.sumBy (fun c -> c.Weight) components
        let cumulative = components |> List.scan (fun s c -> s + c.Weight) 0.0 |> List.tail
        match cumulative |> List.tryFindIndex (fun s -> u < s) with
        | Some k -> k
        | None -> components.Length - 1

    let private describeAll (components: MixtureComponent list) =
        components
        |> List.map (fun c -> sprintf "%s%s (weight %g)" (TaskSpec.describe c.Task) (if c.Functions > 1 then sprintf " ×%d" c.Functions else "") c.Weight)
        |> String.concat "; "

    /// The mixture as a task of one coordinate group (one φ for every parameter of every component,
    /// a conv net's included). Training problems: one component's, with that component's functions
    /// (the run's batch of functions is not used). Validation problems: each component's held-out
    /// ones, seeds apart, in order (validation averages the problems' mean losses).
    let task (components: MixtureComponent list) : TaskSpec =
        match problems components with
        | e :: _ -> invalidArg "components" e
        | [] -> ()
        let widest = components |> List.map (fun c -> TaskSpec.coordinates c.Task) |> List.max
        Custom
            { Name = "mixture"
              Description = "mixture: " + describeAll components
              Coordinates = widest
              Groups = [ "all", widest ]
              UsesMnist = components |> List.exists (fun c -> TaskSpec.usesMnist c.Task)
              SecondOrder = false
              Train =
                fun data seed index _ steps device dtype ->
                    let c = components[pick components seed index]
                    TaskSpec.trainProblem data c.Task seed index c.Functions steps device dtype
              HeldOut =
                fun data split seed _ steps device dtype ->
                    [ for k, c in List.indexed components do
                          if c.Validation > 0 then
                              yield! TaskSpec.heldOut data c.Task split (seed + 7919UL * uint64 k) c.Validation steps device dtype ] }
