/// The results file of an evaluation:
///   {"task":..,"dim":..,"steps":S,"runs":N,"seed":..,"optimizers":[{"name":..,"hyper":{..},
///    "loss_at":{"100":mean,..},"ci95_at":{..},"runs_at":{"100":[N losses],..},"curve_mean":[S+1 numbers],
///    "curve_ci95":[..],"steps_per_s":..}],..}; ci95 is the half-width t_{N−1,0.975}·s/√N.
/// Non-finite numbers (a diverged run) are written as null, so the JSON stays strict.
namespace L2L

open System
open System.IO
open System.Text
open System.Text.Json

module ResultsFile =
    let private num (w: Utf8JsonWriter) (v: float) =
        if Double.IsFinite v then w.WriteNumberValue(v) else w.WriteNullValue()

    /// The results file's text; `extra` adds top-level fields after the tuning's (timings,
    /// descriptions).
    let toJson (r: EvaluationResults) (extra: (string * Nodes.JsonNode) list) : string =
        use ms = new MemoryStream()
        (
            use w = new Utf8JsonWriter(ms, JsonWriterOptions(Indented = true))
            w.WriteStartObject()
            w.WriteString("task", r.Task)
            w.WriteNumber("dim", r.Dim)
            w.WriteNumber("steps", r.Steps)
            w.WriteNumber("runs", r.Runs)
            w.WriteNumber("seed", r.Seed)
            w.WriteStartArray("optimizers")
            for s in r.Optimizers do
                w.WriteStartObject()
                w.WriteString("name", s.Name)
                w.WriteStartObject("hyper")
                for k, v in s.Hyper do
                    w.WritePropertyName(k)
                    num w v
                w.WriteEndObject()
                for field, values in [ "loss_at", s.LossAt; "ci95_at", s.Ci95At ] do
                    w.WriteStartObject(field)
                    for t, v in values do
                        w.WritePropertyName(string t)
                        num w v
                    w.WriteEndObject()
                w.WriteStartObject("runs_at")
                for t, values in s.RunsAt do
                    w.WriteStartArray(string t)
                    for v in values do
                        num w v
                    w.WriteEndArray()
                w.WriteEndObject()
                for name, values in s.MetricsAt do
                    w.WriteStartObject(name + "_at")
                    for t, v in values do
                        w.WritePropertyName(string t)
                        num w v
                    w.WriteEndObject()
                w.WriteStartArray("curve_mean")
                for v in s.CurveMean do
                    num w v
                w.WriteEndArray()
                w.WriteStartArray("curve_ci95")
                for v in s.CurveCi95 do
                    num w v
                w.WriteEndArray()
                w.WritePropertyName("steps_per_s")
                num w s.StepsPerSecond
                w.WriteEndObject()
            w.WriteEndArray()
            match r.TunedOn with
            | Some(seed, runs, steps) ->
                w.WriteStartObject("tuning")
                for t in r.Tuning do
                    w.WriteStartObject(t.Name)
                    w.WriteNumber("lr", t.Lr)
                    w.WritePropertyName("score")
                    num w t.Score
                    w.WriteBoolean("at_grid_edge", t.AtGridEdge)
                    w.WriteEndObject()
                w.WriteEndObject()
                w.WriteNumber("tune_seed", seed)
                w.WriteNumber("tune_runs", runs)
                w.WriteNumber("tune_steps", steps)
            | None -> ()
            for k, v in extra do
                w.WritePropertyName(k)
                if isNull v then w.WriteNullValue() else v.WriteTo(w)
            w.WriteEndObject()
        )
        Encoding.UTF8.GetString(ms.ToArray())

    /// The mean curves as CSV: step, then <optimizer>_mean and <optimizer>_ci95 for each optimizer.
    let curvesCsv (r: EvaluationResults) : string =
        let sb = StringBuilder()
        sb.Append("step") |> ignore
        for o in r.Optimizers do
            sb.Append(sprintf ",%s_mean,%s_ci95" o.Name o.Name) |> ignore
        sb.AppendLine() |> ignore
        let steps = r.Optimizers |> List.map (fun o -> o.CurveMean.Length) |> List.fold min Int32.MaxValue
        let cell (v: float) = if Double.IsFinite v then v.ToString("R", Globalization.CultureInfo.InvariantCulture) else ""
        for t in 0 .. steps - 1 do
            sb.Append(t) |> ignore
            for o in r.Optimizers do
                sb.Append(',').Append(cell o.CurveMean[t]).Append(',').Append(cell o.CurveCi95[t]) |> ignore
            sb.AppendLine() |> ignore
        sb.ToString()

    /// Writes the results file to `path` atomically.
    let save (path: string) (r: EvaluationResults) (extra: (string * Nodes.JsonNode) list) =
        AtomicFile.writeText path (toJson r extra) |> ignore
