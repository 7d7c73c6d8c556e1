/// The command line's vocabulary (Argu). Parsing only: no work is done here.
module L2L.Cli.Args

open Argu

type TrainArgs =
    | [<Mandatory>] Task of name: string
    | [<Mandatory>] Out of dir: string
    | Meta_Iterations of n: int
    | Seed of seed: int64
    | Unroll of steps: int
    | Steps of horizon: int
    | Meta_Lr of lr: float
    | Out_Scale of scale: float
    | Architecture of name: string
    | Averaged of cells: int
    | Reads of heads: int
    | Writes of heads: int
    | Memory_Steps of steps: int
    | Hidden of units: int
    | Layers of n: int
    | Preprocessing of kind: string
    | Betas of betas: string
    | Beta2 of beta2: float
    | P of p: float
    | Dim of d: int
    | Mlp_Hidden of widths: string
    | Activation of name: string
    | Conv_Channels of channels: string
    | Conv_Dense of units: int
    | Batch of size: int
    | Data_Dir of dir: string
    | Batch_Functions of n: int
    | Validate_Every of n: int
    | Validation_Functions of n: int
    | Second_Order
    | Log_Loss
    | Sum_Loss
    | Random_Scaling of a: float
    | Curriculum of horizons: string
    | Imitation of probability: float
    | Imitation_Lr of lr: float
    | Mixture of tasks: string
    | Curriculum_Patience of n: int
    | Curriculum_Validate_All
    | Init of optimizer: string
    | Device of device: string
    | Threads of n: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Task _ -> "task family to meta-train on: quadratic, mnist (an MLP), mnist-conv (a conv net with two learned optimizers, one for its conv and one for its fully connected parameters) or mixture (see --mixture)."
            | Out _ -> "directory for optimizer.json (the best φ), train-log.csv and train.json."
            | Meta_Iterations _ -> "meta-iterations (φ updates, one per truncation); default 5000 (1000 trajectories; mnist 3000, mnist-conv 300)."
            | Seed _ -> "seed of φ's initialisation and of the meta-training problems; default 0."
            | Unroll _ -> "truncated BPTT length; must divide --steps; default 20."
            | Steps _ -> "horizon T: optimizee steps per trajectory; default 100."
            | Meta_Lr _ -> "Adam learning rate on φ; default 0.003."
            | Out_Scale _ -> "multiplier of the LSTM's output; default 0.1."
            | Architecture _ -> "m_φ's cell: lstm (the paper's), gru (PyTorch's GRUCell), lstm-gac (the LSTM with global averaging cells) or ntm-bfgs (an LSTM+GAC controller with an external memory); default lstm."
            | Averaged _ -> "lstm-gac, ntm-bfgs: global averaging cells per layer; default a quarter of --hidden, at least 2."
            | Reads _ -> "ntm-bfgs: read heads; default 1."
            | Writes _ -> "ntm-bfgs: write heads; default 3."
            | Memory_Steps _ -> "ntm-bfgs: the steps whose writes the memory keeps (the oldest dropped beyond them); default 100."
            | Hidden _ -> "hidden units per layer of m_φ; default 20."
            | Layers _ -> "layers of m_φ; default 2."
            | Preprocessing _ -> "gradient preprocessing: logsign, none or moments (Adam-normalised averages of ∇ at the time scales of --betas, and ∇, over √v̂ with --beta2); default logsign."
            | Betas _ -> "with --preprocessing moments: the time scales β of the averages of ∇, e.g. 0.5,0.9,0.99 (the default)."
            | Beta2 _ -> "with --preprocessing moments: β2 of the average of ∇²; default 0.999."
            | P _ -> "p of the logsign preprocessing; default 10."
            | Dim _ -> "quadratic dimension; default 10."
            | Mlp_Hidden _ -> "mnist: hidden layer widths, e.g. 20 or 20,20; default 20."
            | Activation _ -> "mnist: sigmoid or relu; default sigmoid."
            | Conv_Channels _ -> "mnist-conv: output channels of each 3×3 conv layer (each followed by batch normalisation, ReLU and 2×2 max-pooling), e.g. 4,8 or 4,8,16; default 4,8."
            | Conv_Dense _ -> "mnist-conv: units of the fully connected hidden layer (0: none); default 32."
            | Batch _ -> "mnist, mnist-conv: minibatch size; default 128."
            | Data_Dir _ -> "mnist, mnist-conv: data directory (default $L2L_DATA_DIR or ~/.cache/l2l-functional/mnist; fetched on first use)."
            | Batch_Functions _ -> "functions optimised side by side per meta-training problem; default 128."
            | Validate_Every _ -> "validate on held-out functions every N meta-iterations (0: never); default 250 (mnist: 100, mnist-conv: 50)."
            | Validation_Functions _ -> "held-out functions per validation (quadratic) or networks (mnist, mnist-conv); default 1000 (mnist: 10, mnist-conv: 3)."
            | Second_Order -> "keep second derivatives (∂∇/∂φ); the paper drops them."
            | Log_Loss -> "meta-loss Σ log f(θ_t) instead of Σ f(θ_t) (the default for mnist)."
            | Random_Scaling _ -> "meta-train on f(c ⊙ θ), log c uniform in [−A, A] per coordinate and trajectory (0: none, the default)."
            | Sum_Loss -> "meta-loss Σ f(θ_t), the paper's (the default for quadratic)."
            | Mixture _ -> "with --task mixture: the tasks each trajectory is drawn from, joined by +: quadratic:D, mnist:sigmoid|relu[:W,W...], mnist-conv, each optionally *WEIGHT (default 1); e.g. quadratic:10+quadratic:50+mnist:sigmoid+mnist:relu. One φ for every parameter; quadratics 128 functions a problem, 100 in validation; networks 3 in validation, the conv net 1."
            | Imitation _ -> "the share of trajectories on which m_φ learns to match Adam's steps on Adam's own trajectory (½‖g − g_Adam‖²/‖g_Adam‖² per step), drawn per trajectory; default 0 (none)."
            | Imitation_Lr _ -> "Adam's learning rate on the imitation trajectories; default 0.01."
            | Curriculum _ -> "later horizons, e.g. 200,500,1000: after --curriculum-patience validations without a new best, training moves on to the next from the best φ (none by default)."
            | Curriculum_Patience _ -> "validations without a new best before the curriculum's next horizon (or, at its last, the end of training); default 3."
            | Curriculum_Validate_All -> "with --curriculum: validate φ at every horizon reached so far (the geometric mean of the mean final losses at each), so that the φ kept is good at all of them; default: at the current horizon only."
            | Init _ -> "start from a trained optimizer instead of a fresh φ (fine-tuning it on this task): an optimizer file or a pretrained optimizer's name (" + String.concat ", " L2L.Pretrained.names + "). m_φ's settings are its own (no --architecture, --hidden, --layers, --preprocessing, ... with it); a single φ starts every coordinate group."
            | Device _ -> "cpu, cuda or auto; default cpu."
            | Threads _ -> "threads of the fused LSTM kernel and of libtorch (whose count $L2L_TORCH_THREADS sets apart); default: the number of cores."

type EvaluateArgs =
    | [<Mandatory>] Task of name: string
    | [<Mandatory>] Optimizer of file: string
    | Steps of s: int
    | Runs of n: int
    | Dim of d: int
    | Mlp_Hidden of widths: string
    | Activation of name: string
    | Conv_Channels of channels: string
    | Conv_Dense of units: int
    | Batch of size: int
    | Data_Dir of dir: string
    | Seed of seed: uint64
    | Tune_Baselines
    | Tune_Seed of seed: uint64
    | Tune_Runs of n: int
    | Tune_Steps of s: int
    | [<Mandatory>] Out of file: string
    | Device of device: string
    | Threads of n: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Task _ -> "task family: quadratic, mnist or mnist-conv."
            | Optimizer _ -> "a trained optimizer file (optimizer.json), or the name of a pretrained one (" + String.concat ", " L2L.Pretrained.names + ")."
            | Steps _ -> "optimizee steps S; default 200."
            | Runs _ -> "fresh problems N (quadratic: functions, default 1000; mnist: networks, default 10)."
            | Dim _ -> "quadratic dimension; default 10."
            | Mlp_Hidden _ -> "mnist: hidden layer widths, e.g. 20 or 20,20; default 20."
            | Activation _ -> "mnist: sigmoid or relu; default sigmoid."
            | Conv_Channels _ -> "mnist-conv: output channels of each conv layer, e.g. 4,8; default 4,8 (must match the optimizer's groups)."
            | Conv_Dense _ -> "mnist-conv: units of the fully connected hidden layer (0: none); default 32."
            | Batch _ -> "mnist, mnist-conv: minibatch size; default 128."
            | Data_Dir _ -> "mnist, mnist-conv: data directory (default $L2L_DATA_DIR or ~/.cache/l2l-functional/mnist; fetched on first use)."
            | Seed _ -> "portable-stream seed of the evaluation problems; default 1000."
            | Tune_Baselines -> "also tune and evaluate SGD, momentum, NAG, RMSprop and Adam."
            | Tune_Seed _ -> "portable-stream seed of the held-out tuning problems; default 2000."
            | Tune_Runs _ -> "held-out tuning problems (quadratic default 1000, mnist 3)."
            | Tune_Steps _ -> "tuning criterion: mean loss at this step; default 100."
            | Out _ -> "results file (JSON)."
            | Device _ -> "cpu, cuda or auto; default cpu."
            | Threads _ -> "threads of the fused LSTM kernel and of libtorch (whose count $L2L_TORCH_THREADS sets apart); default: the number of cores."

type ReproduceArgs =
    | [<MainCommand; Mandatory>] Experiment of name: string
    | Out of dir: string
    | Meta_Iterations of n: int
    | Seed of seed: int64
    | Threads of n: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Experiment _ -> "experiment to reproduce (quadratic)."
            | Out _ -> "output directory; default runs/<experiment>."
            | Meta_Iterations _ -> "meta-training budget; default that of train."
            | Seed _ -> "meta-training seed; default 0."
            | Threads _ -> "threads of the fused LSTM kernel and of libtorch (whose count $L2L_TORCH_THREADS sets apart); default: the number of cores."

type SubmitArgs =
    | [<MainCommand; Mandatory>] Spec of file: string
    | [<Mandatory>] Jobs of dir: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Spec _ -> "the job spec (JSON) to validate and submit."
            | Jobs _ -> "the worker's jobs directory."

type StatusArgs =
    | [<MainCommand>] Id of job: string
    | [<Mandatory>] Jobs of dir: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Id _ -> "show one job only."
            | Jobs _ -> "the worker's jobs directory."

type CancelArgs =
    | [<MainCommand; Mandatory>] Id of job: string
    | [<Mandatory>] Jobs of dir: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Id _ -> "the job to cancel."
            | Jobs _ -> "the worker's jobs directory."

type PaperArgs =
    | [<MainCommand; Mandatory>] Experiment of name: string
    | Root of dir: string
    | Retrain
    | Data_Dir of dir: string
    | Threads of n: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Experiment _ -> "quadratics, mnist, mnist-generalization, mnist-sweep, mnist-conv, variants, or all (those); beyond (one learned optimizer against tuned baselines on five tasks, apart: hours)."
            | Root _ -> "the paper directory; default paper."
            | Retrain -> "train the optimizers again even where paper/optimizers holds one with the same settings."
            | Data_Dir _ -> "MNIST data directory."
            | Threads _ -> "threads of the fused LSTM kernel and of libtorch (whose count $L2L_TORCH_THREADS sets apart); default: the number of cores."

type BenchArgs =
    | Task of name: string
    | Reps of n: int
    | Out of file: string
    | Peer of script: string option
    | Isa of choice: string
    | Data_Dir of dir: string
    | Threads of n: int
    | [<Hidden>] Child

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Task _ -> "quadratic, mnist or all (default all)."
            | Reps _ -> "timed repetitions after the warm-up; the median is reported (default 5)."
            | Out _ -> "JSON results file; default bench.json."
            | Threads _ -> "threads of the fused LSTM kernel and of libtorch (whose count $L2L_TORCH_THREADS sets apart); default: the number of cores."
            | Isa _ -> "native (what the machine has; default) or avx2: the measured processes on AVX2 only (.NET: DOTNET_EnableAVX512=0; libtorch: ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2; the peer: OPENBLAS_CORETYPE=Haswell and the same), each checked to take effect where it can be read back."
            | Peer _ -> "also run the reference PyTorch script (default ../shared/peer/l2l_peer.py) on the same settings, alternating, and print the ratios."
            | Data_Dir _ -> "MNIST data directory."
            | Child -> "measure in this process and print one JSON line (used by bench itself)."

type ExportArgs =
    | [<Mandatory>] Optimizer of file: string
    | Format of format: string
    | [<Mandatory>] Out of file: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Optimizer _ -> "a trained optimizer file (optimizer.json), or the name of a pretrained one (" + String.concat ", " L2L.Pretrained.names + ")."
            | Format _ -> "safetensors (φ in PyTorch's nn.LSTMCell and nn.Linear layout, the configuration in the metadata) or json (the optimizer file); default safetensors."
            | Out _ -> "the file to write."

type ImportArgs =
    | [<Mandatory>] Input of file: string
    | [<Mandatory>] Out of file: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Input _ -> "a safetensors file with m_φ's keys and metadata (as export writes them, or from PyTorch)."
            | Out _ -> "the optimizer file to write (optimizer.json)."

type TraceArgs =
    | [<Mandatory>] Optimizer of file: string
    | Group of name: string
    | Steps of s: int
    | Coordinates of n: int
    | Seed of seed: uint64
    | Dtype of dtype: string
    | [<Mandatory>] Out of file: string
    | Threads of n: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Optimizer _ -> "a trained optimizer file, or the name of a pretrained one."
            | Group _ -> "the coordinate group whose φ runs (grouped optimizers); default the first."
            | Steps _ -> "steps T; default 20."
            | Coordinates _ -> "coordinates n; default 1000."
            | Seed _ -> "seed of the gradients; default 0."
            | Dtype _ -> "float32 (the fused kernel on the CPU) or float64; default float32."
            | Out _ -> "safetensors file of the gradients [T,n] and m_φ's updates [T,n] (keys gradients, updates)."
            | Threads _ -> "threads of the fused LSTM kernel and of libtorch; default: the number of cores."

[<RequireSubcommand>]
type CliArgs =
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<CliPrefix(CliPrefix.None)>] Evaluate of ParseResults<EvaluateArgs>
    | [<CliPrefix(CliPrefix.None)>] Reproduce of ParseResults<ReproduceArgs>
    | [<CliPrefix(CliPrefix.None)>] Paper of ParseResults<PaperArgs>
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<BenchArgs>
    | [<CliPrefix(CliPrefix.None)>] Submit of ParseResults<SubmitArgs>
    | [<CliPrefix(CliPrefix.None)>] Status of ParseResults<StatusArgs>
    | [<CliPrefix(CliPrefix.None)>] Cancel of ParseResults<CancelArgs>
    | [<CliPrefix(CliPrefix.None)>] Export of ParseResults<ExportArgs>
    | [<CliPrefix(CliPrefix.None)>] Import of ParseResults<ImportArgs>
    | [<CliPrefix(CliPrefix.None)>] Trace of ParseResults<TraceArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Train _ -> "meta-train an LSTM optimizer."
            | Evaluate _ -> "evaluate a trained optimizer (and tuned baselines) on fresh problems."
            | Reproduce _ -> "train, tune and evaluate one of the paper's experiments."
            | Bench _ -> "measure meta-training and evaluation throughput and peak memory."
            | Paper _ -> "regenerate the paper's experiments (paper/results, paper/README.md tables)."
            | Submit _ -> "validate a job spec and hand it to the worker (tools/worker)."
            | Status _ -> "list the worker's jobs with their state and progress."
            | Cancel _ -> "cancel a queued or running job."
            | Export _ -> "write a trained optimizer as safetensors for PyTorch (or as an optimizer file)."
            | Import _ -> "read a trained optimizer from safetensors into an optimizer file."
            | Trace _ -> "run m_φ on seeded random gradients and write the gradients and updates (the PyTorch check's input)."
