/// The one file writer: a reader or a killed writer sees the old file or the new one, never half.
module L2L.Tests.AtomicFileTests

open System
open System.Diagnostics
open System.IO
open Expecto
open L2L

/// What a child process writes: 1 MiB of one byte value.
let private content (b: byte) = Array.create (1 <<< 20) b

/// Child mode of the test runner (`--atomic-write-child PATH`): writes PATH atomically, says so on
/// stdout once the temporary file is on disk, and waits there to be killed before the rename.
let child (path: string) =
    AtomicFile.writeWith
        (fun tmp ->
            printfn "before-rename %s" tmp
            Console.Out.Flush()
            Threading.Thread.Sleep(Threading.Timeout.Infinite))
        path (content 2uy)
    |> ignore
    0

let private tempDir () =
    let d = Path.Combine(Path.GetTempPath(), "l2l-atomic-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory d |> ignore
    d

[<Tests>]
let tests =
    testList "atomic file writer" [
        testCase "a writer killed (SIGKILL) between the write and the rename leaves the old file whole and only a temporary beside it" <| fun () ->
            let dir = tempDir ()
            let path = Path.Combine(dir, "state.bin")
            AtomicFile.write path (content 1uy) |> ignore
            let psi = ProcessStartInfo(Environment.ProcessPath, RedirectStandardOutput = true, UseShellExecute = false)
            psi.ArgumentList.Add(Reflection.Assembly.GetExecutingAssembly().Location)
            psi.ArgumentList.Add "--atomic-write-child"
            psi.ArgumentList.Add path
            use p = Process.Start psi
            let line = p.StandardOutput.ReadLine()
            Expect.isNotNull line "the child reached the rename"
            Expect.stringStarts line "before-rename " "the child's report"
            let tmp = line.Substring("before-rename ".Length)
            p.Kill()
            p.WaitForExit()
            Expect.sequenceEqual (File.ReadAllBytes path) (content 1uy) "the old file, whole"
            Expect.isTrue (File.Exists tmp) "the temporary is left"
            Expect.isTrue (AtomicFile.isTemporary tmp) "and recognised as one"
            Expect.equal (Path.GetDirectoryName tmp) dir "in the target's folder (a rename, not a copy across file systems)"
            Expect.sequenceEqual (File.ReadAllBytes tmp) (content 2uy) "flushed before the rename"
            // the next write replaces the file; the checkpoint store clears what a kill left
            AtomicFile.write path (content 3uy) |> ignore
            Expect.sequenceEqual (File.ReadAllBytes path) (content 3uy) "the next write lands"
            Directory.Delete(dir, true)

        testCase "a failed write leaves the previous file and no temporary" <| fun () ->
            let dir = tempDir ()
            let path = Path.Combine(dir, "a.json")
            AtomicFile.writeText path "old" |> ignore
            Expect.throws (fun () -> AtomicFile.writeWith (fun _ -> failwith "disk full") path [| 1uy |] |> ignore) "the failure goes through"
            Expect.equal (File.ReadAllText path) "old" "previous content"
            Expect.isEmpty (Directory.GetFiles dir |> Array.filter AtomicFile.isTemporary) "no temporary left"
            Directory.Delete(dir, true)

        testCase "a target that is a directory: the write fails, reported, nothing else changed" <| fun () ->
            let dir = tempDir ()
            let target = Path.Combine(dir, "ckpt.bin")
            Directory.CreateDirectory target |> ignore
            Expect.throwsT<IOException> (fun () -> AtomicFile.write target [| 1uy |] |> ignore) "an IOException the caller reports"
            Expect.isTrue (Directory.Exists target) "the directory is left as it was"
            Expect.isEmpty (Directory.GetFiles dir) "no temporary left"
            Directory.Delete(dir, true)

        testCase "the checkpoint store removes temporaries, keeps the newest K, and sets unusable ones aside" <| fun () ->
            let dir = tempDir ()
            let store = CheckpointStore(dir, 2)
            for i in 1..4 do
                store.Write(i * 10, [| byte i |]) |> ignore
            Expect.equal (store.List() |> Seq.map Path.GetFileName |> List.ofSeq) [ "ckpt-00000040.bin"; "ckpt-00000030.bin" ] "the newest two, newest first"
            let stray = Path.Combine(store.Directory, "ckpt-00000050.bin.0123abcd.tmp")
            File.WriteAllBytes(stray, [| 9uy |])
            store.RemoveTemporaries()
            Expect.isFalse (File.Exists stray) "temporary removed"
            store.Quarantine(store.List()[0])
            Expect.equal (store.List() |> Seq.map Path.GetFileName |> List.ofSeq) [ "ckpt-00000030.bin" ] "set aside"
            Expect.isTrue (File.Exists(Path.Combine(store.Directory, "ckpt-00000040.bin.corrupt"))) "kept for inspection"
            Directory.Delete(dir, true)
    ]
