namespace L2L

    type Problem =
        {

          /// Number of independent functions in the problem (B).
          Functions: int

          /// θ_0: [n]
          Theta0: Tensor

          /// Per-function losses at optimizee step t (on step t's minibatch): (t, θ [n]) -> [B].
          Losses: (int -> Tensor -> Tensor)

          /// Per-function losses at step t and ∇θ of their sum, by a hand-derived gradient without
          /// autograd: (t, θ [n]) -> [B], [n]. Evaluation's fast path; None: autograd on `Losses`.
          LossGrad: (int -> Tensor -> Tensor * Tensor) option

          /// Per-function loss on all of the problem's data (what results report): θ [n] -> [B].
          Full: (Tensor -> Tensor)

          /// Further metrics at θ (e.g. test-set loss and accuracy), one value per function each.
          Metrics: (Tensor -> (string * float array) list)

          /// The tensors the problem owns (for disposal).
          Owned: Tensor list

          /// Releases what else the problem owns (e.g. a module), after its tensors.
          Release: (unit -> unit)
        }

    module Problem =

        /// f(θ) at step t: the sum of the functions' losses (a scalar).
        val loss: p: Problem -> t: int -> theta: Tensor -> Tensor

        val coordinates: p: Problem -> int64

        val dispose: p: Problem -> unit

        /// The problem in coordinates scaled by c [n] (positive): f'(θ) = f(c ⊙ θ), from θ'_0 = θ_0 / c
        /// (the same point), so ∇f'(θ) = c ⊙ ∇f(c ⊙ θ). The optimizer sees the function's curvature
        /// stretched coordinate by coordinate; losses and metrics are the function's own at c ⊙ θ.
        val scaled: c: Tensor -> p: Problem -> Problem

    /// The quadratic family f(θ) = ‖Wθ − y‖², W ∈ R^{d×d}, y ∈ R^d IID N(0, 1) (paper §3.1).
    type Quadratic =
        {

          /// [B; d; d]
          W: Tensor

          /// [B; d]
          Y: Tensor

          /// [B·d]
          Theta0: Tensor
        }

    module Quadratic =

        /// Standard deviation of θ_0 (θ_0 ~ N(0, 0.01²), as in the reference implementations).
        [<Literal>]
        val Theta0Std: float = 0.01

        val dim: q: Quadratic -> int

        val functions: q: Quadratic -> int

        /// θ: [B·d] -> per-function ‖W_b θ_b − y_b‖²: [B]
        val losses: q: Quadratic -> theta: Tensor -> Tensor

        /// Per-function losses and ∇ = 2 Wᵀ(Wθ − y), without autograd. θ: [B·d] -> [B], [B·d]
        val lossGrad: q: Quadratic -> theta: Tensor -> Tensor * Tensor

        val problem: q: Quadratic -> Problem

        val sample:
          gen: TorchSharp.torch.Generator ->
            dim: int ->
            count: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Quadratic

        /// B functions from the portable stream `seed`: per function, in order, W (row-major), y, θ_0/0.01.
        /// Identical to the reference PyTorch implementation's evaluation problems for the same seed.
        val portable:
          seed: uint64 ->
            dim: int ->
            count: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Quadratic

    type Activation =
        | Sigmoid
        | Relu

    /// A multi-layer perceptron on MNIST: 784 → hidden… → 10, cross-entropy on minibatches.
    type MlpSpec =
        {
          Hidden: int list
          Activation: Activation
          Batch: int
        }

    /// Which images an MNIST problem trains on: meta-training, tuning and validation use the first
    /// 50,000 training images; evaluation uses the other 10,000 (and reports the 10,000 test images too).
    type DataSplit =
        | TrainSplit
        | EvalSplit

    module DataSplit =

        /// (offset, length) of a split in the 60,000 training images.
        val range: _arg1: DataSplit -> int64 * int64

    /// The data sets a task's problems are drawn from, loaded by the caller (L2L.Runtime's `Datasets`
    /// reads them from disk): a task never fetches or reads files.
    type TaskData =
        { Mnist: MnistData option }

    module TaskData =

        /// No data sets: enough for the quadratics.
        val none: TaskData

        val ofMnist: d: MnistData -> TaskData

        val mnist: d: TaskData -> MnistData

    /// What the MNIST classifiers share: a problem from a logits function, whole-split losses taken a
    /// chunk of rows at a time, and θ_0 and minibatches drawn from a generator or the portable stream.
    module Classifier =

        /// Mean cross-entropy over all of `x` and the number of correct predictions, a chunk of rows at
        /// a time (each chunk's float images and activations are released before the next).
        val fullLoss:
          logits: (Tensor -> Tensor -> Tensor) ->
            theta: Tensor -> x: Tensor -> y: Tensor -> Tensor * int64

        /// A minibatch's loss and gradient over gathered rows (θ, x [B; 784] in [0, 1], labels [B]) as
        /// one over a split's images and labels and the minibatch's row indices [B].
        val gathered:
          lossGrad: (Tensor -> Tensor -> Tensor -> Tensor * Tensor) ->
            theta: Tensor ->
            x: Tensor -> y: Tensor -> idx: Tensor -> Tensor * Tensor

        /// A problem: θ_0 [n] and minibatch indices [steps + 1; batch] into the split's images.
        /// logits: θ [n], x [B; 784] -> [B; 10]; lossGrad (optional): θ, the split's images and labels,
        /// the minibatch's row indices [B] -> loss, ∇θ loss.
        val problem:
          logits: (Tensor -> Tensor -> Tensor) ->
            lossGrad: (Tensor -> Tensor -> Tensor -> Tensor -> Tensor * Tensor) option ->
            data: MnistData ->
            split: DataSplit -> theta0: Tensor -> indices: Tensor -> Problem

        /// θ_0 = scale ⊙ N(0, 1) and uniform minibatch indices from a torch generator (meta-training).
        val sample:
          logits: (Tensor -> Tensor -> Tensor) ->
            lossGrad: (Tensor -> Tensor -> Tensor -> Tensor -> Tensor * Tensor) option ->
            scale: float array ->
            batch: int ->
            data: MnistData ->
            gen: TorchSharp.torch.Generator ->
            split: DataSplit ->
            steps: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Problem

        /// The portable stream `seed`: first n normals (θ_0 = scale ⊙ normal), then (steps + 1)·batch
        /// indices (u64 mod the split's length), row t = step t.
        val portable:
          logits: (Tensor -> Tensor -> Tensor) ->
            lossGrad: (Tensor -> Tensor -> Tensor -> Tensor -> Tensor * Tensor) option ->
            scale: float array ->
            batch: int ->
            data: MnistData ->
            seed: uint64 ->
            split: DataSplit ->
            steps: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Problem

    module Mlp =

        val sizes: m: MlpSpec -> int list

        /// Number of parameters: per layer W [in; out] (row-major, h' = act(h·W + b)) then b [out].
        val count: m: MlpSpec -> int

        /// Logits of a batch. theta: [n], x: [B; 784] -> [B; 10]
        val logits: m: MlpSpec -> theta: Tensor -> x: Tensor -> Tensor

        /// Mean cross-entropy of a batch and its gradient by hand-derived backpropagation, without
        /// autograd (evaluation's fast path). theta: [n], x: [B; 784], y: [B] -> loss [], ∇ [n]
        val lossGrad:
          m: MlpSpec ->
            theta: Tensor -> x: Tensor -> y: Tensor -> Tensor * Tensor

        /// Whether `batchLossGrad` runs the fused kernel for these tensors: float32 θ on the CPU, uint8
        /// images of 784 pixels, int64 labels (one per image) and indices.
        val fusedFits:
          theta: Tensor -> x: Tensor -> y: Tensor -> idx: Tensor -> bool

        /// `lossGrad` of the minibatch whose rows of the split's images x [rows; 784] and labels y are
        /// idx [B]: one call of the fused kernel (L2L.Kernels.MlpKernel: the gather, forward pass, loss and
        /// backward pass in its own buffers, instead of about 25 tensor operations) where `fusedFits`,
        /// else the tensor version on the gathered rows. The two agree to float32 rounding.
        val batchLossGrad:
          m: MlpSpec ->
            theta: Tensor ->
            x: Tensor -> y: Tensor -> idx: Tensor -> Tensor * Tensor

        /// θ_0 ~ N(0, 0.01²): the standard deviation of each coordinate.
        val initScale: m: MlpSpec -> float array

        /// A problem on MNIST (see Classifier.problem).
        val problem:
          m: MlpSpec ->
            data: MnistData ->
            split: DataSplit -> theta0: Tensor -> indices: Tensor -> Problem

        /// θ_0 ~ N(0, 0.01²) and uniform minibatch indices from a torch generator (meta-training).
        val sample:
          m: MlpSpec ->
            data: MnistData ->
            gen: TorchSharp.torch.Generator ->
            split: DataSplit ->
            steps: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Problem

        /// The portable stream `seed` (θ_0 = 0.01·normal; identical to the reference implementation's).
        val portable:
          m: MlpSpec ->
            data: MnistData ->
            seed: uint64 ->
            split: DataSplit ->
            steps: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Problem

    /// A small convolutional network on MNIST (the paper's CIFAR-10 architecture, §3.4, scaled to
    /// MNIST): per conv layer a 3×3 convolution (padding 1), batch normalisation, ReLU and 2×2
    /// max-pooling; then a fully connected layer with batch normalisation and ReLU, and the 10-way
    /// output. θ holds the conv parameters first, then the fully connected ones, so the two
    /// coordinatewise LSTMs each own one contiguous block. Batch normalisation uses the statistics of
    /// the batch it sees (a minibatch; 1000 rows at a time for a loss on a whole split): the network
    /// is a function of θ alone, with no running averages.
    type ConvSpec =
        {

          /// Output channels of each conv layer (input: 1 channel, 28×28).
          Channels: int list

          /// Units of the fully connected hidden layer (0: the conv features go straight to the output).
          Dense: int
          Batch: int
        }

    module Conv =

        /// Side of the feature maps after the conv layers (each pooling halves it, rounding down).
        val side: c: ConvSpec -> int

        /// Dense layers (in, out): the flattened conv features → Dense (if any) → 10.
        val denseLayers: c: ConvSpec -> (int * int) list

        /// Conv parameters: per layer W [out; in; 3; 3], then the normalisation's scale γ − 1 [out] and
        /// shift β [out] (β takes the place of the convolution's bias).
        val convCount: c: ConvSpec -> int

        /// Fully connected parameters: per hidden layer W [in; out] (h·W), γ − 1 [out] and β [out]; the
        /// output layer W [in; out] and b [out].
        val denseCount: c: ConvSpec -> int

        val count: c: ConvSpec -> int

        /// θ_0: weights N(0, 2/fan_in) (He initialisation: with ReLU, the scale N(0, 0.01²) of the MLP
        /// leaves the output layer's input near zero), γ − 1, β and the output bias 0.
        val initScale: c: ConvSpec -> float array

        /// The conv layers' output, flattened: what the fully connected layers see. Reads only the
        /// first `convCount` coordinates of θ. theta: [n], x: [B; 784] -> [B; features]
        val features: c: ConvSpec -> theta: Tensor -> x: Tensor -> Tensor

        /// Logits of a batch. theta: [n], x: [B; 784] -> [B; 10]
        val logits: c: ConvSpec -> theta: Tensor -> x: Tensor -> Tensor

        val problem:
          c: ConvSpec ->
            data: MnistData ->
            split: DataSplit -> theta0: Tensor -> indices: Tensor -> Problem

        val sample:
          c: ConvSpec ->
            data: MnistData ->
            gen: TorchSharp.torch.Generator ->
            split: DataSplit ->
            steps: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Problem

        val portable:
          c: ConvSpec ->
            data: MnistData ->
            seed: uint64 ->
            split: DataSplit ->
            steps: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Problem

    /// A task defined outside the toolkit's families (e.g. a TorchSharp module, L2L.Functional's
    /// `Task.ofModule`): its problems come from functions. Two are equal when their names, coordinates
    /// and groups are, which is what a checkpoint records of them.
    [<CustomEquality; NoComparison>]
    type CustomTask =
        {
          /// Its name in logs, results, checkpoints and job specs.
          Name: string
          Description: string

          /// Optimizee coordinates of one problem.
          Coordinates: int

          /// (name, coordinates) of each block of θ with its own φ, in θ's order; they sum to Coordinates.
          Groups: (string * int) list

          /// Whether its problems read TaskData's MNIST.
          UsesMnist: bool

          /// Whether its losses are differentiable twice in θ (second-order meta-gradients).
          SecondOrder: bool

          /// data, seed, index, functions, steps, device, dtype -> meta-training problem `index` of a run
          /// seeded `seed` (a function of those only, so a run can be replayed or resumed).
          Train:
            (TaskData -> int64 -> int64 -> int -> int -> TorchSharp.torch.Device -> TorchSharp.torch.ScalarType -> Problem)

          /// data, split, seed, count, steps, device, dtype -> `count` held-out problems of a split.
          HeldOut:
            (TaskData -> DataSplit -> uint64 -> int -> int -> TorchSharp.torch.Device -> TorchSharp.torch.ScalarType -> Problem list)
        }

        override Equals: obj -> bool
        override GetHashCode: unit -> int

    module CustomTask =

        /// A task known only by what a checkpoint records (name, description, coordinates, groups):
        /// enough to compare with the configuration resuming it; drawing a problem from it fails.
        val recorded:
          name: string -> description: string -> coordinates: int -> groups: (string * int) list -> CustomTask

    /// The task families the toolkit knows, with their settings, and tasks defined outside it.
    type TaskSpec =
        | Quadratic of dim: int
        | Mlp of MlpSpec
        | Conv of ConvSpec
        | Custom of CustomTask

    module TaskSpec =

        /// The small conv net of `mnist-conv`: 3×3 convs with 4 and 8 channels, batch normalisation,
        /// max-pooling, 32 dense units.
        val convDefault: ConvSpec

        val name: _arg1: TaskSpec -> string

        /// A short description with the settings (for logs and results).
        val describe: _arg1: TaskSpec -> string

        /// Optimizee coordinates of one function.
        val coordinates: _arg1: TaskSpec -> int

        /// The coordinate groups of one function, each with its own learned optimizer, in θ's order:
        /// (name, coordinates). One group for the quadratic and the MLP; the conv net has two, its conv
        /// parameters and its fully connected ones (paper §3.4).
        val groups: t: TaskSpec -> (string * int) list

        val validate: t: TaskSpec -> Result<TaskSpec,string list>

        /// Meta-training problem number `index` of a run seeded `seed`, drawn from a generator derived
        /// from (seed, index), so a run can be replayed or resumed from its counter. Quadratic: B
        /// functions side by side; MNIST: one network on the training split.
        val trainProblem:
          data: TaskData ->
            t: TaskSpec ->
            seed: int64 ->
            index: int64 ->
            functions: int ->
            steps: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Problem

        /// Held-out problems from the portable stream: quadratic, one problem of `count` functions;
        /// MNIST, `count` networks (seeds seed, seed + 1, ...) on the given split.
        val heldOut:
          data: TaskData ->
            t: TaskSpec ->
            split: DataSplit ->
            seed: uint64 ->
            count: int ->
            steps: int ->
            device: TorchSharp.torch.Device ->
            dtype: TorchSharp.torch.ScalarType -> Problem list

        /// Whether the task's problems are drawn from MNIST (so need TaskData.ofMnist).
        val usesMnist: _arg1: TaskSpec -> bool

        /// The learned optimizer for task t: one φ per coordinate group (see `groups`), each on its own
        /// block of θ.
        val learned:
          backend: Backend -> t: TaskSpec -> phis: Phi list -> Optimizer


    /// One task of a meta-training mixture: drawn for a trajectory with probability proportional to
    /// Weight, with Functions functions side by side (quadratics; 1 for a network), and Validation
    /// held-out functions (networks) in the mixture's validation problems (0: none).
    type MixtureComponent =
        {
          Task: TaskSpec
          Weight: float
          Functions: int
          Validation: int
        }

    /// A distribution of tasks to meta-train one φ on (Wichrowska et al. 2017; Metz et al. 2020): each
    /// trajectory's problem is drawn from one component, chosen from the trajectory's own seed and counter.
    module Mixture =

        /// What is wrong with a list of components (empty: nothing).
        val problems: components: MixtureComponent list -> string list

        /// The component of trajectory `index` of a run seeded `seed`.
        val pick: components: MixtureComponent list -> seed: int64 -> index: int64 -> int

        /// The mixture as a task of one coordinate group (one φ for every parameter of every
        /// component, a conv net's included). Training problems: one component's, with that
        /// component's functions (the run's batch of functions is not used). Validation problems:
        /// each component's held-out ones, seeds apart, in order (validation averages the problems'
        /// mean losses).
        val task: components: MixtureComponent list -> TaskSpec
