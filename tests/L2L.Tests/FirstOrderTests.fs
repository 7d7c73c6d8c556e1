/// The closed-form first-order meta-gradient (MetaLoss.fs, `FirstOrder`) against autograd through
/// `MetaLoss.unroll`: the same L(φ), dL/dφ, θ, ∇ and LSTM state carried on, to float32 rounding.
module L2L.Tests.FirstOrderTests

open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers
open L2L.Tests.KernelTests

/// Both meta-gradients of one truncation from the same trajectory, then a second truncation from
/// each one's carried trajectory (so what is carried on is checked by what it leads to).
let compare (label: string) (cfg: UnrollConfig) (phi: Phi) (problem: unit -> Problem) =
    let run (closed: bool) =
        let p = problem ()
        let tr = MetaLoss.start (Learned.optimizer backend phi) p 0L
        Expect.isTrue (FirstOrder.applies cfg [ phi ] tr) (label + ": the closed form applies")
        let once (tr: Trajectory) =
            if closed then FirstOrder.metaGradient (Backend.kernelThreads backend) cfg phi tr
            else
                let loss, carried = MetaLoss.unroll cfg (Learned.optimizer backend phi) tr
                loss, torch.autograd.grad([| loss |], List.toArray (Phi.tensors phi)) |> List.ofSeq, carried
        let l1, g1, c1 = once tr
        let l2, g2, c2 = once c1
        [ l1.ToDouble(); l2.ToDouble() ], g1 @ g2, c2
    let la, ga, ca = run false
    let lb, gb, cb = run true
    List.iter2 (fun a b -> Expect.floatClose { absolute = 1e-6; relative = 1e-5 } b a (label + ": L(φ)")) la lb
    List.iteri2 (fun i (a: Tensor) (b: Tensor) -> Expect.isLessThan (relDiff a b) 1e-3 (sprintf "%s: dL/dφ tensor %d" label i)) ga gb
    Expect.isLessThan (relDiff ca.Theta cb.Theta) 1e-5 (label + ": θ carried")
    Expect.isLessThan (relDiff ca.Grad cb.Grad) 1e-4 (label + ": ∇ carried")
    List.iter2 (fun (a: Tensor) (b: Tensor) -> Expect.isLessThan (relDiff a b) 1e-5 (label + ": LSTM state carried")) (OptState.tensors ca.Opt) (OptState.tensors cb.Opt)
    Expect.equal cb.Opt.Step ca.Opt.Step (label + ": optimizer steps")
    Expect.equal cb.Step ca.Step (label + ": trajectory step")
    Expect.floatClose { absolute = 1e-7; relative = 1e-5 } cb.Loss ca.Loss (label + ": f carried")
    Expect.isTrue cb.Theta.requires_grad (label + ": θ carried as a leaf that requires grad")

[<Tests>]
let tests =
    testList "first-order meta-gradient in closed form" [
        testCase "equals autograd's on quadratics: Σ f, Σ log f, last-step weights, one-step truncations, one and three layers" <| fun () ->
            scoped (fun () ->
                for label, cfg, lstm in
                    [ "Σ f", { Unroll = 6; Weights = Uniform; SecondOrder = false; LogLoss = false }, LstmConfig.paper
                      "Σ log f", { Unroll = 6; Weights = Uniform; SecondOrder = false; LogLoss = true }, LstmConfig.paper
                      "last step", { Unroll = 5; Weights = LastOnly; SecondOrder = false; LogLoss = false }, LstmConfig.paper
                      "one-step truncations", { Unroll = 1; Weights = Uniform; SecondOrder = false; LogLoss = true }, LstmConfig.paper
                      "3 layers, identity input", { Unroll = 4; Weights = Uniform; SecondOrder = false; LogLoss = true },
                      { LstmConfig.paper with Layers = 3; Hidden = 7; Preprocessing = Identity } ] do
                    let phi = phiOf lstm 5L f32
                    compare label cfg phi (fun () -> TaskSpec.trainProblem TaskData.none (Quadratic 10) 3L 0L 16 40 torch.CPU f32))

        testCase "equals autograd's on an MLP (synthetic images, hand-derived ∇), Σ log f" <| fun () ->
            scoped (fun () ->
                let data = MnistTests.fakeData ()
                let spec = { Hidden = [ 6 ]; Activation = Sigmoid; Batch = 8 }
                let phi = phiOf { LstmConfig.paper with OutScale = 0.1 } 6L f32
                let cfg = { Unroll = 5; Weights = Uniform; SecondOrder = false; LogLoss = true }
                compare "MLP" cfg phi (fun () ->
                    use gen = Seeds.generator 9L 1UL 0L
                    let theta0 = torch.randn([| int64 (Mlp.count spec) |], generator = gen).Mul(0.1)
                    let idx = torch.randint(50000L, [| 11L; 8L |], generator = gen)
                    Mlp.problem spec data TrainSplit theta0 idx))

        testCase "does not apply with second derivatives, several φ, or no hand-derived ∇" <| fun () ->
            scoped (fun () ->
                let phi = phiOf LstmConfig.paper 5L f32
                let tr = MetaLoss.start (Learned.optimizer backend phi) (TaskSpec.trainProblem TaskData.none (Quadratic 10) 3L 0L 4 20 torch.CPU f32) 0L
                let first = { Unroll = 5; Weights = Uniform; SecondOrder = false; LogLoss = false }
                Expect.isTrue (FirstOrder.applies first [ phi ] tr) "first order, one φ"
                Expect.isFalse (FirstOrder.applies { first with SecondOrder = true } [ phi ] tr) "second order"
                Expect.isFalse (FirstOrder.applies first [ phi; phi ] tr) "two φ"
                Expect.isFalse (FirstOrder.applies first [ phi ] { tr with Problem = { tr.Problem with LossGrad = None } }) "no hand-derived ∇")
    ]
