namespace L2L

    module Defaults =

        /// The paper's MNIST network: 784-20-10, sigmoid, minibatches of 128.
        val mnistTask: TaskSpec

        /// The small conv net of `mnist-conv`: 3×3 convs with 4 and 8 channels, batch normalisation,
        /// max-pooling, 32 dense units.
        val convTask: TaskSpec

        /// The paper's setting for the quadratics, with the default budget of `tools/l2l train`.
        val quadratic: MetaConfig

        /// The meta-training defaults of task t (`tools/l2l train --task ...`, job specs); for MNIST (one
        /// network per trajectory) the settings of the committed optimizers under paper/.
        val meta: task: TaskSpec -> MetaConfig

        /// The evaluation defaults of task t: 200 steps on fresh portable problems (seed 1000; 1000
        /// quadratics, 10 MNIST networks), baselines tuned on held-out ones (seed 2000; 1000 quadratics,
        /// 3 networks) by the mean loss at the meta-training horizon; a conv net's coarse to fine.
        val evaluation: task: TaskSpec -> EvalSettings

