namespace L2L

    /// One meta-iteration's numbers, as kept in a checkpoint.
    type Metric =
        {
          Iteration: int
          MetaLoss: float
          TrainLoss: float

          /// NaN when the iteration was not validated.
          Validation: float
        }

    type CheckpointError =
        | BadMagic
        | UnsupportedVersion of int
        | Truncated
        | ChecksumMismatch
        | Malformed of string

    module CheckpointError =

        val describe: _arg1: CheckpointError -> string

    /// What must be equal between a checkpoint and the configuration resuming it: everything that
    /// decides the state's shapes and the sequence of meta-training problems.
    type CheckpointSettings =
        {
          Task: TaskSpec
          Lstm: LstmConfig
          Horizon: int
          Unroll: UnrollConfig
          BatchFunctions: int
          Shards: int
          RandomScaling: float
          Curriculum: Curriculum
          Imitation: ImitationConfig
          Seed: int64
          DType: string
        }

    module CheckpointSettings =

        val ofConfig: cfg: MetaConfig -> CheckpointSettings

        val write:
          w: System.Text.Json.Utf8JsonWriter -> s: CheckpointSettings -> unit

        /// Reads what `write` wrote (KeyNotFoundException / InvalidOperationException when a field is
        /// missing or of the wrong kind: the caller reports the checkpoint as malformed).
        val read: e: System.Text.Json.JsonElement -> CheckpointSettings

        /// The fields in which two settings differ, by name.
        val differences:
          a: CheckpointSettings -> b: CheckpointSettings -> string list

    module Checkpoint =

        [<Literal>]
        val Version: int = 2

        val encode:
          cfg: MetaConfig -> s: TrainState -> metrics: Metric seq -> byte array

        val verify: bytes: byte array -> Result<unit,CheckpointError>

        /// The state in checkpoint bytes, for `cfg` (whose settings must equal those the checkpoint
        /// records) and the task's data (the trajectory's problem is rebuilt from its counter).
        val decode:
          cfg: MetaConfig ->
            data: TaskData ->
            bytes: byte array ->
            Result<(TrainState * Metric array),CheckpointError>

