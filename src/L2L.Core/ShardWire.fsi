namespace L2L

    /// A shard's part of a meta-iteration as bytes, for computing it in another process: the work (φ
    /// and the shard's trajectory) and the result (L, dL/dφ and the trajectory carried on). The
    /// problem is not sent: the computing side rebuilds it from the shard and the trajectory's
    /// counter (Shard.problem), as a checkpoint's is. Every tensor travels as its raw values, so a
    /// shard computed elsewhere gives, bit for bit, what it gives in this process on the same kind
    /// of machine with the same thread counts.
    module ShardWire =

        /// Shard k's work: φ and its trajectory.
        val encodeWork: k: int -> phis: Phi list -> tr: Trajectory -> byte array

        /// Computes a shard from its work bytes (in a dispose scope of its own) and gives the result
        /// bytes. `cfg` and `data` are the job's, as the coordinator has them.
        val compute: cfg: MetaConfig -> data: TaskData -> work: byte array -> byte array

        /// A result's L, dL/dφ (shaped like φ's tensors) and the trajectory carried on from `tr` (the
        /// trajectory whose work it answers), in the caller's dispose scope.
        val decodeResult:
          cfg: MetaConfig ->
            phis: Phi list ->
            tr: Trajectory -> result: byte array -> Tensor * Tensor list * Trajectory

        /// The shards computed by `run`, which is given each shard's work bytes (in shard order) and
        /// must give each one's result bytes (`compute`'s) in the same order: wherever it runs them.
        val remote: cfg: MetaConfig -> run: (byte array array -> byte array array) -> ShardCompute
