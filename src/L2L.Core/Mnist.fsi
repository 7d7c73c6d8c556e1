namespace L2L

    /// The four MNIST tensors on a device: images [N; 784] as the files' uint8 pixel values (a quarter of
    /// the memory of floats; `Mnist.scale` turns a batch into [0, 1]) or as floats already in [0, 1];
    /// labels [N] (int64).
    type MnistData =
        {
          TrainX: Tensor
          TrainY: Tensor
          TestX: Tensor
          TestY: Tensor
        }

    module Idx =

        /// The bytes of an IDX file, gunzipped when they are gzipped (by content, not by name).
        val gunzip: raw: byte array -> byte array

        /// An IDX3 image file: (count, rows, cols, pixels). Errors name what is wrong.
        val images:
          name: string ->
            b: byte array -> Result<(int * int * int * byte array),string>

        /// An IDX1 label file: (count, labels). Labels must be digits 0..9.
        val labels:
          name: string -> b: byte array -> Result<(int * byte array),string>

    module Mnist =

        /// The four files: (name, expected count, SHA-256 of the uncompressed original).
        val files: (string * int * string) list

        /// The four files' contents checked: (name as in `files`, what messages call it, bytes), each
        /// plain or gzipped -> the training images' and labels' and the test images' and labels' values.
        val parse:
          contents: (string * string * byte array) list ->
            Result<(byte array * byte array * byte array * byte array),string>

        /// The data on `device` from the files' values (images kept as uint8). The tensors are outside
        /// every dispose scope: they are shared by every problem drawn from them, for as long as the
        /// caller keeps them.
        val ofArrays:
          device: TorchSharp.torch.Device ->
            trainX: byte array * trainY: byte array * testX: byte array *
            testY: byte array -> MnistData

        /// Images as `dtype` in [0, 1]: uint8 pixels are divided by 255 (in `dtype`, as the pixel
        /// values were always scaled); floating images are taken as already scaled.
        val scale:
          dtype: TorchSharp.torch.ScalarType -> images: Tensor -> Tensor

