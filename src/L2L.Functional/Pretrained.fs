/// The trained optimizers of the paper's reproduction (paper/optimizers/), inside the library:
/// listed and loaded by name, each with what it was trained on, its settings and its measured results.
namespace L2L

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp

/// A trained learned optimizer: one φ per coordinate group, and where it comes from.
type Pretrained =
    { Name: string
      /// The task it was meta-trained on (e.g. "mnist MLP 784-20-10 sigmoid, batch 128").
      Description: string
      /// (group, coordinates of the task it was trained on, φ): one "all" group for most; the conv
      /// net's "conv" and "fc". A φ applies to any number of coordinates (m_φ is coordinatewise).
      Groups: (string * int * Phi) list
      /// How φ was meta-trained: meta-iterations, horizon, unroll, meta-learning rate, seed, the
      /// kept iteration and its validation loss, seconds.
      Training: JsonObject
      /// Its evaluation under paper/results/: steps, runs, seed and per optimizer (m_φ as "lstm", the
      /// tuned baselines) the mean loss, its 95% interval and, on MNIST, the test accuracy at steps.
      Results: JsonObject }

    /// φ of each group, in order.
    member p.Phis = p.Groups |> List.map (fun (_, _, phi) -> phi)

    interface IDisposable with
        member p.Dispose() =
            for _, _, phi in p.Groups do
                for t in Phi.tensors phi do
                    t.Dispose()

module Pretrained =
    let private tryNode (o: JsonObject) (key: string) : JsonNode option =
        let mutable v: JsonNode = null
        if o.TryGetPropertyValue(key, &v) && not (isNull v) then Some v else None

    /// Name -> (optimizer resource, results resource).
    let private entries =
        [ "quadratic", ("L2L.Pretrained.quadratic.json", "L2L.Pretrained.quadratic.results.json")
          "mnist", ("L2L.Pretrained.mnist.json", "L2L.Pretrained.mnist.results.json")
          "mnist-conv", ("L2L.Pretrained.mnist-conv.json", "L2L.Pretrained.mnist-conv.results.json")
          "general", ("L2L.Pretrained.general.json", "L2L.Pretrained.beyond.results.json")
          "general-conv", ("L2L.Pretrained.general-conv.json", "L2L.Pretrained.beyond.results.json")
          "general-quadratic", ("L2L.Pretrained.general-quadratic.json", "L2L.Pretrained.beyond.results.json") ]

    /// The names of the optimizers shipped: quadratic, mnist, mnist-conv (the paper's reproduction);
    /// general, general-conv and general-quadratic (`paper beyond`: m_φ on the Adam-normalised moments
    /// for neural networks, the same fine-tuned on the conv net with its two parameter groups, and the
    /// quadratics' own; their Results hold the evaluations of the tasks each ran, under "tasks").
    let names = entries |> List.map fst

    let private resource (name: string) : string =
        let asm = typeof<Pretrained>.Assembly
        use s = asm.GetManifestResourceStream(name)
        if isNull s then invalidOp (sprintf "resource '%s' is missing from %s" name (asm.GetName().Name))
        use r = new StreamReader(s)
        r.ReadToEnd()

    let private lookup (name: string) =
        match entries |> List.tryFind (fun (n, _) -> n = name) with
        | Some(_, e) -> e
        | None -> raise (ArgumentException(sprintf "no pretrained optimizer '%s' (known: %s)" name (String.Join(", ", names))))

    /// The optimizer file's text (paper/optimizers/<name>.json) of a pretrained optimizer.
    let optimizerText (name: string) : string = resource (fst (lookup name))

    /// What a results file says of each optimizer: name, hyper-parameters, loss_at, ci95_at,
    /// test_acc_at (each run's values and the curves stay in paper/results/).
    /// `optimizer`: of several evaluations (paper beyond's tasks), those that ran this optimizer
    /// (paper/optimizers/<optimizer>.json; a task that names none ran it).
    let rec private summarize (optimizer: string) (root: JsonObject) : JsonObject =
      match tryNode root "tasks" with
      | Some tasks ->
          // several evaluations (paper beyond): each task's, with its name
          let o = JsonObject()
          let all = JsonArray()
          for t in tasks.AsArray() do
              let t = t.AsObject()
              let ran =
                  match tryNode t "optimizer" with
                  | Some f -> f.GetValue<string>() = sprintf "optimizers/%s.json" optimizer
                  | None -> true
              if ran then
                  let s = summarize optimizer t
                  match tryNode t "name" with
                  | Some n -> s["name"] <- n.DeepClone()
                  | None -> ()
                  all.Add(s)
          o["tasks"] <- all
          o
      | None ->
        let o = JsonObject()
        for key in [ "task"; "steps"; "runs"; "seed"; "tune_seed"; "tune_runs"; "tune_steps"; "description" ] do
            match tryNode root key with
            | Some v -> o[key] <- v.DeepClone()
            | None -> ()
        let optimizers = JsonArray()
        for opt in root["optimizers"].AsArray() do
            let s = JsonObject()
            for key in [ "name"; "hyper"; "loss_at"; "ci95_at"; "test_acc_at"; "test_loss_at" ] do
                match tryNode (opt.AsObject()) key with
                | Some v -> s[key] <- v.DeepClone()
                | None -> ()
            optimizers.Add(s)
        o["optimizers"] <- optimizers
        o

    let private summary (optimizer: string) (results: string) : JsonObject = summarize optimizer (JsonNode.Parse(results).AsObject())

    /// A shipped optimizer by name, its φ on the device and dtype given.
    let loadOn (name: string) (device: torch.Device) (dtype: torch.ScalarType) : Pretrained =
        let optimizer, results = lookup name
        let text = resource optimizer
        match OptimizerFile.ofJsonGroups text device dtype with
        | Error e -> invalidOp (sprintf "pretrained optimizer '%s': %s" name e)
        | Ok groups ->
            let groups = groups |> List.map (fun (g, k, phi) -> g, k, Phi.map (fun t -> (let d = t.detach() in t.Dispose(); d.DetachFromDisposeScope())) phi)
            let training =
                match tryNode (JsonNode.Parse(text).AsObject()) "training" with
                | Some(:? JsonObject as t) -> t.DeepClone().AsObject()
                | _ -> JsonObject()
            let description =
                match tryNode training "description" with
                | Some v -> v.GetValue<string>()
                | None -> name
            // a single-φ file records no coordinates: those of the task it was trained on
            let groups =
                match groups, tryNode training "coordinates" with
                | [ g, 0, phi ], Some k -> [ g, k.GetValue<int>(), phi ]
                | _ -> groups
            { Name = name
              Description = description
              Groups = groups
              Training = training
              Results = summary name (resource results) }

    /// A shipped optimizer by name (float32, on the CPU): `Pretrained.load "mnist"`.
    let load (name: string) : Pretrained = loadOn name torch.CPU torch.ScalarType.Float32
