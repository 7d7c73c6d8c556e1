/// The MNIST data as tensors, and the IDX format it comes in (parsed from bytes: reading, fetching
/// and caching the files is L2L.Runtime's `Datasets`).
namespace L2L

open System.IO
open System.IO.Compression
open TorchSharp

/// The four MNIST tensors on a device: images [N; 784] as the files' uint8 pixel values (a quarter of
/// the memory of floats; `Mnist.scale` turns a batch into [0, 1]) or as floats already in [0, 1];
/// labels [N] (int64).
type MnistData =
    { TrainX: Tensor
      TrainY: Tensor
      TestX: Tensor
      TestY: Tensor }

module Idx =
    /// The bytes of an IDX file, gunzipped when they are gzipped (by content, not by name).
    let gunzip (raw: byte[]) : byte[] =
        if raw.Length >= 2 && raw[0] = 0x1fuy && raw[1] = 0x8buy then
            use input = new GZipStream(new MemoryStream(raw), CompressionMode.Decompress)
            use out = new MemoryStream()
            input.CopyTo out
            out.ToArray()
        else raw

    let private be32 (b: byte[]) (o: int) = (int b[o] <<< 24) ||| (int b[o + 1] <<< 16) ||| (int b[o + 2] <<< 8) ||| int b[o + 3]

    /// An IDX3 image file: (count, rows, cols, pixels). Errors name what is wrong.
    let images (name: string) (b: byte[]) : Result<int * int * int * byte[], string> =
        if b.Length < 16 then Error(sprintf "%s: truncated (%d bytes, an image file has a 16-byte header)" name b.Length)
        elif be32 b 0 <> 2051 then Error(sprintf "%s: wrong magic number %d (expected 2051 for IDX images)" name (be32 b 0))
        else
            let n, r, c = be32 b 4, be32 b 8, be32 b 12
            if n <= 0 || r <= 0 || c <= 0 then Error(sprintf "%s: bad dimensions %d×%d×%d" name n r c)
            elif int64 b.Length <> 16L + int64 n * int64 r * int64 c then
                Error(sprintf "%s: %d bytes, but the header announces %d images of %d×%d (%d bytes)" name b.Length n r c (16L + int64 n * int64 r * int64 c))
            else Ok(n, r, c, b[16..])

    /// An IDX1 label file: (count, labels). Labels must be digits 0..9.
    let labels (name: string) (b: byte[]) : Result<int * byte[], string> =
        if b.Length < 8 then Error(sprintf "%s: truncated (%d bytes, a label file has an 8-byte header)" name b.Length)
        elif be32 b 0 <> 2049 then Error(sprintf "%s: wrong magic number %d (expected 2049 for IDX labels)" name (be32 b 0))
        else
            let n = be32 b 4
            if n <= 0 then Error(sprintf "%s: bad count %d" name n)
            elif b.Length <> 8 + n then Error(sprintf "%s: %d bytes, but the header announces %d labels (%d bytes)" name b.Length n (8 + n))
            elif b[8..] |> Array.exists (fun l -> l > 9uy) then Error(sprintf "%s: a label is not a digit 0-9" name)
            else Ok(n, b[8..])

module Mnist =
    /// The four files: (name, expected count, SHA-256 of the uncompressed original).
    let files =
        [ "train-images-idx3-ubyte", 60000, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
          "train-labels-idx1-ubyte", 60000, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
          "t10k-images-idx3-ubyte", 10000, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
          "t10k-labels-idx1-ubyte", 10000, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" ]

    /// The four files' contents checked: (name as in `files`, what messages call it, bytes), each
    /// plain or gzipped -> the training images' and labels' and the test images' and labels' values.
    let parse (contents: (string * string * byte[]) list) : Result<byte[] * byte[] * byte[] * byte[], string> =
        let get (name: string) =
            match contents |> List.tryFind (fun (n, _, _) -> n = name) with
            | Some(_, label, b) -> (try Ok(label, Idx.gunzip b) with e -> Error(sprintf "%s cannot be read: %s" label e.Message))
            | None -> Error(sprintf "%s is missing" name)
        let image (name, count, _) =
            get name |> Result.bind (fun (label, b) ->
                Idx.images label b |> Result.bind (fun (n, r, c, px) ->
                    if n <> count || r <> 28 || c <> 28 then Error(sprintf "%s: %d images of %d×%d, expected %d of 28×28" label n r c count)
                    else Ok px))
        let labels (name, count, _) =
            get name |> Result.bind (fun (label, b) ->
                Idx.labels label b |> Result.bind (fun (n, l) ->
                    if n <> count then Error(sprintf "%s: %d labels, expected %d" label n count) else Ok l))
        match files with
        | [ tri; trl; tei; tel ] ->
            image tri |> Result.bind (fun a -> labels trl |> Result.bind (fun b -> image tei |> Result.bind (fun c -> labels tel |> Result.map (fun d -> a, b, c, d))))
        | _ -> Error "unreachable"

    /// The data on `device` from the files' values (images kept as uint8). The tensors are outside
    /// every dispose scope: they are shared by every problem drawn from them, for as long as the
    /// caller keeps them.
    let ofArrays (device: torch.Device) (trainX: byte[], trainY: byte[], testX: byte[], testY: byte[]) : MnistData =
        Tensors.build (fun (d: MnistData) -> [ d.TrainX; d.TrainY; d.TestX; d.TestY ]) (fun () ->
            let images (px: byte[]) = torch.tensor(px).reshape(-1L, 784L).``to``(device)
            let labels (l: byte[]) = torch.tensor(l).to_type(torch.ScalarType.Int64).``to``(device)
            { TrainX = images trainX; TrainY = labels trainY; TestX = images testX; TestY = labels testY })
        |> fun d ->
            for t in [ d.TrainX; d.TrainY; d.TestX; d.TestY ] do
                t.DetachFromDisposeScope() |> ignore
            d

    /// Images as `dtype` in [0, 1]: uint8 pixels are divided by 255 (in `dtype`, as the pixel
    /// values were always scaled); floating images are taken as already scaled.
    let scale (dtype: torch.ScalarType) (images: Tensor) : Tensor =
        if images.dtype = torch.ScalarType.Byte then images.to_type(dtype).Div(255.0)
        else images.to_type(dtype)
