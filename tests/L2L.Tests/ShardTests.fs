/// Sharded meta-iterations: the meta-batch split into K problems whose meta-gradients are computed
/// apart and averaged in shard order; computed through the wire format (as on a cluster) or in this
/// process, the run is the same bit for bit.
module L2L.Tests.ShardTests

open System
open System.IO
open Expecto
open L2L
open L2L.Tests.Helpers
open TorchSharp

let cfg = { smallMeta with MetaIterations = 10; ValidateEvery = 5; Shards = 4 }

/// Meta-trains cfg from its start with `compute`, the validation as the worker does it.
let train (cfg: MetaConfig) (compute: ShardCompute) (from: TrainState) =
    let validation = if cfg.ValidateEvery > 0 then Some(MetaTrain.validationProblem cfg TaskData.none) else None
    let mutable s = from
    while not (MetaTrain.finished cfg s) do
        s <- fst (MetaTrain.iterateWith compute cfg TaskData.none validation s)
    validation |> Option.iter (List.iter Problem.dispose)
    s

/// The shards through their bytes: encoded, computed from the bytes alone, decoded (a cluster's path).
let wire (cfg: MetaConfig) : ShardCompute =
    ShardWire.remote cfg (Array.map (ShardWire.compute cfg TaskData.none))

[<Tests>]
let tests =
    testList "shards" [
        testCase "computed through the wire format, a sharded run is the one computed in process, bit for bit" <| fun () ->
            scoped (fun () ->
                let local = train cfg (Shard.local cfg) (MetaTrain.init cfg)
                let remote = train cfg (wire cfg) (MetaTrain.init cfg)
                Expect.sequenceEqual (phiValues remote.Phis) (phiValues local.Phis) "φ"
                Expect.sequenceEqual (phiValues remote.Best) (phiValues local.Best) "best φ"
                Expect.equal remote.BestLoss local.BestLoss "best validation loss"
                Expect.equal remote.Trajectories local.Trajectories "trajectories"
                TrainState.dispose local
                TrainState.dispose remote)

        testCase "shards are distinct problems, and one shard is the unsharded run" <| fun () ->
            scoped (fun () ->
                let one = { cfg with Shards = 1 }
                let p0 = Shard.problem cfg TaskData.none 0 3L
                let p1 = Shard.problem cfg TaskData.none 1 3L
                Expect.equal (p0.Theta0.shape[0]) (int64 (Shard.functions cfg * 4)) "B / K functions of 4 coordinates"
                Expect.notEqual (toArray p0.Theta0) (toArray p1.Theta0) "shard 1's functions are not shard 0's"
                let whole = TaskSpec.trainProblem TaskData.none one.Task one.Seed 3L one.BatchFunctions one.Horizon torch.CPU one.DType
                Expect.sequenceEqual (toArray (Shard.problem one TaskData.none 0 3L).Theta0) (toArray whole.Theta0) "K = 1: the run's own problems"
                let a = train one (Shard.local one) (MetaTrain.init one)
                let b = MetaTrain.run one TaskData.none ignore (fun () -> false) (MetaTrain.init one)
                Expect.sequenceEqual (phiValues a.Phis) (phiValues b.Phis) "K = 1 through the shard path: the unsharded run"
                TrainState.dispose a
                TrainState.dispose b)

        testCase "the mean over shards is taken in shard order" <| fun () ->
            scoped (fun () ->
                let t (x: float32) = torch.tensor([| x |]).reshape([||])
                let r (l: float32) (g: float32) = t l, [ t g ], Unchecked.defaultof<Trajectory>
                let l, g = Shard.reduce [ r 1.0f 1e8f; r 2.0f 1.0f; r 3.0f -1e8f ]
                // (1e8 + 1) − 1e8 in float32 is 0: the order is visible
                Expect.equal (l.ToSingle()) 2.0f "mean L"
                Expect.equal ((List.head g).ToSingle()) 0.0f "((g0 + g1) + g2) / 3 in float32"
                let single, _ = Shard.reduce [ r 0.1f 0.3f ]
                Expect.equal (single.ToSingle()) 0.1f "one shard: its own")

        testCase "a sharded run resumes mid-trajectory from a checkpoint, bit for bit" <| fun () ->
            scoped (fun () ->
                let straight = train cfg (Shard.local cfg) (MetaTrain.init cfg)
                let partial = train { cfg with MetaIterations = 7 } (Shard.local cfg) (MetaTrain.init cfg)
                Expect.isSome partial.Trajectory "mid-trajectory"
                Expect.equal partial.ShardTrajectories.Length 3 "shards 1..3 under way"
                let bytes = Checkpoint.encode cfg partial []
                TrainState.dispose partial
                match Checkpoint.decode cfg TaskData.none bytes with
                | Error e -> failtest (CheckpointError.describe e)
                | Ok(resumed, _) ->
                    Expect.equal resumed.ShardTrajectories.Length 3 "shard trajectories restored"
                    let finished = train cfg (wire cfg) resumed
                    Expect.sequenceEqual (phiValues finished.Phis) (phiValues straight.Phis) "final φ"
                    TrainState.dispose finished
                match Checkpoint.decode { cfg with Shards = 2 } TaskData.none bytes with
                | Ok _ -> failtest "resumed with another shard count"
                | Error e -> Expect.stringContains (CheckpointError.describe e) "shards" "names the shards"
                TrainState.dispose straight)

        testCase "shards must divide the batch; a spec names them under distributed" <| fun () ->
            match MetaConfig.validate { cfg with Shards = 3 } with
            | Ok _ -> failtest "3 shards of 16 functions accepted"
            | Error es -> Expect.exists es (fun e -> e.Contains "shards 3 do not divide") "named"
            match MetaConfig.validate { cfg with Shards = 0 } with
            | Ok _ -> failtest "0 shards accepted"
            | Error es -> Expect.exists es (fun e -> e.Contains "shards must be") "named"
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"distributed":{"shards":4}}""" with
            | Ok s -> Expect.equal s.Meta.Shards 4 "distributed.shards"
            | Error es -> failtest (String.concat "; " es)
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"distributed":{"shard":4}}""" with
            | Ok _ -> failtest "unknown field accepted"
            | Error es -> Expect.contains es "unknown field 'distributed.shard'" "named"
            match JobSpec.parse """{"id":"a","task":{"name":"quadratic"},"metaIterations":3,"distributed":4}""" with
            | Ok _ -> failtest "a number accepted"
            | Error es -> Expect.exists es (fun e -> e.StartsWith "distributed must be") "named"

        testCase "damaged work or result bytes are refused, naming what is wrong" <| fun () ->
            scoped (fun () ->
                let s = MetaTrain.init cfg
                let tr = MetaLoss.start (TaskSpec.learned cfg.Backend cfg.Task s.Phis) (Shard.problem cfg TaskData.none 1 0L) 0L
                let work = ShardWire.encodeWork 1 s.Phis tr
                let refused (bytes: byte[]) =
                    Expect.throwsT<InvalidDataException> (fun () -> ShardWire.compute cfg TaskData.none bytes |> ignore) "refused"
                refused (Array.append [| 1uy |] work[1..])
                let other = Array.copy work
                other[8] <- 9uy // shard 9 of 4
                refused other
                Expect.throws (fun () -> ShardWire.compute cfg TaskData.none work[.. work.Length - 5] |> ignore) "truncated"
                let result = ShardWire.compute cfg TaskData.none work
                Expect.throwsT<InvalidDataException> (fun () -> ShardWire.decodeResult cfg s.Phis tr work |> ignore) "work is not a result"
                let l, g, c = ShardWire.decodeResult cfg s.Phis tr result
                Expect.equal g.Length (Phis.tensors s.Phis).Length "a gradient per tensor of φ"
                Expect.equal c.Step cfg.Unroll.Unroll "carried one truncation"
                Expect.isTrue (Double.IsFinite(l.ToDouble())) "L"
                TrainState.dispose s)
    ]
