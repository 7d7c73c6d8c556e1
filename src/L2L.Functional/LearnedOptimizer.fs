/// m_φ as a TorchSharp optimizer over any module's parameters: zero_grad / backward / step, parameter
/// groups with a φ each, state dicts that resume a run exactly.
namespace L2L

#nowarn "760" // constructors chained by the type name (a secondary constructor cannot use `new`)

open System
open System.Collections.Generic
open System.IO
open System.Runtime.InteropServices
open TorchSharp
open TorchSharp.Modules

/// A parameter group's settings: its name and its φ. LearningRate multiplies m_φ's update (1, the
/// default: the update as meta-trained), so TorchSharp's learning-rate schedulers apply.
[<AllowNullLiteral>]
type LearnedOptions(name: string, phi: Phi) as this =
    inherit OptimizerOptions()

    do
        this.LearningRate <- Nullable 1.0
        this.InitialLearningRate <- 1.0

    member val Name = name with get, set

    /// The group's φ (the optimizer keeps its own copy, on its parameters' device and dtype).
    member val Phi = phi with get, internal set

    // A marker where older files begin with the (positive) layer count: the architecture follows.
    static member private ArchitectureMarker = -1

    /// The paper's LSTM is written as before the choice of architecture existed (its files load in
    /// older builds); the others after a marker.
    static member internal WriteConfig(w: BinaryWriter, c: LstmConfig) =
        if c.Architecture <> Architecture.Lstm then
            w.Write(LearnedOptions.ArchitectureMarker)
            w.Write(Architecture.name c.Architecture)
            w.Write(c.Averaged)
            w.Write(c.Reads)
            w.Write(c.Writes)
            w.Write(c.MemorySteps)
        w.Write(c.Layers)
        w.Write(c.Hidden)
        match c.Preprocessing with
        | LogSign p -> w.Write(p)
        | Preprocessing.Identity -> w.Write(Double.NaN)
        | NormalizedMoments(betas, beta2) ->
            // −∞ (no log-sign p is negative) marks the moments: their time scales follow
            w.Write(Double.NegativeInfinity)
            w.Write(betas.Length)
            for b in betas do
                w.Write(b)
            w.Write(beta2)
        w.Write(c.OutScale)
        w.Write(c.ForgetBias)

    static member internal ReadConfig(r: BinaryReader) : LstmConfig =
        let first = r.ReadInt32()
        let architecture, counts, layers =
            if first = LearnedOptions.ArchitectureMarker then
                let name = r.ReadString()
                match Architecture.parse name with
                | Ok a ->
                    let counts = Array.init 4 (fun _ -> r.ReadInt32())
                    a, counts, r.ReadInt32()
                | Error e -> raise (InvalidDataException e)
            else Architecture.Lstm, Array.zeroCreate 4, first
        let hidden = r.ReadInt32()
        let p = r.ReadDouble()
        let pre =
            if Double.IsNaN p then Preprocessing.Identity
            elif Double.IsNegativeInfinity p then
                let count = r.ReadInt32()
                if count < 1 || count > 8 then raise (InvalidDataException(sprintf "%d time scales of the moments" count))
                let betas = List.init count (fun _ -> r.ReadDouble())
                NormalizedMoments(betas, r.ReadDouble())
            else LogSign p
        { Architecture = architecture
          Layers = layers
          Hidden = hidden
          Preprocessing = pre
          OutScale = r.ReadDouble()
          ForgetBias = r.ReadDouble()
          Averaged = counts[0]
          Reads = counts[1]
          Writes = counts[2]
          MemorySteps = counts[3] }

    override o.SaveStateDict(w: BinaryWriter) =
        base.SaveStateDict(w)
        w.Write(o.Name)
        LearnedOptions.WriteConfig(w, o.Phi.Config)
        for t in Phi.tensors o.Phi do
            use d = t.detach()
            use c = d.cpu()
            c.Save(w)

    override o.LoadStateDict(r: BinaryReader) =
        base.LoadStateDict(r)
        let name = r.ReadString()
        let config = LearnedOptions.ReadConfig r
        if config <> o.Phi.Config then
            let describe (c: LstmConfig) =
                sprintf "%d-layer, %d-unit %s%s" c.Layers c.Hidden (Architecture.name c.Architecture)
                    (if c.Architecture = Architecture.Lstm || c.Architecture = Architecture.Gru then ""
                     else sprintf " (averaged %d, reads %d, writes %d, memory steps %d)" c.Averaged c.Reads c.Writes c.MemorySteps)
            raise (InvalidDataException(sprintf "group '%s': the saved φ is a %s m_φ; this optimizer's is %s"
                                            name (describe config) (describe o.Phi.Config)))
        o.Name <- name
        use _ = torch.no_grad()
        for t in Phi.tensors o.Phi do
            use saved = TensorExtensionMethods.Load(r, false)
            if saved.shape <> t.shape then
                raise (InvalidDataException(sprintf "group '%s': a saved φ tensor has shape %A, expected %A" name saved.shape t.shape))
            t.copy_(saved) |> ignore

    override o.LoadStateDict(source: OptimizerOptions) =
        base.LoadStateDict(source)
        match source with
        | :? LearnedOptions as s when not (obj.ReferenceEquals(s, o)) ->
            if s.Phi.Config <> o.Phi.Config then
                invalidArg "source" (sprintf "group '%s': the φ to load has another configuration" s.Name)
            o.Name <- s.Name
            use _ = torch.no_grad()
            for t, u in List.zip (Phi.tensors o.Phi) (Phi.tensors s.Phi) do
                t.copy_(u) |> ignore
        | _ -> ()

/// One parameter group at work: its parameters' places in the group's flat θ, m_φ's state over all of
/// its coordinates ([H; n] per layer, a column per coordinate), and the optimizer of its φ.
[<AllowNullLiteral>]
type internal GroupRuntime(options: LearnedOptions, parameters: Parameter[], backend: Backend) =
    let sizes = parameters |> Array.map (fun p -> p.numel())
    let offsets = Array.scan (+) 0L sizes
    let total = offsets[sizes.Length]
    let device = parameters[0].device
    let dtype = parameters[0].dtype
    // the optimizer of the group's φ, rebuilt when φ is replaced
    let mutable optimizerOf: (Phi * Optimizer) option = None
    let optimizer () =
        match optimizerOf with
        | Some(phi, o) when obj.ReferenceEquals(phi, options.Phi) -> o
        | _ ->
            let o = Learned.optimizer backend options.Phi
            optimizerOf <- Some(options.Phi, o)
            o
    let mutable state =
        Tensors.build OptState.tensors (fun () ->
            use theta = torch.zeros([| total |], dtype = dtype, device = device)
            (optimizer ()).Init 1 theta)
    do
        for t in OptState.tensors state do
            t.DetachFromDisposeScope() |> ignore

    member _.Options = options
    member _.Offset(i: int) = offsets[i]
    member _.Size(i: int) = sizes[i]
    member _.State = state

    member _.SetStep(step: int) = state <- { state with Step = step }

    /// m_φ's state tensors (h and c per layer: [H; n]) in OptState.named order.
    member _.Recurrent = OptState.recurrent state

    /// One step: ∇ of every parameter flattened into the group's order, m_φ's update g, θ += lr·g.
    /// A parameter without a gradient is left as it is; for the coordinatewise architectures (lstm,
    /// gru) so is its state. With global averaging or a memory (lstm-gac, ntm-bfgs) the group is one
    /// function whose coordinates are coupled: such a parameter's coordinates take a step with ∇ = 0
    /// in m_φ (their state moves, and enters the group's means and memory), its values stay. Runs
    /// with the optimizer's buffer pool open (the replaced state goes back to it).
    member _.Step() =
        use scope = torch.NewDisposeScope()
        let grads = parameters |> Array.map (fun p -> p.grad)
        if grads |> Array.exists (isNull >> not) then
            let flat =
                torch.cat(
                    [| for i, g in Array.indexed grads ->
                           if isNull g then torch.zeros([| sizes[i] |], dtype = dtype, device = device) else g.reshape(-1L) |], 0L)
            let old = state
            let struct (g, s') = (optimizer ()).Update old flat
            let lr = options.LearningRate.GetValueOrDefault(1.0)
            for i, p in Array.indexed parameters do
                if not (isNull grads[i]) then
                    let d = g.narrow(0L, offsets[i], sizes[i]).view(p.shape)
                    if lr = 1.0 then p.AddInPlace(d) |> ignore else p.AddInPlace(d, lr) |> ignore
            if grads |> Array.exists isNull && not (Architecture.averages options.Phi.Config.Architecture) then
                let before = OptState.tensors old
                for i, grad in Array.indexed grads do
                    if isNull grad then
                        for now, was in List.zip (OptState.tensors s') before do
                            now.narrow(1L, offsets[i], sizes[i]).copy_(was.narrow(1L, offsets[i], sizes[i])) |> ignore
            for t in OptState.tensors s' do
                t.DetachFromDisposeScope() |> ignore
            state <- s'
            Spare.giveReplaced (OptState.tensors old) (OptState.tensors s')

    member _.MoveTo(d: torch.Device) =
        if d.``type`` <> device.``type`` || d.index <> device.index then
            invalidOp "a learned optimizer's state stays on its parameters' device: build the optimizer after moving the module"

    member _.Dispose() =
        for t in OptState.tensors state do
            t.Dispose()
        for t in Phi.tensors options.Phi do
            t.Dispose()

/// What the optimizer keeps for one parameter: its columns of its group's m_φ state, and the step.
type LearnedParameterState internal (p: Parameter, group: GroupRuntime, index: int) =
    inherit OptimizerState(p)

    let columns (t: Tensor) = t.narrow(1L, group.Offset index, group.Size index)

    /// The state's tensors in the saved order: per layer h, then c where the cell keeps one; then
    /// ntm-bfgs's read results and memory; then the moments' averages and corrections.
    static member internal PerLayer(s: LstmState) : Tensor list =
        [ for k in 0 .. s.H.Length - 1 do
              yield s.H[k]
              if not s.C.IsEmpty then yield s.C[k]
          yield! s.Memory
          yield! s.Stats ]

    /// The optimizer steps taken by this parameter's group.
    member _.Step = group.State.Step

    /// m_φ's state of this parameter's coordinates: per layer h (and c for the LSTMs), each [H; numel] (copies).
    member _.Recurrent : LstmState =
        let s = group.Recurrent
        let copy (t: Tensor) =
            use c = columns t
            c.clone()
        LstmState.map copy s

    override _.Initialize(_: OptimizerOptions) = ()

    override _.SaveStateDict(w: BinaryWriter) =
        let s = group.Recurrent
        w.Write(int64 group.State.Step)
        w.Write(s.H.Length)
        for t in LearnedParameterState.PerLayer s do
                use v = columns t
                use k = v.contiguous()
                use host = k.cpu()
                host.Save(w)

    override _.LoadStateDict(r: BinaryReader) =
        let step = r.ReadInt64()
        let layers = r.ReadInt32()
        let s = group.Recurrent
        if layers <> s.H.Length then
            raise (InvalidDataException(sprintf "a parameter's saved state has %d layers, this optimizer's m_φ %d" layers s.H.Length))
        use _ = torch.no_grad()
        for target in LearnedParameterState.PerLayer s do
                use saved = TensorExtensionMethods.Load(r, false)
                let into = columns target
                if saved.shape <> into.shape then
                    raise (InvalidDataException(sprintf "a parameter's saved state has shape %A, expected %A (another model?)" saved.shape into.shape))
                into.copy_(saved) |> ignore
        group.SetStep(int step)

    override _.LoadStateDict(source: OptimizerState) =
        match source with
        | :? LearnedParameterState as o ->
            let theirs = o.Recurrent
            let s = group.Recurrent
            use _ = torch.no_grad()
            for target, src in List.zip (LstmState.tensors s) (LstmState.tensors theirs) do
                if src.shape <> (columns target).shape then
                    invalidArg "source" (sprintf "a parameter's state has shape %A, expected %A" src.shape (columns target).shape)
                (columns target).copy_(src) |> ignore
                src.Dispose()
            group.SetStep(o.Step)
        | _ -> invalidArg "source" "not the state of a learned optimizer"

    override s.ApproximatelyEquals(other: OptimizerState) =
        match other with
        | :? LearnedParameterState as o ->
            let theirs = o.Recurrent
            let ours = s.Recurrent
            let same = List.forall2 (fun (x: Tensor) (y: Tensor) -> x.allclose(y)) (LstmState.tensors ours) (LstmState.tensors theirs)
            for t in LstmState.tensors ours @ LstmState.tensors theirs do
                t.Dispose()
            same && o.Step = s.Step
        | _ -> false

    override _.``to``(d: torch.Device) = group.MoveTo d

/// The learned optimizer m_φ as a TorchSharp optimizer: it drops in where one is expected.
///   opt.zero_grad(); loss.backward(); opt.step()
/// Each parameter group has its own φ (the paper's conv / fully connected split); a group's
/// coordinates are updated as one flat θ by `Learned.optimizer` (float32 on the CPU takes the fused
/// kernel), so a step gives the same updates as the core on the flattened parameters. The optimizer
/// owns its state and its copy of each φ: dispose it when done.
type LearnedOptimizer(parameterGroups: seq<ParamGroup<LearnedOptions>>, backend: Backend) =
    inherit OptimizerHelper()

    let backend = Backend.resolve backend
    let pool = Spare.pool ()
    let groups = ResizeArray<GroupRuntime>()
    let seen = HashSet<IntPtr>()
    let mutable disposed = false

    /// Checks a group and builds its runtime (the optimizer's own φ, m_φ's state); the caller
    /// registers it with the optimizer base.
    let build (pg: ParamGroup) : ParamGroup<LearnedOptions> * (Parameter * OptimizerState) list =
        let options =
            match pg.Options with
            | :? LearnedOptions as l -> l
            | _ -> invalidArg "param_group" "a learned optimizer's groups have LearnedOptions (a name and a φ)"
        let ps = Array.ofSeq pg.Parameters
        if ps.Length = 0 then invalidArg "param_group" (sprintf "group '%s' has no parameters" options.Name)
        let dtype = ps[0].dtype
        for p in ps do
            if p.device_type <> ps[0].device_type || p.device_index <> ps[0].device_index || p.dtype <> dtype then
                invalidArg "param_group" (sprintf "group '%s' mixes devices or dtypes (%O %O and %O %O): give each its own group" options.Name ps[0].device dtype p.device p.dtype)
        if ps |> Array.exists (fun p -> seen.Contains p.Handle) || (ps |> Array.distinctBy (fun p -> p.Handle)).Length < ps.Length then
            invalidArg "param_group" (sprintf "a parameter appears twice (group '%s')" options.Name)
        for p in ps do
            seen.Add p.Handle |> ignore
        // the optimizer's own φ, where its parameters are (on several devices: a group on each)
        let device = ps[0].device
        let phi =
            Tensors.build Phi.tensors (fun () ->
                Phi.map (fun t -> t.detach().to_type(dtype).``to``(device).clone()) options.Phi)
        for t in Phi.tensors phi do
            t.DetachFromDisposeScope() |> ignore
        let copy = LearnedOptions(options.Name, phi)
        copy.LearningRate <- options.LearningRate
        copy.InitialLearningRate <- options.InitialLearningRate
        let runtime = new GroupRuntime(copy, ps, backend)
        groups.Add runtime
        ParamGroup<LearnedOptions>(ps, copy), [ for i, p in Array.indexed ps -> p, LearnedParameterState(p, runtime, i) :> OptimizerState ]

    /// The groups given at construction, checked and built now, registered with the optimizer base on
    /// first use (the base's fields are reachable from members only).
    let mutable pending =
        try
            [ for g in parameterGroups -> build g ]
        with _ ->
            for g in groups do
                g.Dispose()
            Spare.clear pool
            reraise ()

    member private o.Ready() =
        if not pending.IsEmpty || isNull o._parameter_groups then
            if isNull o._parameter_groups then o._parameter_groups <- List<ParamGroup>()
            let todo = pending
            pending <- []
            for pg, states in todo do
                for p, st in states do
                    o._state[p.Handle] <- st
                base.add_param_group pg

    static member private OneGroup(pretrained: Pretrained, parameters: seq<Parameter>) =
        match pretrained.Groups with
        | [ name, _, phi ] -> [ ParamGroup<LearnedOptions>(parameters, LearnedOptions(name, phi)) ]
        | gs ->
            invalidArg "parameters" (sprintf "pretrained optimizer '%s' has a φ per group (%s): give the parameters of each group by name"
                                        pretrained.Name (gs |> List.map (fun (n, _, _) -> n) |> String.concat ", "))

    static member private ByName(pretrained: Pretrained, groups: seq<KeyValuePair<string, seq<Parameter>>>) =
        let byName = dict [ for kv in groups -> kv.Key, kv.Value ]
        let known = pretrained.Groups |> List.map (fun (n, _, _) -> n)
        for name in byName.Keys do
            if not (List.contains name known) then
                invalidArg "groups" (sprintf "pretrained optimizer '%s' has no group '%s' (its groups: %s)" pretrained.Name name (String.concat ", " known))
        [ for name, _, phi in pretrained.Groups do
              match byName.TryGetValue name with
              | true, ps -> ParamGroup<LearnedOptions>(ps, LearnedOptions(name, phi))
              | _ -> () ]

    /// Groups of parameters, each with its options (name, φ).
    new(parameterGroups: seq<ParamGroup<LearnedOptions>>) = LearnedOptimizer(parameterGroups, Backend.defaults)

    /// One group of parameters with one φ.
    new(parameters: seq<Parameter>, phi: Phi, backend: Backend) =
        LearnedOptimizer([ ParamGroup<LearnedOptions>(parameters, LearnedOptions("all", phi)) ], backend)

    new(parameters: seq<Parameter>, phi: Phi) = LearnedOptimizer(parameters, phi, Backend.defaults)

    /// A pretrained optimizer of one φ on all the parameters.
    new(pretrained: Pretrained, parameters: seq<Parameter>) =
        LearnedOptimizer(LearnedOptimizer.OneGroup(pretrained, parameters), Backend.defaults)

    /// A pretrained optimizer with a φ per group, the parameters of each group by its name.
    new(pretrained: Pretrained, groups: seq<KeyValuePair<string, seq<Parameter>>>) =
        LearnedOptimizer(LearnedOptimizer.ByName(pretrained, groups), Backend.defaults)

    /// A shipped optimizer by name (Pretrained.names) on a model's parameters:
    /// `LearnedOptimizer.Pretrained("mnist", model.parameters())`.
    static member Pretrained(name: string, parameters: seq<Parameter>) =
        use p = Pretrained.load name
        new LearnedOptimizer(p, parameters)

    /// A shipped optimizer with a φ per group (e.g. "mnist-conv": "conv" and "fc"), the parameters of each.
    static member Pretrained(name: string, groups: seq<KeyValuePair<string, seq<Parameter>>>) =
        use p = Pretrained.load name
        new LearnedOptimizer(p, groups)

    /// Adds a group (ParamGroup<LearnedOptions>): its parameters share a device and dtype, and none
    /// is in another group.
    override o.add_param_group(pg: ParamGroup) =
        o.Ready()
        pending <- [ build pg ]
        o.Ready()

    override o.ParamGroups = (o.Ready(); base.ParamGroups)

    override o.parameters() = (o.Ready(); base.parameters())

    override o.zero_grad() = (o.Ready(); base.zero_grad())

    override o.state_dict() = (o.Ready(); base.state_dict())

    override o.load_state_dict(sd: TorchSharp.torch.optim.Optimizer.StateDictionary) = (o.Ready(); base.load_state_dict(sd))

    /// One optimizer step on every group: θ ← θ + lr·g with (g, h') = m_φ(∇, h). `closure` (optional)
    /// re-evaluates the model and returns the loss, under autograd.
    override o.step([<Optional; DefaultParameterValue(null: Func<Tensor>)>] closure: Func<Tensor>) : Tensor =
        if disposed then raise (ObjectDisposedException "LearnedOptimizer")
        o.Ready()
        let loss =
            if isNull closure then null
            else
                use _ = torch.enable_grad()
                closure.Invoke()
        Backend.inSteps backend (fun () ->
            Spare.using pool (fun () ->
                use _ = torch.no_grad()
                for g in groups do
                    g.Step()))
        loss

    /// Moves the optimizer's state to a device: only its parameters' (build the optimizer after moving
    /// the module).
    member o.``to``(device: torch.Device) =
        o.Ready()
        base.``to``(device)

    /// The groups' names, in order.
    member _.GroupNames = [ for g in groups -> g.Options.Name ]

    /// The backend its steps run on.
    member _.Backend = backend

    /// Saves the state (each group's φ, learning rate and step; each parameter's m_φ state) to a file
    /// by a temporary file and a rename: a failed write leaves an earlier file as it was.
    member o.Save(path: string) =
        use ms = new MemoryStream()
        (use w = new BinaryWriter(ms, Text.Encoding.UTF8, true)
         o.save_state_dict(w))
        AtomicFile.write path (ms.ToArray()) |> ignore

    /// Loads what Save wrote, for the same model and groups. A file that is not one (another
    /// optimizer's, another model's, truncated) is an InvalidDataException naming the problem; the
    /// state is then partly loaded and should not be stepped.
    member o.Load(path: string) =
        let bytes =
            try File.ReadAllBytes path
            with
            | :? FileNotFoundException | :? DirectoryNotFoundException -> raise (InvalidDataException(sprintf "optimizer state '%s' does not exist" path))
        use r = new BinaryReader(new MemoryStream(bytes))
        try
            o.load_state_dict(r)
        with
        | :? EndOfStreamException -> raise (InvalidDataException(sprintf "optimizer state '%s' is truncated" path))
        | :? ArgumentException as e -> raise (InvalidDataException(sprintf "optimizer state '%s' does not fit this optimizer: %s" path e.Message))
        | :? InvalidDataException -> reraise ()
        | :? FormatException | :? OverflowException | :? IOException | :? OutOfMemoryException | :? NotSupportedException | :? InvalidCastException ->
            raise (InvalidDataException(sprintf "optimizer state '%s' is not a learned optimizer's state" path))

    override _.Dispose(disposing: bool) =
        // the finalizer (disposing = false) leaves the tensors to theirs
        if disposing && not disposed then
            disposed <- true
            for g in groups do
                g.Dispose()
            Spare.clear pool
        base.Dispose(disposing)
