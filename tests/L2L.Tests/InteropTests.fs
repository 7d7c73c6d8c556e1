/// φ exchanged with PyTorch as safetensors: exact round trips, PyTorch's nn.LSTMCell / nn.Linear keys
/// (read by TorchSharp.PyBridge into TorchSharp's LSTMCell and Linear, the same libtorch cells
/// PyTorch runs), clear errors for bad files.
module L2L.Tests.InteropTests

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open TorchSharp.PyBridge
open L2L
open L2L.Tests.Helpers

let private temp (name: string) =
    let dir = Path.Combine(Path.GetTempPath(), "l2l-interop-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore
    Path.Combine(dir, name)

let private same (a: torch.Tensor) (b: torch.Tensor) = a.shape = b.shape && a.eq(b).all().item<bool>()

let private export (text: string) =
    match OptimizerFile.toSafetensors text with
    | Ok b -> b
    | Error e -> failtestf "export failed: %s" e

let private import (bytes: byte[]) =
    match OptimizerFile.ofSafetensors bytes with
    | Ok t -> t
    | Error e -> failtestf "import failed: %s" e

let private importError (bytes: byte[]) (fragment: string) =
    match OptimizerFile.ofSafetensors bytes with
    | Ok _ -> failtestf "accepted a file that should fail with '%s'" fragment
    | Error e -> Expect.stringContains e fragment "the error names the problem"

/// A file's tensors and metadata rewritten (the writer's own format, so only the change differs).
let private rewrite (bytes: byte[]) (f: Map<string, StTensor> -> Map<string, StTensor>) (g: Map<string, string> -> Map<string, string>) =
    match Safetensors.read bytes with
    | Error e -> failtestf "%s" e
    | Ok(ts, meta) ->
        Safetensors.write [ for KeyValue(k, t) in f ts -> k, t.DType, t.Shape, t.Values ] (g meta |> Map.toList)

/// A module holding named submodules (state-dict keys "<name>.<parameter>").
type private Holder() =
    inherit torch.nn.Module("mphi")
    member m.Add(key: string, sub: torch.nn.Module) = m.register_module(key, sub)

/// m_φ from PyTorch's modules: nn.LSTMCell per layer and nn.Linear, keyed cells.k.* and out.*.
let private torchModules (c: LstmConfig) =
    let inputs = Preprocess.features c.Preprocessing
    let cells = [ for k in 0 .. c.Layers - 1 -> torch.nn.LSTMCell((if k = 0 then int64 inputs else int64 c.Hidden), int64 c.Hidden) ]
    let out = torch.nn.Linear(int64 c.Hidden, 1L)
    let root = new Holder()
    root.Add("cells", torch.nn.ModuleList<TorchSharp.Modules.LSTMCell>(List.toArray cells))
    root.Add("out", out)
    root, cells, out

/// PyTorch's computation of m_φ on a sequence of gradients [T; n], state from zero: the updates [T; n].
let private replay (c: LstmConfig) (cells: TorchSharp.Modules.LSTMCell list) (out: TorchSharp.Modules.Linear) (grads: torch.Tensor) =
    use _ = torch.no_grad()
    let n = grads.shape[1]
    let dtype = grads.dtype
    let mutable state = [ for _ in cells -> torch.zeros([| n; int64 c.Hidden |], dtype = dtype), torch.zeros([| n; int64 c.Hidden |], dtype = dtype) ]
    [ for t in 0 .. int grads.shape[0] - 1 ->
          let g = grads[int64 t]
          let x0 =
              match c.Preprocessing with
              | LogSign p ->
                  let a = g.abs()
                  let big = a.ge(torch.tensor(exp -p, dtype = dtype))
                  let logPart = a.clamp_min((1e-38).ToScalar()).log() / p
                  torch.stack([| torch.where(big, logPart, torch.full_like(g, (-1.0).ToScalar())); torch.where(big, g.sign(), g * exp p) |], 1L)
              | Preprocessing.Identity -> g.unsqueeze(1L)
              | NormalizedMoments _ -> failwith "the reference implementation here has no moments"
          let mutable x = x0
          state <-
              [ for cell, (h, cs) in List.zip cells state ->
                    let struct (h2, c2) = cell.forward(x, Nullable<struct (torch.Tensor * torch.Tensor)>(struct (h, cs)))
                    x <- h2
                    h2, c2 ]
          (out.forward(x).squeeze(1L) * c.OutScale).to_type(torch.ScalarType.Float64).data<float>().ToArray() ]

/// Ours: the core's m_φ step on the same gradients.
let private ours (phi: Phi) (grads: torch.Tensor) =
    use _ = torch.no_grad()
    let mutable state = LstmState.zeros phi 1 grads.shape[1]
    [ for t in 0 .. int grads.shape[0] - 1 ->
          let g, s = Lstm.step backend phi state grads[int64 t]
          state <- s
          g.to_type(torch.ScalarType.Float64).data<float>().ToArray() ]

let private relativeDifference (a: float[] list) (b: float[] list) =
    List.map2 (fun (x: float[]) (y: float[]) -> maxAbsDiff x y / (y |> Array.map abs |> Array.max)) a b |> List.max

let private gradients (steps: int) (n: int) (dtype: torch.ScalarType) =
    use gen = new torch.Generator(5UL)
    let z = torch.randn([| int64 steps; int64 n |], dtype = torch.ScalarType.Float64, generator = gen)
    let e = torch.rand([| int64 steps; int64 n |], dtype = torch.ScalarType.Float64, generator = gen) * 10.0 - 8.0
    (z * torch.pow(torch.tensor(10.0, dtype = torch.ScalarType.Float64), e)).to_type(dtype)

/// Random configurations and values for the round-trip property.
type PhiCase = PhiCase of LstmConfig * int64

type InteropArbs =
    static member PhiCase() =
        gen {
            let! layers = Gen.choose (1, 3)
            let! hidden = Gen.choose (1, 7)
            let! logsign = ArbMap.generate<bool> ArbMap.defaults
            let! p = Gen.choose (1, 20)
            let! scale = Gen.elements [ 0.1; 1.0; 0.01; 3.5 ]
            let! seed = Gen.choose (0, 100000)
            return
                PhiCase(
                    { LstmConfig.paper with
                        Layers = layers
                        Hidden = hidden
                        Preprocessing = (if logsign then LogSign(float p) else Preprocessing.Identity)
                        OutScale = scale },
                    int64 seed)
        }
        |> Arb.fromGen

[<Tests>]
let tests =
    testList "interop (safetensors)" [
        testCase "export then import gives back each pretrained optimizer's file byte for byte" <| fun () ->
            for name in Pretrained.names do
                let text = Pretrained.optimizerText name
                Expect.equal (import (export text)) text (sprintf "%s: the round trip is exact" name)

        testPropertyWithConfig { propConfig with arbitrary = [ typeof<InteropArbs> ] } "round trip of random φ: the same configuration and every value bit for bit" <| fun (PhiCase(c, seed)) ->
            scoped (fun () ->
                let phi = phiOf c seed f32
                let text = OptimizerFile.toJson phi [ "note", JsonValue.Create("x") :> JsonNode ]
                let back = import (export text)
                Expect.equal back text "identical optimizer file"
                match OptimizerFile.ofJson back torch.CPU f32 with
                | Error e -> failtest e
                | Ok phi2 ->
                    Expect.equal phi2.Config phi.Config "configuration"
                    for a, b in List.zip (Phi.tensors phi) (Phi.tensors phi2) do
                        Expect.isTrue (same (a.detach()) (b.detach())) "values bit for bit")

        testCase "the keys are PyTorch's nn.LSTMCell and nn.Linear ones, with the configuration in the metadata" <| fun () ->
            match Safetensors.read (export (Pretrained.optimizerText "mnist")) with
            | Error e -> failtest e
            | Ok(ts, meta) ->
                let keys = ts |> Map.toList |> List.map fst |> Set.ofList
                let expected =
                    Set.ofList [ for k in 0 .. 1 do
                                     for s in [ "weight_ih"; "weight_hh"; "bias_ih"; "bias_hh" ] -> sprintf "cells.%d.%s" k s
                                 yield "out.weight"
                                 yield "out.bias" ]
                Expect.equal keys expected "keys"
                Expect.equal ts["cells.0.weight_ih"].Shape [| 80L; 2L |] "weight_ih [4H, in]"
                Expect.equal ts["cells.1.bias_hh"].Shape [| 80L |] "bias_hh [4H]"
                Expect.isTrue (ts["cells.1.bias_hh"].Values |> Array.forall ((=) 0.0)) "bias_hh zero (m_φ's bias is bias_ih)"
                Expect.equal ts["out.weight"].Shape [| 1L; 20L |] "out.weight [1, H]"
                let config = JsonNode.Parse(meta["config"])
                Expect.equal (config["hidden"].GetValue<int>()) 20 "config.hidden"
                Expect.equal (config["preprocessing"].GetValue<string>()) "logsign" "config.preprocessing"
                Expect.equal meta["format"] OptimizerFile.Format "format"

        testCase "a grouped optimizer: keys prefixed by group, the groups in the metadata" <| fun () ->
            match Safetensors.read (export (Pretrained.optimizerText "mnist-conv")) with
            | Error e -> failtest e
            | Ok(ts, meta) ->
                Expect.isTrue (ts.ContainsKey "conv.cells.0.weight_ih" && ts.ContainsKey "fc.out.bias") "prefixed keys"
                let groups = JsonNode.Parse(meta["groups"]).AsArray()
                Expect.equal [ for g in groups -> g["name"].GetValue<string>() ] [ "conv"; "fc" ] "groups in θ's order"

        testCase "TorchSharp.PyBridge reads the file into nn.LSTMCell and nn.Linear (strict), and libtorch's cells compute our updates" <| fun () ->
            scoped (fun () ->
                for name in [ "quadratic"; "mnist" ] do
                    let text = Pretrained.optimizerText name
                    let path = temp (name + ".safetensors")
                    File.WriteAllBytes(path, export text)
                    for dtype, tolerance in [ f64, 1e-12; f32, 1e-5 ] do
                        match OptimizerFile.ofJson text torch.CPU dtype with
                        | Error e -> failtest e
                        | Ok phi ->
                            let root, cells, out = torchModules phi.Config
                            root.load_safetensors(path, strict = true) |> ignore
                            root.``to``(dtype) |> ignore
                            let grads = gradients 12 300 dtype
                            let d = relativeDifference (ours phi grads) (replay phi.Config cells out grads)
                            Expect.isLessThan d tolerance (sprintf "%s, %O: max relative difference %g" name dtype d))

        testCase "PyBridge's reader sees the same values" <| fun () ->
            scoped (fun () ->
                let path = temp "q.safetensors"
                let bytes = export (Pretrained.optimizerText "quadratic")
                File.WriteAllBytes(path, bytes)
                let dict = Safetensors.LoadStateDict(path)
                match Safetensors.read bytes with
                | Error e -> failtest e
                | Ok(ts, _) ->
                    Expect.equal (Set.ofSeq dict.Keys) (ts |> Map.toList |> List.map fst |> Set.ofList) "the same keys"
                    for KeyValue(k, t) in dict do
                        Expect.equal (t.to_type(torch.ScalarType.Float64).data<float>().ToArray()) ts[k].Values k)

        testCase "import sums bias_ih and bias_hh (PyTorch keeps two biases, m_φ one)" <| fun () ->
            let bytes = export (Pretrained.optimizerText "quadratic")
            let shifted =
                rewrite bytes (Map.map (fun k t -> if k.EndsWith ".bias_hh" then { t with Values = Array.create t.Values.Length 0.5 } else t)) id
            match OptimizerFile.ofJson (Pretrained.optimizerText "quadratic") torch.CPU f32, OptimizerFile.ofJson (import shifted) torch.CPU f32 with
            | Ok a, Ok b ->
                for la, lb in List.zip a.Layers b.Layers do
                    Expect.isTrue (same (la.B.Add(torch.tensor(0.5f))) lb.B) "b = bias_ih + bias_hh"
                    Expect.isTrue (same la.Wih lb.Wih) "weights unchanged"
            | Error e, _
            | _, Error e -> failtest e

        testCase "bad files: one message naming the key or the field" <| fun () ->
            let good = export (Pretrained.optimizerText "quadratic")
            importError [| 1uy; 2uy |] "shorter than the 8-byte header"
            importError (Array.append (BitConverter.GetBytes(1000000UL)) (Array.zeroCreate 16)) "header length"
            importError (Array.append (BitConverter.GetBytes(4UL)) (Encoding.ASCII.GetBytes "{{{{")) "not valid JSON"
            importError (good |> Array.take (good.Length - 4)) "data_offsets"
            importError (rewrite good (Map.remove "cells.1.weight_hh") id) "cells.1.weight_hh is missing"
            importError (rewrite good (Map.add "extra" { DType = "F32"; Shape = [| 1L |]; Values = [| 0.0 |] }) id) "extra is not part of m_phi"
            importError (rewrite good id (Map.remove "config")) "neither 'config' nor 'groups'"
            importError (rewrite good id (Map.add "format" "something-else")) "format is 'something-else'"
            importError (rewrite good id (Map.add "config" "{\"layers\": 2")) "config is not valid JSON"
            importError (rewrite good (Map.map (fun k t -> if k = "out.weight" then { t with Shape = [| 20L; 1L |] } else t)) id) "w_out has shape [20,1]"
            importError (rewrite good (Map.map (fun k t -> if k = "out.bias" then { t with Values = [| nan |] } else t)) id) "non-finite"
            let f16 = Encoding.UTF8.GetString(good).Replace("\"dtype\":\"F32\"", "\"dtype\":\"F16\"")
            importError (Encoding.UTF8.GetBytes f16) "dtype F16 is not supported"

        testCase "hostile headers and fields are messages, never exceptions" <| fun () ->
            let good = export (Pretrained.optimizerText "quadratic")
            let raw (header: string) (data: int) =
                let h = Encoding.UTF8.GetBytes header
                Array.concat [ BitConverter.GetBytes(uint64 h.Length); h; Array.zeroCreate data ]
            // an element count that would overflow int64 if multiplied naively
            match Safetensors.read (raw "{\"t\":{\"dtype\":\"F32\",\"shape\":[4,4611686018427387904],\"data_offsets\":[0,0]}}" 0) with
            | Ok _ -> failtest "accepted an overflowing shape"
            | Error e -> Expect.stringContains e "too large" "too large"
            // a zero dimension: zero elements, whatever the others
            match Safetensors.read (raw "{\"t\":{\"dtype\":\"F32\",\"shape\":[3000000000,0],\"data_offsets\":[0,0]}}" 0) with
            | Ok(ts, _) -> Expect.equal ts["t"].Values.Length 0 "no values"
            | Error e -> failtestf "refused an empty tensor: %s" e
            // invalid UTF-8 in a name
            let h = Array.concat [ Encoding.ASCII.GetBytes "{\""; [| 0xC3uy; 0x28uy |]; Encoding.ASCII.GetBytes "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}" ]
            importError (Array.concat [ BitConverter.GetBytes(uint64 h.Length); h; Array.zeroCreate 4 ]) "header"
            // a fractional or huge coordinate count in the groups
            let grouped = export (Pretrained.optimizerText "mnist-conv")
            let setCoordinates (v: string) = rewrite grouped id (Map.map (fun k m -> if k = "groups" then m.Replace("\"coordinates\":348", "\"coordinates\":" + v) else m))
            importError (setCoordinates "2.5") "positive 'coordinates' count"
            importError (setCoordinates "1e12") "positive 'coordinates' count"
            // layers beyond any sane network
            importError (rewrite good id (Map.map (fun k m -> if k = "config" then m.Replace("\"layers\":2", "\"layers\":5000") else m))) "config.layers must be an integer from 1 to 1000"
            // duplicate keys in the training record of an optimizer file: export says so
            let text = Pretrained.optimizerText "quadratic"
            let dup = text.Substring(0, text.Length - 1) + ",\"training\":{\"a\":1,\"a\":2}}"
            match OptimizerFile.ofJsonGroups dup torch.CPU f32 with
            | Ok gs -> for _, _, phi in gs do (for t in Phi.tensors phi do t.Dispose())
            | Error _ -> ()
            match OptimizerFile.toSafetensors dup with
            | Ok _ -> ()
            | Error e -> Expect.isFalse (String.IsNullOrWhiteSpace e) "a message"
            // and the optimizer file's own reader: a fractional group size is a message too
            let conv = Pretrained.optimizerText "mnist-conv"
            match OptimizerFile.ofJsonGroups (conv.Replace("\"coordinates\":348", "\"coordinates\":2.5")) torch.CPU f32 with
            | Ok _ -> failtest "accepted a fractional coordinate count"
            | Error e -> Expect.stringContains e "coordinates" "names the field"

        testCase "one group listed under 'groups': keys carry its prefix" <| fun () ->
            let grouped = export (Pretrained.optimizerText "mnist-conv")
            let one =
                rewrite grouped (Map.filter (fun k _ -> k.StartsWith "conv."))
                    (Map.map (fun k m ->
                        if k = "groups" then
                            let a = JsonNode.Parse(m).AsArray()
                            a.RemoveAt(1)
                            a.ToJsonString()
                        else m))
            match OptimizerFile.ofJsonGroups (import one) torch.CPU f32 with
            | Error e -> failtest e
            | Ok [ _, _, phi ] -> for t in Phi.tensors phi do t.Dispose()
            | Ok gs -> failtestf "%d groups" gs.Length

        testCase "a module's weights saved by PyBridge without our metadata: the import says what is missing" <| fun () ->
            scoped (fun () ->
                let root, _, _ = torchModules LstmConfig.paper
                let path = temp "plain.safetensors"
                root.save_safetensors(path) |> ignore
                importError (File.ReadAllBytes path) "neither 'config' nor 'groups'")

        testCase "command line: export and import round trip; unknown optimizers and bad files are one line, exit 2" <| fun () ->
            let st = temp "m.safetensors"
            let json = Path.Combine(Path.GetDirectoryName st, "m.json")
            let code, _, err = L2L.Tests.CliTests.cli [ "export"; "--optimizer"; "mnist"; "--format"; "safetensors"; "--out"; st ]
            Expect.equal code 0 (sprintf "export: %s" err)
            let code, _, err = L2L.Tests.CliTests.cli [ "import"; "--input"; st; "--out"; json ]
            Expect.equal code 0 (sprintf "import: %s" err)
            Expect.equal (File.ReadAllText json) (Pretrained.optimizerText "mnist") "the pretrained file back"
            let code, _, err = L2L.Tests.CliTests.cli [ "export"; "--optimizer"; "no-such"; "--out"; st ]
            Expect.equal code 2 "unknown optimizer: exit 2"
            Expect.stringContains err "no optimizer file 'no-such'" "names it"
            File.WriteAllText(json + ".bad", "not safetensors at all")
            let code, _, err = L2L.Tests.CliTests.cli [ "import"; "--input"; json + ".bad"; "--out"; json ]
            Expect.equal code 2 "bad file: exit 2"
            Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
            Expect.stringContains err (json + ".bad") "names the file"
            Expect.equal (File.ReadAllText json) (Pretrained.optimizerText "mnist") "the earlier output is left as it was"
    ]
