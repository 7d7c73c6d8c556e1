/// Checkpoints: exact resume, and every kind of damage detected.
module L2L.Tests.CheckpointTests

open System
open Expecto
open L2L
open L2L.Tests.Helpers

let cfg = { smallMeta with MetaIterations = 12; ValidateEvery = 4 }

let metrics = [ { Iteration = 1; MetaLoss = 2.5; TrainLoss = 0.5; Validation = nan } ]

let expectError (bytes: byte[]) (expected: CheckpointError) =
    match Checkpoint.decode cfg TaskData.none bytes with
    | Ok _ -> failtest "accepted"
    | Error e -> Expect.equal e expected (CheckpointError.describe e)

[<Tests>]
let tests =
    testList "checkpoint" [
        testCase "a conv net's two φ and their Adam states survive a checkpoint" <| fun () ->
            let ccfg = { Defaults.meta (Conv TaskSpec.convDefault) with Lstm = { LstmConfig.paper with Hidden = 4 } }
            let s = MetaTrain.init ccfg
            Expect.equal s.Phis.Length 2 "one φ per group"
            Expect.notEqual (phiValues [ s.Phis[0] ]) (phiValues [ s.Phis[1] ]) "drawn independently"
            let bytes = Checkpoint.encode ccfg s metrics
            match Checkpoint.decode ccfg TaskData.none bytes with
            | Error e -> failtest (CheckpointError.describe e)
            | Ok(r, _) ->
                Expect.sequenceEqual (phiValues r.Phis) (phiValues s.Phis) "φ"
                Expect.sequenceEqual (phiValues r.Best) (phiValues s.Best) "best φ"
                Expect.equal r.MetaOpt.Length s.MetaOpt.Length "an Adam state per tensor of both φ"
                TrainState.dispose r
            TrainState.dispose s
        testCase "resuming mid-trajectory from a checkpoint ends with the same φ, bit for bit" <| fun () ->
            let straight = MetaTrain.run cfg TaskData.none ignore (fun () -> false) (MetaTrain.init cfg)
            // 7 iterations: mid-trajectory (4 per trajectory), after a validation
            let partial = MetaTrain.run { cfg with MetaIterations = 7 } TaskData.none ignore (fun () -> false) (MetaTrain.init cfg)
            Expect.isSome partial.Trajectory "checkpoint taken mid-trajectory"
            let bytes = Checkpoint.encode cfg partial metrics
            TrainState.dispose partial
            match Checkpoint.decode cfg TaskData.none bytes with
            | Error e -> failtest (CheckpointError.describe e)
            | Ok(resumed, ms) ->
                Expect.equal ms.Length 1 "metrics restored"
                Expect.equal ms[0].MetaLoss 2.5 "metric value"
                Expect.isTrue (Double.IsNaN ms[0].Validation) "missing validation stays missing"
                Expect.equal resumed.Iteration 7 "iteration"
                let finished = MetaTrain.run cfg TaskData.none ignore (fun () -> false) resumed
                Expect.sequenceEqual (phiValues finished.Phis) (phiValues straight.Phis) "final φ"
                Expect.sequenceEqual (phiValues finished.Best) (phiValues straight.Best) "best φ"
                Expect.equal finished.BestLoss straight.BestLoss "best loss"
                TrainState.dispose finished
            TrainState.dispose straight

        testCase "bad magic" <| fun () ->
            let s = MetaTrain.init cfg
            let bytes = Checkpoint.encode cfg s []
            bytes[0] <- byte 'X'
            expectError bytes BadMagic

        testCase "truncated" <| fun () ->
            let bytes = Checkpoint.encode cfg (MetaTrain.init cfg) []
            expectError bytes[0 .. bytes.Length - 100] Truncated
            expectError bytes[0..10] Truncated

        testCase "a flipped byte anywhere is a checksum mismatch" <| fun () ->
            let bytes = Checkpoint.encode cfg (MetaTrain.init cfg) []
            for i in [ 30; bytes.Length / 2; bytes.Length - 1 ] do
                let b = Array.copy bytes
                b[i] <- b[i] ^^^ 1uy
                expectError b ChecksumMismatch

        testCase "another format version" <| fun () ->
            let bytes = Checkpoint.encode cfg (MetaTrain.init cfg) []
            bytes[8] <- 9uy
            expectError bytes (UnsupportedVersion 9)

        testCase "a checkpoint of other settings is refused, naming what differs" <| fun () ->
            let bytes = Checkpoint.encode cfg (MetaTrain.init cfg) []
            for other, what in [ { cfg with Seed = 99L }, "seed"
                                 { cfg with Task = Quadratic 5 }, "task"
                                 { cfg with Lstm = { cfg.Lstm with OutScale = 0.2 } }, "optimizer"
                                 { cfg with Unroll = { cfg.Unroll with LogLoss = true } }, "unroll" ] do
                match Checkpoint.decode other TaskData.none bytes with
                | Error(Malformed m) ->
                    Expect.stringContains m "other settings" "says why"
                    Expect.stringContains m what "names the setting"
                | other -> failtestf "expected Malformed, got %A" (Result.map ignore other)

        testCase "settings that do not shape the state (budget, meta-lr, backend) resume the same checkpoint" <| fun () ->
            let bytes = Checkpoint.encode cfg (MetaTrain.init cfg) []
            let other = { cfg with MetaIterations = 99; MetaLr = 0.5; Backend = Backend.reference }
            match Checkpoint.decode other TaskData.none bytes with
            | Ok(s, _) -> TrainState.dispose s
            | Error e -> failtest (CheckpointError.describe e)

        testCase "the checkpoint names what it holds: φ by tensor, Adam's moments, the trajectory's LSTM state by layer" <| fun () ->
            let partial = MetaTrain.run { cfg with MetaIterations = 3 } TaskData.none ignore (fun () -> false) (MetaTrain.init cfg)
            let bytes = Checkpoint.encode cfg partial []
            let header = Text.Encoding.UTF8.GetString bytes
            for name in [ "phi.0.w_ih.0"; "phi.0.b_out"; "best.0.w_hh.1"; "adam.phi.0.w_ih.0.m"; "adam.phi.0.b_out.v"
                          "traj.theta"; "traj.grad"; "traj.opt.lstm.h.0"; "traj.opt.lstm.c.1" ] do
                Expect.stringContains header (sprintf "\"name\":\"%s\"" name) name
            Expect.stringContains header "\"settings\":{\"task\":{\"name\":\"quadratic\",\"dim\":4}" "the settings, field by field"
            TrainState.dispose partial

    ]
