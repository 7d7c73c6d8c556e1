/// Input preprocessing (paper, appendix A).
module L2L.Tests.PreprocessTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let p = 10.0

let features (xs: float[]) =
    scoped (fun () ->
        let x = Preprocess.apply (LogSign p) (tensorOf xs f64)
        x.shape, toArray x[0L], toArray x[1L])

[<Tests>]
let tests =
    testList "preprocess" [
        testPropertyWithConfig propConfig "logsign: shape [2; n], bounded, sign-preserving" <| fun (Grads xs) ->
            let shape, x1, x2 = features xs
            Expect.equal shape [| 2L; int64 xs.Length |] "shape"
            // |∇| ≤ 1e10 here, so log|∇|/p ≤ log(1e10)/10 ≈ 2.3
            for i in 0 .. xs.Length - 1 do
                Expect.isTrue (x1[i] >= -1.0 && x1[i] <= log 1e10 / p + 1e-9) (sprintf "first feature bounded at %g: %g" xs[i] x1[i])
                Expect.isTrue (abs x2[i] <= 1.0 + 1e-12) (sprintf "second feature in [-1, 1] at %g: %g" xs[i] x2[i])
                Expect.equal (sign x2[i]) (sign xs[i]) (sprintf "sign preserved at %g" xs[i])

        testCase "logsign values on both branches" <| fun () ->
            let _, x1, x2 = features [| 1.0; -1.0; 1e-3; -0.5 * exp -p; 0.0; 5.0 |]
            let e1 = [| 0.0; 0.0; log 1e-3 / p; -1.0; -1.0; log 5.0 / p |]
            let e2 = [| 1.0; -1.0; 1.0; -0.5; 0.0; 1.0 |]
            Expect.isLessThan (maxAbsDiff x1 e1) 1e-12 "log part"
            Expect.isLessThan (maxAbsDiff x2 e2) 1e-12 "sign part"

        testProperty "logsign is continuous at |∇| = e^-p" <| fun (neg: bool) ->
            let s = if neg then -1.0 else 1.0
            let t = exp -p
            let _, x1, x2 = features [| s * t * (1.0 - 1e-9); s * t; s * t * (1.0 + 1e-9) |]
            Expect.isLessThan (abs (x1[0] - x1[2])) 1e-6 "first feature"
            Expect.isLessThan (abs (x2[0] - x2[2])) 1e-6 "second feature"
            Expect.isLessThan (abs (x1[1] - -1.0)) 1e-9 "log|∇|/p = −1 at the threshold"

        testCase "identity preprocessing passes ∇ through as one feature" <| fun () ->
            scoped (fun () ->
                let x = Preprocess.apply Identity (tensorOf [| 3.0; -2.0 |] f64)
                Expect.equal x.shape [| 1L; 2L |] "shape"
                Expect.sequenceEqual (toArray x) [| 3.0; -2.0 |] "values")
    ]
