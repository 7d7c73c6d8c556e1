/// L(φ) and its meta-gradient: finite differences in float64, and the paper's ∂∇_t/∂φ = 0.
module L2L.Tests.MetaLossTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let lstm = { LstmConfig.paper with Hidden = 3 }

let problem () = TaskSpec.trainProblem TaskData.none (Quadratic 2) 11L 0L 2 10 torch.CPU f64

/// L(φ) for one truncation of 3 steps from θ_0, with `wrap` applied to m_φ as an optimizer.
let metaLoss (secondOrder: bool) (wrap: Optimizer -> Optimizer) (phi: Phi) =
    let cfg = { Unroll = 3; Weights = Uniform; SecondOrder = secondOrder; LogLoss = false }
    let opt = wrap (Learned.optimizer backend phi)
    let tr = MetaLoss.start opt (problem ()) 0L
    fst (MetaLoss.unroll cfg opt tr)

let autogradOf secondOrder wrap (phi: Phi) =
    let l = metaLoss secondOrder wrap phi
    torch.autograd.grad([| l |], List.toArray (Phi.tensors phi)) |> Seq.map toArray |> Array.concat

/// Central differences of L at a sample of φ's coordinates.
let finiteDifferences (loss: Phi -> float) (phi: Phi) (coords: int list) =
    let flat = Phi.tensors phi |> List.map toArray |> Array.concat
    let shapes = Phi.tensors phi |> List.map (fun t -> t.shape)
    let rebuild (values: float[]) =
        let mutable offset = 0
        [ for shape in shapes ->
              let n = shape |> Array.fold (fun a d -> a * int d) 1
              let t = (tensorOf values[offset .. offset + n - 1] f64).reshape(shape).requires_grad_(true)
              offset <- offset + n
              t ]
        |> Phi.ofTensors phi.Config
    let eps = 1e-6
    [ for i in coords ->
          let plus = Array.copy flat
          let minus = Array.copy flat
          plus[i] <- plus[i] + eps
          minus[i] <- minus[i] - eps
          i, (loss (rebuild plus) - loss (rebuild minus)) / (2.0 * eps) ]

let sampleCoords (phi: Phi) =
    let n = Phi.count phi
    let rng = Random(5)
    [ yield! [ 0; n - 1; n - 2 ]
      for _ in 1..12 -> rng.Next n ]

/// Records the gradients m_φ is fed.
let recording (seen: ResizeArray<Tensor>) (opt: Optimizer) =
    { opt with Update = fun s g -> seen.Add g; opt.Update s g }

/// Feeds m_φ recorded gradients instead of the live ones (∇ held constant).
let replaying (recorded: Tensor[]) (opt: Optimizer) =
    { opt with Update = fun s _ -> opt.Update s recorded[s.Step] }

let expectClose (analytic: float[]) (numeric: (int * float) list) =
    for i, fd in numeric do
        let a = analytic[i]
        Expect.isLessThan (abs (a - fd)) (1e-6 + 1e-5 * abs fd) (sprintf "dL/dφ[%d]: autograd %.10g vs finite differences %.10g" i a fd)

[<Tests>]
let tests =
    testList "meta-loss" [
        testCase "with second derivatives kept, dL/dφ equals central finite differences (float64)" <| fun () ->
            scoped (fun () ->
                let phi = phiOf lstm 4L f64
                let analytic = autogradOf true id phi
                let numeric = finiteDifferences (fun p -> (metaLoss true id p).ToDouble()) phi (sampleCoords phi)
                expectClose analytic numeric)

        testCase "with them dropped, dL/dφ equals finite differences of L with ∇_t held constant (float64)" <| fun () ->
            scoped (fun () ->
                let phi = phiOf lstm 4L f64
                let seen = ResizeArray()
                let analytic = autogradOf false (recording seen) phi
                let recorded = seen |> Seq.map (fun g -> g.detach().clone()) |> Array.ofSeq
                Expect.equal recorded.Length 3 "one gradient per step"
                let numeric = finiteDifferences (fun p -> (metaLoss false (replaying recorded) p).ToDouble()) phi (sampleCoords phi)
                expectClose analytic numeric)

        testCase "dropped: no gradient flows into ∇_t; kept: it does, and the meta-gradients differ" <| fun () ->
            scoped (fun () ->
                let phi = phiOf lstm 4L f64
                let first = ResizeArray()
                let second = ResizeArray()
                let g1 = autogradOf false (recording first) phi
                let g2 = autogradOf true (recording second) phi
                Expect.isFalse first[0].requires_grad "∇_0 is a constant"
                for t in 1..2 do
                    Expect.isFalse first[t].requires_grad (sprintf "dropped: ∇_%d carries no graph" t)
                    Expect.isTrue second[t].requires_grad (sprintf "kept: ∇_%d depends on φ" t)
                Expect.isGreaterThan (maxAbsDiff g1 g2) 1e-8 "the second-order terms change dL/dφ")

        testCase "w_t: LastOnly counts only the truncation's last step" <| fun () ->
            scoped (fun () ->
                let phi = phiOf lstm 4L f64
                let p = problem ()
                let opt = Learned.optimizer backend phi
                let run w = MetaLoss.unroll { Unroll = 3; Weights = w; SecondOrder = false; LogLoss = false } opt (MetaLoss.start opt p 0L)
                let lUniform, trU = run Uniform
                let lLast, trL = run LastOnly
                Expect.floatClose Accuracy.veryHigh (lLast.ToDouble()) trL.Loss "L = f(θ_3) per function"
                Expect.isGreaterThan (lUniform.ToDouble()) (lLast.ToDouble()) "Σ_t f(θ_t) > f(θ_3)"
                Expect.sequenceEqual (toArray trU.Theta) (toArray trL.Theta) "weights do not change the trajectory")

        testCase "log meta-loss: Σ log f(θ_t), the same trajectory" <| fun () ->
            scoped (fun () ->
                let phi = phiOf lstm 4L f64
                let opt = Learned.optimizer backend phi
                let p = problem ()
                let run logLoss unroll = MetaLoss.unroll { Unroll = unroll; Weights = Uniform; SecondOrder = false; LogLoss = logLoss } opt (MetaLoss.start opt p 0L)
                let plain, tr = run false 1
                let logged, trLog = run true 1
                Expect.floatClose Accuracy.veryHigh (logged.ToDouble()) (log (plain.ToDouble())) "one step: log of f"
                Expect.sequenceEqual (toArray trLog.Theta) (toArray tr.Theta) "same θ"
                let l3, tr3 = run true 3
                Expect.isTrue (Double.IsFinite(l3.ToDouble()) && l3.ToDouble() < 3.0 * log (tr3.Loss + 10.0)) "three steps: a finite sum of logs")

        testCase "a truncation carries θ, ∇ and h across, cut from φ's graph" <| fun () ->
            scoped (fun () ->
                let phi = phiOf lstm 4L f64
                let opt = Learned.optimizer backend phi
                let cfg = { Unroll = 3; Weights = Uniform; SecondOrder = false; LogLoss = false }
                let tr0 = MetaLoss.start opt (problem ()) 0L
                let _, tr1 = MetaLoss.unroll cfg opt tr0
                let _, tr2 = MetaLoss.unroll cfg opt tr1
                Expect.equal tr2.Step 6 "steps advance by the unroll"
                Expect.isTrue tr1.Theta.is_leaf "θ is a fresh leaf"
                Expect.isFalse tr1.Grad.requires_grad "∇ has no graph"
                for s in tr1.Opt |> OptState.tensors do
                    Expect.isFalse s.requires_grad "h and c are cut"
                // one 6-step run equals two 3-step truncations
                let whole = MetaLoss.unroll { cfg with Unroll = 6 } opt tr0 |> snd
                Expect.isLessThan (maxAbsDiff (toArray whole.Theta) (toArray tr2.Theta)) 1e-12 "truncation does not change the trajectory")
    ]
