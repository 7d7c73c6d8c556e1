/// The F# scripts in tools/examples call the pure core from F# Interactive and keep working.
module L2L.Host.Tests.ScriptTests

open System
open System.Diagnostics
open System.Globalization
open System.IO
open Expecto
open L2L.Host.Tests.Worker

/// The values of the program's last line `RESULT a=x b=y` (it must exit 0).
let private result (code: int, out: string, err: string) : Map<string, float> =
    Expect.equal code 0 (sprintf "exit code 0; stdout: %s stderr: %s" out err)
    match out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.tryFindBack (fun l -> l.StartsWith "RESULT ") with
    | None -> failtestf "no RESULT line in:\n%s" out
    | Some l ->
        l.Substring(7).Split(' ', StringSplitOptions.RemoveEmptyEntries)
        |> Array.map (fun kv -> kv.Split('=')[0], Double.Parse(kv.Split('=')[1], CultureInfo.InvariantCulture))
        |> Map.ofArray

/// The packages' version (Directory.Build.props).
let private packageVersion =
    let props = File.ReadAllText(Path.Combine(root, "Directory.Build.props"))
    let m = Text.RegularExpressions.Regex.Match(props, "<Version>([^<]+)</Version>")
    if m.Success then m.Groups[1].Value else failwith "Directory.Build.props has no <Version>"

let private hasTorch =
    lazy
        (try
            let code, _, _ = runProgram (Option.ofObj (Environment.GetEnvironmentVariable "L2L_PYTHON") |> Option.defaultValue "/usr/bin/python3") [ "-c"; "import torch" ]
            code = 0
         with _ -> false)

[<Tests>]
let tests =
    testList "scripts" [
        testCase "the scripts reference the L2L.Functional package of this version, not build outputs" <| fun () ->
            let prelude = File.ReadAllText(Path.Combine(root, "tools", "examples", "L2L.fsx"))
            Expect.stringContains prelude (sprintf "#r \"nuget: L2L.Functional, %s\"" packageVersion) "the prelude pins the version of Directory.Build.props"
            for f in Directory.GetFiles(Path.Combine(root, "tools", "examples"), "*.fsx") do
                for line in File.ReadAllLines f do
                    if line.StartsWith "#r" then
                        Expect.isFalse (line.Contains "bin/" || line.Contains ".dll") (sprintf "%s: %s references a build output" (Path.GetFileName f) line)

        (if hasTorch.Force() then
             testCase "tools/pytorch-check: PyTorch's nn.LSTMCell and nn.Linear, loaded from our safetensors, compute our updates" <| fun () ->
                 let code, out, err = runProgram (Path.Combine(root, "tools", "pytorch-check")) []
                 Expect.equal code 0 (sprintf "within tolerance: %s %s" out err)
                 Expect.stringContains out "all within tolerance" "its verdict"
         else
             testCase "tools/pytorch-check: PyTorch's nn.LSTMCell and nn.Linear, loaded from our safetensors, compute our updates" <| fun () ->
                 skiptest "PyTorch is not installed here (/usr/bin/python3 -c 'import torch' fails; Debian: apt-get install python3-torch)")

        testCase "tools/examples/quadratic.fsx trains and evaluates against Adam" <| fun () ->
            Expect.isTrue (File.Exists(Path.Combine(root, "artifacts", "packages", sprintf "L2L.Functional.%s.nupkg" packageVersion)))
                "the package the scripts reference exists (tools/test packs it)"
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

        testCase "own-model.fsx and the C# example: the pretrained MNIST optimizer beats Adam (lr 0.03) on nn.Sequential 784-20-10, with the same numbers" <| fun () ->
            let fs = result (runProgram "dotnet" [ "fsi"; Path.Combine(root, "tools", "examples", "own-model.fsx") ])
            Expect.isLessThan fs["learned"] fs["adam"] "F#: learned < adam"
            let dll = Path.Combine(root, "tools", "examples", "OwnModel.CSharp", "bin", configuration, "net10.0", "OwnModel.CSharp.dll")
            let cs = result (runProgram "dotnet" [ dll ])
            Expect.isLessThan cs["learned"] cs["adam"] "C#: learned < adam"
            Expect.floatClose Accuracy.medium cs["learned"] fs["learned"] "the same training from C# and F#: learned"
            Expect.floatClose Accuracy.medium cs["adam"] fs["adam"] "and adam"

        testCase "meta-train-own-model.fsx meta-trains m_φ on a module of its own and evaluates it against tuned Adam" <| fun () ->
            let r = result (runProgram "dotnet" [ "fsi"; Path.Combine(root, "tools", "examples", "meta-train-own-model.fsx"); "40" ])
            Expect.isTrue (Double.IsFinite r["lstm"] && r["lstm"] > 0.0) "lstm: a finite loss"
            Expect.isTrue (Double.IsFinite r["adam"] && r["adam"] > 0.0) "adam: a finite loss"
            // 40 meta-iterations move m_φ well off chance (ln 10 ≈ 2.30)
            Expect.isLessThan r["lstm"] 1.5 "lstm learned something"
    ]
