/// libtorch loads and computes, and the build marked only the output copy of libLibTorchSharp.so.
module L2L.Tests.NativeTests

open System
open System.IO
open Expecto
open TorchSharp

/// vna_flags of the Vernaux entry named `version` in an ELF64 file's .gnu.version_r, if any.
let verneedFlags (path: string) (version: string) : int option =
    let b = File.ReadAllBytes path
    let u16 o = int64 (BitConverter.ToUInt16(b, int o))
    let u32 o = int64 (BitConverter.ToUInt32(b, int o))
    let i64 o = BitConverter.ToInt64(b, int o)
    let shoff = i64 0x28L
    let shentsize = u16 0x3AL
    let shnum = int (u16 0x3CL)
    let cstr (o: int64) =
        let e = Array.IndexOf(b, 0uy, int o)
        Text.Encoding.ASCII.GetString(b, int o, e - int o)
    seq {
        for s in 0 .. shnum - 1 do
            let sh = shoff + int64 s * shentsize
            if u32 (sh + 4L) = 0x6ffffffeL then
                let strOff = i64 (shoff + u32 (sh + 0x28L) * shentsize + 0x18L)
                let mutable vn = i64 (sh + 0x18L)
                let mutable more = true
                while more do
                    let mutable aux = vn + u32 (vn + 8L)
                    for _ in 1L .. u16 (vn + 2L) do
                        if cstr (strOff + u32 (aux + 8L)) = version then yield int (u16 (aux + 4L))
                        aux <- aux + u32 (aux + 12L)
                    let next = u32 (vn + 12L)
                    if next = 0L then more <- false else vn <- vn + next
    }
    |> Seq.tryHead

let systemHas (version: string) =
    [ "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"; "/lib/x86_64-linux-gnu/libstdc++.so.6"; "/usr/lib64/libstdc++.so.6" ]
    |> List.tryFind File.Exists
    |> Option.map (fun p ->
        let bytes = File.ReadAllBytes p
        let needle = Text.Encoding.ASCII.GetBytes(version + "\000")
        bytes.AsSpan().IndexOf(ReadOnlySpan needle) >= 0)

/// TorchSharp's own libLibTorchSharp.so in the NuGet packages folder (never modified).
let cachedLibTorchSharp () =
    let home = Environment.GetEnvironmentVariable "NUGET_PACKAGES"
    let root =
        if String.IsNullOrEmpty home then Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
        else home
    Path.Combine(root, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so")

[<Tests>]
let tests =
    testList "native" [
        testCase "libtorch loads and computes a matrix product" <| fun () ->
            use a = torch.tensor([| 1.0f; 2.0f; 3.0f; 4.0f |]).reshape(2L, 2L)
            use b = torch.tensor([| 5.0f; 6.0f; 7.0f; 8.0f |]).reshape(2L, 2L)
            use c = torch.mm(a, b)
            Expect.sequenceEqual (c.data<float32>().ToArray()) [| 19.0f; 22.0f; 43.0f; 50.0f |] "A·B"
            Expect.isGreaterThanOrEqual (torch.get_num_threads ()) 1 "intra-op threads"

        testCase "the output copy of libLibTorchSharp.so is weak on GLIBCXX_3.4.32 exactly when the system lacks it" <| fun () ->
            let output = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so")
            Expect.isTrue (File.Exists output) "libLibTorchSharp.so in the test output"
            let flags = verneedFlags output "GLIBCXX_3.4.32"
            Expect.isSome flags "the library records a requirement on GLIBCXX_3.4.32"
            match systemHas "GLIBCXX_3.4.32" with
            | Some false -> Expect.equal (flags.Value &&& 2) 2 "marked weak where libstdc++ lacks the version"
            | Some true -> Expect.equal (flags.Value &&& 2) 0 "left alone where libstdc++ has the version"
            | None -> failtest "no system libstdc++.so.6 found"

        testCase "the NuGet cache's copy is never modified" <| fun () ->
            let cached = cachedLibTorchSharp ()
            Expect.isTrue (File.Exists cached) (sprintf "TorchSharp in the package cache (%s)" cached)
            Expect.equal (verneedFlags cached "GLIBCXX_3.4.32") (Some 0) "the cached library keeps its original flags"

        testCase "VersionNeed.MarkWeak: a marked copy, the source untouched, idempotent; other files left alone" <| fun () ->
            let cached = cachedLibTorchSharp ()
            let before = File.ReadAllBytes cached
            let dir = Path.Combine(Path.GetTempPath(), "l2l-native-" + Guid.NewGuid().ToString("N"))
            let copy = Path.Combine(dir, "sub", "libLibTorchSharp.so")
            Expect.equal (L2L.Native.VersionNeed.MarkWeak(cached, copy, "GLIBCXX_3.4.32")) L2L.Native.WeakMark.Marked "marked"
            Expect.equal (verneedFlags copy "GLIBCXX_3.4.32" |> Option.map (fun f -> f &&& 2)) (Some 2) "the copy is weak"
            Expect.equal (File.ReadAllBytes cached) before "the source is unchanged"
            let marked = File.ReadAllBytes copy
            Expect.equal (marked |> Array.mapi (fun i b -> if b <> before[i] then 1 else 0) |> Array.sum) 1 "one byte differs"
            Expect.equal (L2L.Native.VersionNeed.MarkWeak(copy, copy, "GLIBCXX_3.4.32")) L2L.Native.WeakMark.AlreadyWeak "again: already weak"
            Expect.equal (File.ReadAllBytes copy) marked "nothing written the second time"
            Expect.equal (L2L.Native.VersionNeed.MarkWeak(cached, copy + ".x", "GLIBCXX_9.9.99")) L2L.Native.WeakMark.NoRequirement "no such requirement"
            Expect.isFalse (File.Exists(copy + ".x")) "nothing written"
            // cut short: its section headers lie outside the file
            let cut = Path.Combine(dir, "cut.so")
            File.WriteAllBytes(cut, marked |> Array.take 4096)
            Expect.equal (L2L.Native.VersionNeed.MarkWeak(cut, cut, "GLIBCXX_3.4.32")) L2L.Native.WeakMark.Malformed "truncated: malformed, no exception"
            let rnd = Random(3)
            for _ in 1..200 do
                let b = Array.copy marked
                for _ in 1..8 do
                    b[rnd.Next(b.Length)] <- byte (rnd.Next 256)
                L2L.Native.VersionNeed.Inspect(b, "GLIBCXX_3.4.32") |> ignore // damaged bytes: a result, never an exception
            let text = Path.Combine(dir, "text.so")
            File.WriteAllText(text, "not an ELF file")
            Expect.equal (L2L.Native.VersionNeed.MarkWeak(text, text, "GLIBCXX_3.4.32")) L2L.Native.WeakMark.NotElf "not ELF"
            Directory.Delete(dir, true)

        testCase "the run-time loader's libtorch: TorchSharp's version first, the CPU build first, then newer before older" <| fun () ->
            let root = Path.Combine(Path.GetTempPath(), "l2l-packages-" + Guid.NewGuid().ToString("N"))
            for d in [ "libtorch-cpu-linux-x64/2.5.1"; "libtorch-cpu-linux-x64/2.10.0"; "libtorch-cpu-linux-x64/2.9.0"
                       "libtorch-cuda-12.8-linux-x64/2.10.0"; "torchsharp/0.107.0" ] do
                Directory.CreateDirectory(Path.Combine(root, d)) |> ignore
            let names (dirs: string[]) = dirs |> Array.map (fun d -> Path.GetFileName(Path.GetDirectoryName d) + "/" + Path.GetFileName d) |> List.ofArray
            Expect.equal (names (L2L.Runtime.libtorchVersions root (Some "2.10.0")))
                [ "libtorch-cpu-linux-x64/2.10.0"; "libtorch-cuda-12.8-linux-x64/2.10.0"; "libtorch-cpu-linux-x64/2.9.0"; "libtorch-cpu-linux-x64/2.5.1" ]
                "2.10.0 before 2.9.0 (not string order), the CPU build first"
            Expect.equal (names (L2L.Runtime.libtorchVersions root None)).Head "libtorch-cpu-linux-x64/2.10.0" "without a wanted version: the newest CPU build"
            Directory.Delete(root, true)

        testCase "Runtime.loadTorchSharpNative does nothing in a build whose copy is already fixed" <| fun () ->
            Expect.equal (L2L.Runtime.loadTorchSharpNative ()) (Ok()) "Ok, with libtorch already loaded from the output"
    ]
