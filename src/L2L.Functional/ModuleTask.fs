/// One's own TorchSharp network as a meta-training task: a module factory, a minibatch sampler and a
/// loss become a task whose θ is the module's parameters flattened, with the same meta-training,
/// validation, evaluation, checkpoints and jobs as the built-in tasks.
namespace L2L

open System
open TorchSharp
open TorchSharp.Modules

/// What a network of one's own must say to become a task.
type ModuleTaskSpec =
    { /// The task's name in logs, results, checkpoints and job specs.
      Name: string
      Description: string
      /// A fresh network with freshly initialised parameters. It is called with torch's default
      /// generator seeded for the problem (and restored afterwards), so its initialisation is θ_0.
      Model: unit -> torch.nn.Module<Tensor, Tensor>
      /// A minibatch (inputs, targets) of a split, drawn with the generator given (one per problem and
      /// step, so every optimizer sees the same minibatches). Called on the device of the run; the
      /// tensors it returns may be released as soon as the loss is taken.
      Batch: DataSplit -> torch.Generator -> Tensor * Tensor
      /// outputs, targets -> the minibatch's loss (a scalar, e.g. mean cross-entropy).
      Loss: Tensor -> Tensor -> Tensor
      /// The whole data of a split as (inputs, targets) chunks, for the loss results report (the
      /// rows-weighted mean of Loss over them). None: the mean over `FullBatches` fixed minibatches.
      Full: (DataSplit -> (Tensor * Tensor) list) option
      /// Coordinate groups, each with its own φ (the paper's conv / fully connected split): (name,
      /// whether a parameter of that name belongs to it), in θ's order; a parameter goes to the first
      /// group that claims it. []: one group, "all".
      Groups: (string * (string -> bool)) list }

/// Where each parameter of a network sits in θ.
type ParameterLayout =
    { /// Parameter names (module.named_parameters()) in θ's order: by group, then in the module's order.
      Names: string list
      Shapes: int64[] list
      /// Each parameter's offset in θ.
      Offsets: int64 list
      /// (group name, coordinates) in θ's order.
      Groups: (string * int) list }

module ParameterLayout =
    /// The layout of a module's parameters under a task's groups.
    let ofModule (groups: (string * (string -> bool)) list) (m: torch.nn.Module) : ParameterLayout =
        let named = [ for struct (name, p) in m.named_parameters() -> name, p.shape ]
        if named.IsEmpty then invalidArg "model" "the module has no parameters"
        let groups = if groups.IsEmpty then [ "all", (fun (_: string) -> true) ] else groups
        let owner (name: string) =
            match groups |> List.tryFindIndex (fun (_, claims) -> claims name) with
            | Some g -> g
            | None -> invalidArg "groups" (sprintf "parameter '%s' belongs to none of the groups (%s)" name (groups |> List.map fst |> String.concat ", "))
        let ordered = named |> List.mapi (fun i (n, s) -> owner n, i, n, s) |> List.sortBy (fun (g, i, _, _) -> g, i)
        let sizes = ordered |> List.map (fun (_, _, _, s) -> Array.fold (*) 1L s)
        let counts =
            groups
            |> List.mapi (fun g (name, _) ->
                name, ordered |> List.zip sizes |> List.sumBy (fun (k, (o, _, _, _)) -> if o = g then int k else 0))
        match counts |> List.tryFind (fun (_, k) -> k = 0) with
        | Some(name, _) -> invalidArg "groups" (sprintf "group '%s' claims none of the module's parameters" name)
        | None -> ()
        { Names = ordered |> List.map (fun (_, _, n, _) -> n)
          Shapes = ordered |> List.map (fun (_, _, _, s) -> s)
          Offsets = sizes |> List.scan (+) 0L |> List.take sizes.Length
          Groups = counts }

    let coordinates (l: ParameterLayout) = l.Groups |> List.sumBy snd

    /// The module's parameters in θ's order.
    let parameters (l: ParameterLayout) (m: torch.nn.Module) : Parameter list =
        let byName = dict [ for struct (name, p) in m.named_parameters() -> name, p ]
        [ for n in l.Names -> byName[n] ]

    /// θ: the parameters (`parameters`' list) flattened in the layout's order (a new tensor, outside
    /// autograd). -> [n]
    let flatten (ps: Parameter list) : Tensor =
        use _ = torch.no_grad()
        torch.cat([| for p in ps -> p.detach().reshape(-1L) |], 0L)

    /// Copies θ [n] into the parameters (`parameters`' list).
    let load (l: ParameterLayout) (ps: Parameter list) (theta: Tensor) =
        use _ = torch.no_grad()
        for p, offset, shape in List.zip3 ps l.Offsets l.Shapes do
            let k = Array.fold (*) 1L shape
            p.copy_(theta.narrow(0L, offset, k).view(shape)) |> ignore

module ModuleTask =
    /// Fixed minibatches whose mean loss stands for the whole data when a spec gives no `Full`.
    [<Literal>]
    let FullBatches = 8

    let private defaultGenerator = obj ()

    /// Runs f with torch's default generator seeded, then puts the generator back as it was. Callers
    /// in this process take turns (the worker runs jobs side by side); other code drawing from the
    /// default generator meanwhile would still see its state change.
    let seeded (seed: int64) (f: unit -> 'a) : 'a =
        lock defaultGenerator (fun () ->
            let saved = torch.random.get_rng_state()
            try
                torch.random.manual_seed(seed) |> ignore
                f ()
            finally
                torch.random.set_rng_state(saved)
                saved.Dispose())

    /// A network of the task on a device and dtype, initialised under `seed`.
    let build (spec: ModuleTaskSpec) (seed: int64) (device: torch.Device) (dtype: torch.ScalarType) : torch.nn.Module<Tensor, Tensor> =
        let m = seeded seed spec.Model
        m.``to``(dtype).``to``(device) |> ignore
        // the network outlives the scope it was built in (a problem lives for a whole trajectory)
        for p in m.parameters() do
            p.DetachFromDisposeScope() |> ignore
        for b in m.buffers() do
            b.DetachFromDisposeScope() |> ignore
        m

    /// A minibatch where the run is: on its device, floating-point tensors in its dtype.
    let private place (device: torch.Device) (dtype: torch.ScalarType) (x: Tensor, y: Tensor) =
        let put (t: Tensor) = (if t.is_floating_point() then t.to_type(dtype) else t).``to``(device)
        put x, put y

    /// The mean loss of network m over chunks (rows-weighted), without autograd.
    let private meanLoss (spec: ModuleTaskSpec) (m: torch.nn.Module<Tensor, Tensor>) (chunks: (Tensor * Tensor) list) : float =
        use _ = torch.no_grad()
        let mutable total = 0.0
        let mutable rows = 0L
        for x, y in chunks do
            Scope.run (fun _ -> Seq.empty<Tensor>) (fun () ->
                let n = x.shape[0]
                total <- total + (spec.Loss (m.forward x) y).ToDouble() * float n
                rows <- rows + n)
        total / float rows

    /// One network's loss and ∇θ at step t's minibatch: θ goes into the module, autograd runs on it.
    let private lossGradOne (spec: ModuleTaskSpec) (layout: ParameterLayout) (m: torch.nn.Module<Tensor, Tensor>, ps: Parameter list) (batch: unit -> Tensor * Tensor) (theta: Tensor) : Tensor * Tensor =
        ParameterLayout.load layout ps theta
        use _ = torch.enable_grad()
        let x, y = batch ()
        let loss = spec.Loss (m.forward x) y
        let grads = torch.autograd.grad([| loss |], [| for p in ps -> p :> Tensor |], allow_unused = true)
        let flat =
            [| for p, g in Seq.zip ps grads ->
                   if isNull g then torch.zeros([| p.numel() |], dtype = theta.dtype, device = theta.device) else g.reshape(-1L) |]
        loss.detach(), torch.cat(flat, 0L).to_type(theta.dtype)

    /// A problem of several networks side by side in one θ (function i: its own network and minibatch
    /// stream): `keys[i]` seeds network i's initialisation and its minibatches.
    let problemOf (spec: ModuleTaskSpec) (split: DataSplit) (keys: int64 list) (device: torch.Device) (dtype: torch.ScalarType) : Problem =
        let nets = [| for k in keys -> build spec (Seeds.derive k 1UL 0L) device dtype |]
        let layout = ParameterLayout.ofModule spec.Groups nets[0]
        // each network with its parameters in θ's order (looked up once, not at every step)
        let nets = nets |> Array.map (fun m -> m, ParameterLayout.parameters layout m)
        let n = int64 (ParameterLayout.coordinates layout)
        let keys = Array.ofList keys
        let batchAt (i: int) (t: int) () =
            use g = Seeds.generator keys[i] 2UL (int64 t)
            place device dtype (spec.Batch split g)
        let theta0 = Tensors.build (fun (t: Tensor) -> [ t ]) (fun () -> torch.cat([| for _, ps in nets -> ParameterLayout.flatten ps |], 0L))
        let slice (theta: Tensor) (i: int) = theta.narrow(0L, int64 i * n, n)
        let lossGrad (t: int) (theta: Tensor) =
            let parts = nets |> Array.mapi (fun i net -> lossGradOne spec layout net (batchAt i t) (slice theta i))
            torch.stack([| for l, _ in parts -> l.to_type(theta.dtype) |]), torch.cat([| for _, g in parts -> g |], 0L)
        let fullChunks (i: int) =
            match spec.Full with
            | Some full -> full split |> List.map (place device dtype)
            | None ->
                [ for k in 0 .. FullBatches - 1 ->
                      use g = Seeds.generator keys[i] 3UL (int64 k)
                      place device dtype (spec.Batch split g) ]
        { Functions = nets.Length
          Theta0 = theta0
          Losses =
            fun t theta ->
                if theta.requires_grad then
                    // first order: the value of f with ∇f as its gradient in θ (∂∇/∂θ is not available)
                    let l, g = lossGrad t (theta.detach())
                    let d = theta.sub(theta.detach()).mul(g).view(int64 nets.Length, n).sum(1L)
                    l.Add(d)
                else
                    use _ = torch.no_grad()
                    torch.stack(
                        [| for i, (m, ps) in Array.indexed nets ->
                               ParameterLayout.load layout ps (slice theta i)
                               let x, y = batchAt i t ()
                               (spec.Loss (m.forward x) y).to_type(theta.dtype) |])
          LossGrad = Some lossGrad
          Full =
            fun theta ->
                let values =
                    nets
                    |> Array.mapi (fun i (m, ps) ->
                        ParameterLayout.load layout ps (slice theta i)
                        meanLoss spec m (fullChunks i))
                torch.tensor(values, dtype = theta.dtype, device = theta.device)
          Metrics = fun _ -> []
          Owned = [ theta0 ]
          Release = fun () -> for m, _ in nets do m.Dispose() }

    /// The task of a spec. Meta-training problem `index` of a run seeded `seed`: `functions` networks,
    /// each initialised and sampled from seeds derived from (seed, index, i). Held-out problem r of a
    /// split under `seed`: one network from seed + r. The meta-gradient is first order (the paper's
    /// setting, through its closed form where the backend allows); second order is not supported,
    /// since a network is evaluated through its module rather than as a function of θ.
    let task (spec: ModuleTaskSpec) : CustomTask =
        if String.IsNullOrWhiteSpace spec.Name then invalidArg "spec" "a task needs a name"
        let layout =
            let m = seeded 0L spec.Model
            try ParameterLayout.ofModule spec.Groups m finally m.Dispose()
        { Name = spec.Name
          Description = spec.Description
          Coordinates = ParameterLayout.coordinates layout
          Groups = layout.Groups
          UsesMnist = false
          SecondOrder = false
          Train =
            fun _ seed index functions _ device dtype ->
                let key = Seeds.derive seed 21UL index
                problemOf spec TrainSplit [ for i in 0 .. functions - 1 -> Seeds.derive key 22UL (int64 i) ] device dtype
          HeldOut =
            fun _ split seed count _ device dtype ->
                [ for r in 0 .. count - 1 ->
                      let stream = match split with TrainSplit -> 23UL | EvalSplit -> 24UL
                      problemOf spec split [ Seeds.derive (int64 (seed + uint64 r)) stream 0L ] device dtype ] }

/// Tasks of one's own (compiled as TaskModule, so C#'s System.Threading.Tasks.Task stays unambiguous).
[<CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Task =
    /// A network of one's own as a task for meta-training, validation, evaluation and jobs.
    let ofModule (spec: ModuleTaskSpec) : TaskSpec = Custom(ModuleTask.task spec)
