/// Progress of long work, TensorBoard events and training curves of the command line's `train`.
module L2L.Tests.ProgressTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto
open L2L
open L2L.Tests.Helpers

/// `phase  42.0%  21/50 it  18.3 it/s  elapsed 0:01  remaining 0:02`
let statusLine =
    Regex(@"^(?<phase>\S.*?)  +(?<pct>\d+\.\d)%  (?<done>\d+(\.\d)?)/(?<total>\d+(\.\d)?) (?<unit>\S+)  (?:[0-9.e+-]+|-) \S+/s  elapsed (?<elapsed>\d+:\d\d(:\d\d)?)  remaining (?<remaining>\d+:\d\d(:\d\d)?|-)$")

/// The status lines of a text, with their fraction done.
let statusLines (text: string) =
    text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    |> Array.map (fun l -> l.TrimEnd('\r'))
    |> Array.choose (fun l ->
        let m = statusLine.Match l
        if m.Success then Some(m.Groups["phase"].Value, float m.Groups["done"].Value, float m.Groups["total"].Value) else None)

/// The scalars of TensorBoard event files (TFRecord framing: length, its CRC, an Event, its CRC):
/// (tag, step, value), in the order written.
let readScalars (dir: string) =
    [ for file in Directory.GetFiles(dir, "events.out.tfevents.*") |> Array.sort do
          let bytes = File.ReadAllBytes file
          let mutable o = 0
          while o < bytes.Length do
              let n = int (BitConverter.ToUInt64(bytes, o))
              let e = Tensorboard.Event.Parser.ParseFrom(bytes, o + 12, n)
              if not (isNull e.Summary) then
                  for v in e.Summary.Value do
                      yield v.Tag, e.Step, float v.SimpleValue
              o <- o + 12 + n + 4 ]

[<Tests>]
let tests =
    testList "progress and training records" [
        testCase "plain progress: well-formed lines, monotone, the last at the phase's end; other output passes through" <| fun () ->
            use w = new StringWriter()
            let p = ProgressReporter.Plain(w, TimeSpan.Zero)
            Expect.isFalse p.Interactive "plain"
            p.Phase("meta-training", 50.0, "it")
            for d in [ 5.0; 10.0; 7.0; 30.0; 80.0 ] do
                p.Update d
            p.Line "a line of its own"
            p.Finish()
            p.Phase("evaluating", 6.0, "runs")
            p.Update 6.0
            p.Finish()
            let text = w.ToString()
            Expect.isFalse (text.Contains "\u001b") "no terminal control sequences"
            Expect.isFalse (text.Contains "\r") "no carriage returns"
            Expect.stringContains text "a line of its own\n" "other output as it is"
            let lines = statusLines text
            let training = lines |> Array.filter (fun (ph, _, _) -> ph = "meta-training") |> Array.map (fun (_, d, _) -> d)
            Expect.equal training [| 5.0; 10.0; 10.0; 30.0; 50.0; 50.0 |] "monotone, capped at the total, the last at the end"
            Expect.equal (lines |> Array.filter (fun (ph, _, _) -> ph = "evaluating")) [| "evaluating", 6.0, 6.0; "evaluating", 6.0, 6.0 |] "the second phase"
            let unparsed =
                text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.filter (fun l -> l <> "a line of its own" && not (statusLine.IsMatch l))
            Expect.isEmpty unparsed "every other line is a status line"

        testCase "plain progress prints at most one line per interval" <| fun () ->
            use w = new StringWriter()
            let p = ProgressReporter.Plain(w, TimeSpan.FromHours 1.0)
            p.Phase("tuning the baselines", 100.0, "runs")
            for d in 1..100 do
                p.Update(float d)
            Expect.equal (statusLines (w.ToString())).Length 0 "nothing within the interval"
            p.Finish()
            Expect.equal (statusLines (w.ToString())) [| "tuning the baselines", 100.0, 100.0 |] "one line at the end"

        testCase "on a terminal the status line is redrawn in place and other output goes above it" <| fun () ->
            use w = new StringWriter()
            let p = ProgressReporter(true, (fun () -> w :> TextWriter), TimeSpan.FromSeconds 10.0)
            p.Phase("meta-training", 10.0, "it")
            p.Line "iter 5"
            p.Update 10.0
            p.Finish()
            let text = w.ToString()
            Expect.stringContains text "\r\u001b[2K[" "redrawn in place with a bar"
            Expect.stringContains text "\r\u001b[2Kiter 5\n" "a line clears the status line first"
            Expect.isTrue (text.EndsWith("remaining 0:00" + Environment.NewLine) || text.Contains "meta-training  100.0%") "the final status stays as a line"

        testCase "the remaining time is the rest at the rate so far" <| fun () ->
            let s = { Phase = "x"; Done = 25.0; Total = 100.0; Unit = "it"; Elapsed = TimeSpan.FromSeconds 10.0 }
            Expect.floatClose Accuracy.high (ProgressStatus.rate s) 2.5 "2.5 it/s"
            Expect.equal (ProgressStatus.remaining s) (Some(TimeSpan.FromSeconds 30.0)) "75 more at 2.5/s"
            Expect.equal (ProgressStatus.remaining { s with Done = 0.0 }) None "unknown before anything is done"
            Expect.isTrue (statusLine.IsMatch(ProgressStatus.describe s)) (ProgressStatus.describe s)

        testCaseSequenced "train writes TensorBoard events (the worker's tags, at the iterations logged) and its training curves" <| fun () ->
            let d = Path.Combine(Path.GetTempPath(), "l2l-train-" + Guid.NewGuid().ToString("N"))
            let code, out, err =
                CliTests.cli [ "train"; "--task"; "quadratic"; "--out"; d; "--meta-iterations"; "12"; "--steps"; "10"; "--unroll"; "5"
                               "--validate-every"; "4"; "--validation-functions"; "20"; "--hidden"; "6"; "--threads"; "2" ]
            Expect.equal code 0 (sprintf "train succeeded: %s" err)
            let progress = statusLines out |> Array.filter (fun (ph, _, _) -> ph = "meta-training")
            Expect.isNonEmpty progress "progress reported"
            Expect.equal (Array.last progress) ("meta-training", 12.0, 12.0) "ends at 12 of 12"
            let scalars = readScalars (Path.Combine(d, "events"))
            let steps tag = scalars |> List.filter (fun (t, _, _) -> t = tag) |> List.map (fun (_, s, _) -> s)
            Expect.equal (steps "meta_loss") [ 1L .. 12L ] "meta_loss at every iteration"
            Expect.equal (steps "meta_lr") [ 1L .. 12L ] "meta_lr at every iteration"
            Expect.equal (steps "steps_per_s") [ 1L .. 12L ] "steps_per_s at every iteration"
            Expect.equal (steps "validation_loss") [ 4L; 8L; 12L ] "validation_loss at each validation"
            let log = File.ReadAllLines(Path.Combine(d, "train-log.csv"))
            let firstLoss = float (log[1].Split(',')[3])
            let _, _, v = scalars |> List.find (fun (t, s, _) -> t = "meta_loss" && s = 1L)
            Expect.floatClose { absolute = 0.0; relative = 1e-6 } v firstLoss "the value logged (float32)"
            let _, _, lr = scalars |> List.find (fun (t, _, _) -> t = "meta_lr")
            Expect.floatClose { absolute = 0.0; relative = 1e-6 } lr 0.003 "the meta-lr"
            let png = File.ReadAllBytes(Path.Combine(d, "train-curves.png"))
            Expect.sequenceEqual png[0..7] [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |] "a PNG"
            let svg = File.ReadAllText(Path.Combine(d, "train-curves.svg"))
            Expect.stringContains svg "<svg" "an SVG"
            Expect.stringContains svg "kept φ (iteration" "the kept φ marked"
            Directory.Delete(d, true)
    ]
