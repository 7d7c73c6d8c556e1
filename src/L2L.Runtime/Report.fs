/// Evaluation results as text, for the console and logs.
namespace L2L

open System

module Report =
    let private fmt (v: float) = if Double.IsFinite v then sprintf "%.4g" v else "diverged"

    /// The results as a text table (mean ± 95% CI at the reported steps) with the LSTM's ratio to the
    /// best baseline.
    let table (r: EvaluationResults) : string list =
        [ yield sprintf "%s, %d fresh problems (seed %d), mean loss ± 95%% CI:" r.Task r.Runs r.Seed
          match r.Optimizers with
          | [] -> ()
          | first :: _ ->
              yield sprintf "  %-9s %-9s %s %10s" "optimizer" "lr" (first.LossAt |> List.filter (fun (t, _) -> t > 0) |> List.map (fun (t, _) -> sprintf "%22s" (sprintf "step %d" t)) |> String.concat "") "steps/s"
          for sm in r.Optimizers do
              let lr = sm.Hyper |> List.tryFind (fun (k, _) -> k = "lr") |> Option.map (snd >> sprintf "%.3g") |> Option.defaultValue "-"
              let cells =
                  List.zip sm.LossAt sm.Ci95At
                  |> List.filter (fun ((t, _), _) -> t > 0)
                  |> List.map (fun ((_, m), (_, c)) -> sprintf "%22s" (sprintf "%s ± %s" (fmt m) (fmt c)))
                  |> String.concat ""
              yield sprintf "  %-9s %-9s %s %10.0f" sm.Name lr cells sm.StepsPerSecond
          for sm in r.Optimizers do
              for name, values in sm.MetricsAt do
                  yield sprintf "  %-9s %-9s %s" sm.Name name (values |> List.filter (fun (t, _) -> t > 0) |> List.map (fun (t, v) -> sprintf "%22s" (sprintf "%.4f @%d" v t)) |> String.concat "")
          match r.Optimizers with
          | lstm :: baselines when lstm.Name = "lstm" && not baselines.IsEmpty ->
              for t, v in lstm.LossAt |> List.filter (fun (t, _) -> t > 0) do
                  let bestName, bestValue =
                      baselines |> List.map (fun b -> b.Name, b.LossAt |> List.find (fun (u, _) -> u = t) |> snd) |> List.minBy snd
                  yield sprintf "  step %d: lstm / best baseline (%s) = %.3f (%s)" t bestName (v / bestValue) (if v < bestValue then "LSTM better" else "LSTM not better")
          | _ -> () ]
