/// The one way the project writes a file: the bytes go to a temporary file in the same folder,
/// which is flushed to disk and then renamed over the target. A reader (or a process killed at any
/// point) sees the old file or the new one, never half of either; a kill before the rename leaves
/// only a `*.tmp` file beside the target, which `isTemporary` recognises.
namespace L2L

open System
open System.IO
open System.Text

module AtomicFile =
    /// Whether a path is a temporary file of this module (left behind by a kill).
    let isTemporary (path: string) = path.EndsWith(".tmp", StringComparison.Ordinal)

    /// Writes `bytes` to `path` atomically, creating its folder; `beforeRename` runs after the
    /// temporary file is on disk and before it is renamed (tests stop a process there). Returns
    /// the full path. A failed write leaves the previous file as it was and removes the temporary.
    let writeWith (beforeRename: string -> unit) (path: string) (bytes: byte[]) : string =
        let full = Path.GetFullPath path
        Directory.CreateDirectory(Path.GetDirectoryName full) |> ignore
        let tmp = sprintf "%s.%s.tmp" full (Guid.NewGuid().ToString("N").Substring(0, 8))
        try
            (
                use fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None)
                fs.Write(bytes, 0, bytes.Length)
                fs.Flush(true)
            )
            beforeRename tmp
            File.Move(tmp, full, true)
            full
        with _ ->
            (try File.Delete tmp with _ -> ())
            reraise ()

    /// Writes `bytes` to `path` atomically; returns the full path.
    let write (path: string) (bytes: byte[]) : string = writeWith ignore path bytes

    /// Writes UTF-8 text to `path` atomically; returns the full path.
    let writeText (path: string) (text: string) : string = write path (Encoding.UTF8.GetBytes text)
