/// The figure writer produces valid PNG and SVG files.
module L2L.Tests.PlotTests

open System
open System.IO
open Expecto
open L2L

let summary name (scale: float) =
    { Name = name
      Hyper = [ "lr", 0.1 ]
      LossAt = [ 10, scale * 0.1 ]
      Ci95At = [ 10, 0.01 ]
      RunsAt = [ 10, [| scale * 0.1 |] ]
      MetricsAt = []
      CurveMean = Array.init 11 (fun t -> scale * 10.0 / float (t + 1))
      CurveCi95 = Array.init 11 (fun t -> 0.1 / float (t + 1))
      StepsPerSecond = 1.0 }

[<Tests>]
let tests =
    testList "plots" [
        testCase "curves are written as a PNG and an SVG" <| fun () ->
            let r = { Task = "quadratic"; Dim = 10; Steps = 10; Runs = 3; Seed = 1UL; Optimizers = [ summary "lstm" 1.0; summary "adam" 2.0 ]; Tuning = []; TunedOn = None }
            let path = Path.Combine(Path.GetTempPath(), "l2l-plot-" + Guid.NewGuid().ToString("N"))
            L2L.Cli.Plots.curves path "test" r
            let png = File.ReadAllBytes(path + ".png")
            Expect.sequenceEqual png[0..7] [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |] "PNG signature"
            Expect.isGreaterThan png.Length 5000 "a real picture"
            let svg = File.ReadAllText(path + ".svg")
            let doc = Xml.XmlDocument()
            doc.LoadXml svg
            Expect.equal doc.DocumentElement.LocalName "svg" "an SVG document"
            Expect.stringContains svg "LSTM" "the legend names the LSTM"
    ]
