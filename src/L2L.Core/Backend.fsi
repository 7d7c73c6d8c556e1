namespace L2L

    /// How m_φ's cells are computed; both are the same function of (φ, state, input).
    type LstmImpl =

        /// TorchSharp tensor operations: any device and dtype, differentiable to any order.
        | Reference

        /// The fused kernel (L2L.Kernels): float32 tensors on the CPU, once differentiable; other
        /// tensors take the Reference path.
        | Fused

    /// How the meta-gradient of a truncation is computed.
    type MetaGradientPath =

        /// In closed form without autograd where it applies (first order, one φ, fused cells, a
        /// problem with a hand-derived ∇); through autograd elsewhere.
        | ClosedForm

        /// Always through autograd's graph of the unrolled truncation.
        | Autograd

    type Backend =
        {
          /// m_φ's cells: the fused kernel where the tensors allow, or the reference operations.
          Cell: LstmImpl

          /// The meta-gradient's path: closed form where it applies, or autograd.
          MetaGradient: MetaGradientPath

          /// Threads the fused kernels spread coordinates over (0: libtorch's intra-op count, read
          /// when an optimizer or a meta-training step takes the backend: `resolve`).
          KernelThreads: int

          /// libtorch's thread count inside the steps of learned-optimizer work (the optimizee's
          /// minibatch loss and gradient, the θ update, the meta-gradient's small products); 0: the
          /// process's count. Its tensors are small, and on few cores waking libtorch's thread pool for
          /// each of a dozen operations per step costs more than it saves: measured on MNIST (2 cores),
          /// the optimizee's loss and gradient took 0.28 ms with 1 thread against 0.44–0.64 ms with 2.
          /// Whole-data-set losses and baseline tuning keep the process's count.
          StepTorchThreads: int
        }

    module Backend =

        /// Fused cells, closed-form meta-gradients, the kernel on libtorch's thread count, libtorch on
        /// one thread inside the steps.
        val defaults: Backend

        /// The reference cells and autograd meta-gradients: any device and dtype, the slow path.
        val reference: Backend

        /// The threads the fused kernels run on.
        val kernelThreads: b: Backend -> int

        /// The backend with its kernel thread count fixed now (0 becomes libtorch's intra-op count):
        /// what takes a backend resolves it before entering `inSteps`, where libtorch's count is lowered.
        val resolve: b: Backend -> Backend

        /// Runs f with libtorch on `StepTorchThreads` threads, then restores the process's count (also
        /// after an exception). Nested calls leave the count as the outer one set it. libtorch's count
        /// is process-wide: callers on several threads at once can change each other's speed, never
        /// their results.
        val inSteps: b: Backend -> f: (unit -> 'a) -> 'a

        /// Every problem with the thread counts, named.
        val validate: b: Backend -> Result<Backend,string list>

