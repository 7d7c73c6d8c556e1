/// The saved optimizer format: exact round trip, clear errors, the reference implementation's files.
module L2L.Tests.OptimizerFileTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let tempFile (name: string) =
    let dir = Path.Combine(Path.GetTempPath(), "l2l-tests-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore
    Path.Combine(dir, name)

let load (text: string) = OptimizerFile.ofJson text torch.CPU f32

let expectError (text: string) (fragment: string) =
    match load text with
    | Ok _ -> failtestf "accepted a file that should fail with '%s'" fragment
    | Error e -> Expect.stringContains e fragment "error names the problem"

let validJson () =
    let phi = phiOf { LstmConfig.paper with Hidden = 3 } 1L f32
    OptimizerFile.toJson phi []

/// Sets the value at a path of property names.
let setAt (o: JsonObject) (path: string list) (v: JsonNode) =
    let parent = path |> List.take (path.Length - 1) |> List.fold (fun (n: JsonNode) k -> n.[k]) (o :> JsonNode)
    parent.AsObject().[List.last path] <- v

let mutateParams (f: JsonObject -> unit) =
    let node = JsonNode.Parse(validJson ()).AsObject()
    f node
    node.ToJsonString()

[<Tests>]
let tests =
    testList "optimizer file" [
        testCase "grouped optimizers: save → load is exact, with names and sizes; the task's groups are checked" <| fun () ->
            scoped (fun () ->
                let task = Conv TaskSpec.convDefault
                let c = { LstmConfig.paper with Hidden = 3 }
                let phis = [ phiOf c 1L f32; phiOf c 2L f32 ]
                let path = tempFile "conv.json"
                OptimizerFile.saveFor path task phis []
                match OptimizerFile.loadFor path task torch.CPU f32 with
                | Error e -> failtest e
                | Ok loaded ->
                    Expect.equal loaded.Length 2 "two φ"
                    for p, q in List.zip phis loaded do
                        Expect.equal q.Config p.Config "config"
                        for a, b in List.zip (Phi.tensors p) (Phi.tensors q) do
                            Expect.sequenceEqual (toArray b) (toArray a) "values, bit for bit"
                match OptimizerFile.loadGroups path torch.CPU f32 with
                | Ok groups -> Expect.equal (groups |> List.map (fun (n, k, _) -> n, k)) (TaskSpec.groups task) "names and sizes"
                | Error e -> failtest e
                match OptimizerFile.load path torch.CPU f32 with
                | Ok _ -> failtest "a single-φ load accepted two groups"
                | Error e -> Expect.stringContains e "groups conv, fc" "names the groups"
                match OptimizerFile.loadFor path (Mlp { Hidden = [ 20 ]; Activation = Sigmoid; Batch = 128 }) torch.CPU f32 with
                | Ok _ -> failtest "the MLP accepted a conv net's optimizer"
                | Error e -> Expect.stringContains e "do not match the task" "says why"
                // a single φ serves a one-group task of any size, but not the two-group conv net
                let single = tempFile "single.json"
                OptimizerFile.save single (phiOf c 3L f32) []
                match OptimizerFile.loadFor single task torch.CPU f32 with
                | Ok _ -> failtest "one φ accepted for two groups"
                | Error e -> Expect.stringContains e "conv (" "names the expected groups"
                match OptimizerFile.loadFor single (Quadratic 10) torch.CPU f32 with
                | Ok [ _ ] -> ()
                | r -> failtestf "one φ for the quadratic: %A" r
                // a damaged group is named
                let text = File.ReadAllText path
                let node = JsonNode.Parse(text).AsObject()
                let data = node["groups"].[1].["params"].["w_out"].["data"].AsArray()
                data[0] <- JsonValue.Create("x")
                match OptimizerFile.ofJsonGroups (node.ToJsonString()) torch.CPU f32 with
                | Ok _ -> failtest "accepted a non-numeric value"
                | Error e -> Expect.stringContains e "groups[1].params.w_out" "names the group and the field")
        testProperty "save → load gives back φ bit for bit, with its hyper-parameters" <| fun (seed: int) (hidden: FsCheck.PositiveInt) (layers: bool) ->
            scoped (fun () ->
                let cfg = { LstmConfig.paper with Hidden = 1 + hidden.Get % 24; Layers = (if layers then 2 else 1); OutScale = 0.01; Preprocessing = (match abs seed % 3 with 0 -> LogSign 7.5 | 1 -> Identity | _ -> NormalizedMoments([ 0.5; 0.99 ], 0.999)) }
                let phi = phiOf cfg (int64 seed) f32
                let path = tempFile "optimizer.json"
                OptimizerFile.save path phi [ "note", JsonValue.Create("test") ]
                match OptimizerFile.load path torch.CPU f32 with
                | Error e -> failtest e
                | Ok back ->
                    Expect.equal back.Config cfg "config"
                    List.iter2 (fun (a: Tensor) (b: Tensor) ->
                        Expect.equal b.shape a.shape "shape"
                        Expect.sequenceEqual (b.data<float32>().ToArray()) (a.data<float32>().ToArray()) "values") (Phi.tensors phi) (Phi.tensors back)
                    Expect.isFalse (File.Exists(path + ".tmp")) "no temporary file left")

        testCase "a missing file is named" <| fun () ->
            match OptimizerFile.load "/nonexistent/optimizer.json" torch.CPU f32 with
            | Ok _ -> failtest "accepted"
            | Error e -> Expect.stringContains e "/nonexistent/optimizer.json" "path in the error"

        testCase "not JSON" <| fun () -> expectError "{ this is not json" "not valid JSON"
        testCase "wrong format" <| fun () -> expectError """{"format":"something-else","version":1}""" "format"
        testCase "unsupported version" <| fun () ->
            expectError (mutateParams (fun o -> o["version"] <- JsonValue.Create(99))) "version 99"
        testCase "missing parameter" <| fun () ->
            expectError (mutateParams (fun o -> o["params"].AsObject().Remove("w_hh.1") |> ignore)) "params.w_hh.1 is missing"
        testCase "wrong shape" <| fun () ->
            expectError (mutateParams (fun o -> setAt o [ "params"; "w_out"; "shape" ] (JsonArray(JsonValue.Create(2), JsonValue.Create(3))))) "params.w_out has shape"
        testCase "wrong number of values" <| fun () ->
            expectError (mutateParams (fun o -> setAt o [ "params"; "b_out"; "data" ] (JsonArray(JsonValue.Create(0.0), JsonValue.Create(1.0))))) "params.b_out has 2 values"
        testCase "non-numeric value" <| fun () ->
            expectError (mutateParams (fun o -> setAt o [ "params"; "b_out"; "data" ] (JsonArray(JsonValue.Create("x"))))) "non-finite or non-numeric"
        testCase "invalid hyper-parameter" <| fun () ->
            expectError (mutateParams (fun o -> setAt o [ "config"; "hidden" ] (JsonValue.Create(0)))) "hidden must be"

        testCase "loads the reference PyTorch implementation's --save-lstm files" <| fun () ->
            scoped (fun () ->
                let phi = phiOf { LstmConfig.paper with Hidden = 2 } 9L f32
                let ours = JsonNode.Parse(OptimizerFile.toJson phi []).AsObject()
                let peer = JsonObject()
                let cfg = JsonObject()
                cfg["hidden"] <- JsonValue.Create(2)
                cfg["layers"] <- JsonValue.Create(2)
                cfg["out_scale"] <- JsonValue.Create(0.1)
                cfg["preproc"] <- JsonValue.Create("logsign")
                cfg["p"] <- JsonValue.Create(10.0)
                cfg["gate_order"] <- JsonValue.Create("i,f,g,o")
                peer["config"] <- cfg
                peer["params"] <- ours["params"].DeepClone()
                match load (peer.ToJsonString()) with
                | Error e -> failtest e
                | Ok back -> Expect.sequenceEqual (toArray back.Layers.Head.Wih) (toArray phi.Layers.Head.Wih) "weights")
    ]
