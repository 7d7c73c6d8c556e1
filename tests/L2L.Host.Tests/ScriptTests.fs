/// The F# scripts in tools/examples call the pure core from F# Interactive and keep working.
module L2L.Host.Tests.ScriptTests

open System.Diagnostics
open System.IO
open Expecto
open L2L.Host.Tests.Worker

[<Tests>]
let tests =
    testList "scripts" [
        testCase "tools/examples/quadratic.fsx trains and evaluates against Adam" <| fun () ->
            let cli = Path.Combine(root, "src", "L2L.Cli", "bin", "Release", "net10.0", "L2L.Core.dll")
            Expect.isTrue (File.Exists cli) "the Release build the scripts reference exists (tools/test builds it)"
            let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            for a in [ "fsi"; Path.Combine(root, "tools", "examples", "quadratic.fsx"); "40" ] do
                psi.ArgumentList.Add a
            use p = Process.Start psi
            let err = p.StandardError.ReadToEndAsync()
            let out = p.StandardOutput.ReadToEnd()
            p.WaitForExit()
            Expect.equal p.ExitCode 0 (sprintf "the script ran: %s %s" out err.Result)
            let line = out.Split('\n') |> Array.find (fun l -> l.StartsWith "RESULT")
            let value (key: string) = line.Split(' ') |> Array.pick (fun kv -> if kv.StartsWith(key + "=") then Some(float (kv.Substring(key.Length + 1))) else None)
            Expect.isTrue (System.Double.IsFinite(value "lstm") && value "lstm" > 0.0) "a finite LSTM loss"
            Expect.isTrue (value "adam" < 1.0) "Adam's loss as expected on quadratics"
    ]
