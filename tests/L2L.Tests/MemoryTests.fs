/// Buffer reuse and thread scoping in the loops: the spare-buffer pool of evaluation loops, the
/// closed-form meta-gradient's workspace, and libtorch's thread count inside the steps.
module L2L.Tests.MemoryTests

open System
open Expecto
open TorchSharp
open L2L
open L2L.Tests.Helpers

let private live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount

[<Tests>]
let tests =
    testList "buffer reuse and thread scoping" [
        testCase "in an open pool a buffer handed back serves the next request of its shape, in the current dispose scope" <| fun () ->
            Spare.within (fun () ->
                let a = Spare.empty [| 3L; 5L |] f32 torch.CPU
                a.FillInPlace(7.0) |> ignore
                Spare.give a
                Expect.isFalse a.IsInvalid "a buffer handed back is kept, not disposed"
                let other = Spare.empty [| 5L; 3L |] f32 torch.CPU
                Expect.isFalse (Object.ReferenceEquals(other, a)) "another shape gets another buffer"
                use scope = torch.NewDisposeScope()
                let b = Spare.empty [| 3L; 5L |] f32 torch.CPU
                Expect.isTrue (Object.ReferenceEquals(b, a)) "the same buffer again"
                Expect.equal (toArray b) (Array.create 15 7.0) "with its storage as it was left"
                Expect.isTrue (scope.Contains b) "registered on the current scope as a fresh tensor would be"
                other.Dispose())

        testCase "outside a pool empty allocates and give disposes; tensors the pool did not make are disposed" <| fun () ->
            let a = Spare.empty [| 4L |] f32 torch.CPU
            Spare.give a
            Expect.isTrue a.IsInvalid "no pool open: disposed"
            Spare.within (fun () ->
                let foreign = torch.zeros([| 4L |])
                Spare.give foreign
                Expect.isTrue foreign.IsInvalid "not the pool's: disposed"
                let mine = Spare.empty [| 4L |] f32 torch.CPU
                Spare.give mine
                let again = Spare.empty [| 4L |] f32 torch.CPU
                Expect.isTrue (Object.ReferenceEquals(again, mine)) "the pool's own buffer comes back"
                again.Dispose())

        testCase "closing the pool disposes what it holds: no tensor outlives it" <| fun () ->
            let before = live ()
            Spare.within (fun () ->
                let ts = [ for _ in 1..4 -> Spare.empty [| 16L; 8L |] f32 torch.CPU ]
                List.iter Spare.give ts
                Expect.equal (live ()) (before + 4L) "the four are held by the pool")
            Expect.equal (live ()) before "all released when the pool closes"

        testCase "an evaluation loop reuses m_φ's state buffers: no tensor left behind, the same losses as without a pool" <| fun () ->
            scoped (fun () ->
                let phi = phiOf LstmConfig.paper 8L f32
                let problems () = TaskSpec.heldOut TaskData.none (Quadratic 10) EvalSplit 5UL 4 30 torch.CPU f32
                let ps = problems ()
                let before = live ()
                let r = Evaluate.run backend (Learned.optimizer backend phi) ps 30
                Expect.equal (live ()) before "live tensors after the run"
                // the same steps by hand, every state freshly allocated
                let p = ps.Head
                let opt = Learned.optimizer backend phi
                let byHand =
                    Backend.inSteps backend (fun () ->
                        let mutable theta = p.Theta0.detach().clone()
                        let mutable state = opt.Init 1 theta
                        use _ = torch.no_grad()
                        for t in 0 .. 29 do
                            let _, grad = p.LossGrad.Value t theta
                            let struct (g, s) = opt.Update state grad
                            theta <- Update.apply theta g
                            state <- s
                        toArray (fst (p.LossGrad.Value 30 theta)))
                let evaluated = r.Losses[30][0 .. byHand.Length - 1]
                Expect.equal evaluated byHand "losses at step 30, bit for bit"
                List.iter Problem.dispose ps)

        testCase "the closed form's workspace serves every truncation of a shape and is freed on release" <| fun () ->
            scoped (fun () ->
                FirstOrder.releaseWorkspace ()
                let phi = phiOf LstmConfig.paper 5L f32
                let cfg = { Unroll = 4; Weights = Uniform; SecondOrder = false; LogLoss = true }
                let problem = TaskSpec.trainProblem TaskData.none (Quadratic 10) 3L 0L 8 40 torch.CPU f32
                let tr = MetaLoss.start (Learned.optimizer backend phi) problem 0L
                let truncation (tr: Trajectory) =
                    Scope.run Trajectory.tensors (fun () ->
                        let _, _, carried = FirstOrder.metaGradient (Backend.kernelThreads backend) cfg phi tr
                        carried)
                let c1 = truncation tr
                let afterFirst = live ()
                let c2 = truncation c1
                Scope.disposeReplaced (Trajectory.tensors c1) (Trajectory.tensors c2)
                Expect.equal (live ()) afterFirst "a second truncation allocates no new buffers that stay"
                FirstOrder.releaseWorkspace ()
                Expect.isLessThan (live ()) afterFirst "release frees the workspace")

        testCaseSequenced "libtorch runs on the steps' thread count inside inSteps, and its count is restored" <| fun () ->
            let savedTorch = torch.get_num_threads ()
            try
                torch.set_num_threads 2
                let b = { backend with StepTorchThreads = 1 }
                let inside = Backend.inSteps b (fun () -> torch.get_num_threads (), Backend.inSteps b (fun () -> torch.get_num_threads ()))
                Expect.equal inside (1, 1) "libtorch on 1 thread, nested calls too"
                Expect.equal (torch.get_num_threads ()) 2 "restored"
                Expect.equal (Backend.kernelThreads { b with KernelThreads = 3 }) 3 "the kernel's count is the backend's"
                Expect.equal (Backend.kernelThreads { b with KernelThreads = 0 }) 2 "0: libtorch's count"
                Expect.throws (fun () -> Backend.inSteps b (fun () -> failwith "boom") |> ignore) "the exception goes through"
                Expect.equal (torch.get_num_threads ()) 2 "restored after an exception"
                Expect.equal (Backend.inSteps { b with StepTorchThreads = 0 } (fun () -> torch.get_num_threads ())) 2 "0: the process's count"
            finally
                torch.set_num_threads savedTorch
    ]
