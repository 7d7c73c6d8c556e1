/// Learning-curve figures in the look of the paper's: log-scale loss against optimizee step, one line
/// per optimizer with its 95% band, written as PNG and SVG.
module L2L.Cli.Plots

open System
open ScottPlot
open L2L

// ten distinct colours: a figure with the four architectures and the five baselines repeats none
let private palette =
    [| Color.FromHex "#d62728"; Color.FromHex "#1f77b4"; Color.FromHex "#2ca02c"; Color.FromHex "#9467bd"
       Color.FromHex "#ff7f0e"; Color.FromHex "#8c564b"; Color.FromHex "#17becf"; Color.FromHex "#e377c2"
       Color.FromHex "#7f7f7f"; Color.FromHex "#bcbd22" |]

/// Writes `path`.png and `path`.svg of a plot, each atomically.
let save (plt: Plot) (path: string) (width: int) (height: int) =
    AtomicFile.write (path + ".png") (plt.GetImageBytes(width, height, ImageFormat.Png)) |> ignore
    AtomicFile.writeText (path + ".svg") (plt.GetSvgXml(width, height)) |> ignore

/// One panel: the mean curves (with 95% bands) of every optimizer, log10 loss on the y axis.
let private panel (plt: Plot) (title: string) (optimizers: Summary list) =
    optimizers
    |> List.iteri (fun k o ->
        let color = palette[k % palette.Length]
        let n = o.CurveMean.Length
        let xs = Array.init n float
        let floor = 1e-12
        let lg (v: float) = if Double.IsFinite v && v > 0.0 then log10 (max v floor) else nan
        let ys = o.CurveMean |> Array.map lg
        let lo = Array.init n (fun t -> lg (o.CurveMean[t] - (if Double.IsFinite o.CurveCi95[t] then o.CurveCi95[t] else 0.0)))
        let hi = Array.init n (fun t -> lg (o.CurveMean[t] + (if Double.IsFinite o.CurveCi95[t] then o.CurveCi95[t] else 0.0)))
        let ok = Array.init n (fun t -> Double.IsFinite ys[t] && Double.IsFinite lo[t] && Double.IsFinite hi[t])
        let pick (a: float[]) = Array.init n id |> Array.filter (fun t -> ok[t]) |> Array.map (fun t -> a[t])
        if (pick xs).Length > 1 then
            let band = plt.Add.FillY(pick xs, pick lo, pick hi)
            band.FillColor <- color.WithAlpha(0.18)
            band.LineWidth <- 0.0f
            let line = plt.Add.ScatterLine(pick xs, pick ys)
            line.Color <- color
            let learned = Architecture.all |> List.exists (fun a -> Architecture.name a = o.Name)
            line.LineWidth <- (if learned then 2.5f else 1.5f)
            line.LegendText <- (if o.Name = "lstm" then "LSTM" else o.Name))
    let ticks = TickGenerators.NumericAutomatic()
    ticks.MinorTickGenerator <- TickGenerators.LogMinorTickGenerator()
    ticks.IntegerTicksOnly <- true
    ticks.LabelFormatter <- fun y -> sprintf "%g" (10.0 ** y)
    plt.Axes.Left.TickGenerator <- ticks
    plt.Title(title)
    plt.XLabel("step")
    plt.YLabel("loss (log scale)")
    plt.ShowLegend(Alignment.UpperRight) |> ignore

/// The training curves of a meta-training run: the meta-loss of each meta-iteration (left axis) and
/// the validation loss (right axis, log scale), the kept φ's iteration marked; `path`.png and .svg.
/// `window`: meta-iterations per trajectory (the meta-loss's mean over each is drawn too).
let training (path: string) (title: string) (metaLoss: (float * float) list) (validation: (float * float) list) (best: int) (window: int) =
    use plt = new Plot()
    if not metaLoss.IsEmpty then
        let l = plt.Add.ScatterLine(metaLoss |> List.map fst |> Array.ofList, metaLoss |> List.map snd |> Array.ofList)
        l.Color <- (Color.FromHex "#1f77b4").WithAlpha(0.35)
        l.LineWidth <- 1.0f
        l.LegendText <- "meta-loss L(φ) of each truncation"
        let means = metaLoss |> List.chunkBySize (max 1 window) |> List.map (fun c -> List.averageBy fst c, List.averageBy snd c)
        if means.Length > 1 then
            let m = plt.Add.ScatterLine(means |> List.map fst |> Array.ofList, means |> List.map snd |> Array.ofList)
            m.Color <- Color.FromHex "#1f77b4"
            m.LineWidth <- 2.0f
            m.LegendText <- sprintf "its mean over each trajectory (%d truncations)" window
    let finite = validation |> List.filter (fun (_, v) -> Double.IsFinite v && v > 0.0)
    if not finite.IsEmpty then
        let v = plt.Add.Scatter(finite |> List.map fst |> Array.ofList, finite |> List.map (snd >> log10) |> Array.ofList)
        v.Color <- Color.FromHex "#d62728"
        v.LineWidth <- 2.0f
        v.MarkerSize <- 6.0f
        v.LegendText <- "validation f(θ_T)"
        v.Axes.YAxis <- plt.Axes.Right
        let ticks = TickGenerators.NumericAutomatic()
        ticks.LabelFormatter <- fun y -> sprintf "%.3g" (10.0 ** y)
        plt.Axes.Right.TickGenerator <- ticks
        plt.Axes.Right.Label.Text <- "validation loss (log scale)"
    if best > 0 then
        let line = plt.Add.VerticalLine(float best)
        line.Color <- Color.FromHex "#2ca02c"
        line.LineWidth <- 1.5f
        line.LegendText <- sprintf "kept φ (iteration %d)" best
    plt.Title(title)
    plt.XLabel("meta-iteration")
    plt.YLabel("meta-loss")
    plt.ShowLegend(Alignment.UpperRight) |> ignore
    save plt path 900 600

/// Writes `path`.png and `path`.svg (one panel).
let curves (path: string) (title: string) (results: EvaluationResults) =
    use plt = new Plot()
    panel plt title results.Optimizers
    save plt path 900 600
