using System.Globalization;

namespace L2L.Host;

/// <summary>
/// A job's checkpoints: DIR/&lt;id&gt;/checkpoints/ckpt-&lt;iteration&gt;.bin. Each is written to a temporary
/// file in the same folder, flushed to disk and renamed over, so a kill never leaves a half-written
/// checkpoint under its final name; the newest <c>keep</c> are kept.
/// </summary>
public sealed class CheckpointStore(string jobDirectory, int keep)
{
    private readonly string _dir = Path.Combine(jobDirectory, "checkpoints");

    public string Directory => _dir;

    public string Write(int iteration, byte[] bytes)
    {
        System.IO.Directory.CreateDirectory(_dir);
        var final = Path.Combine(_dir, $"ckpt-{iteration.ToString("D8", CultureInfo.InvariantCulture)}.bin");
        var tmp = final + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            fs.Write(bytes);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, final, overwrite: true);
        foreach (var old in List().Skip(keep))
            File.Delete(old);
        return final;
    }

    /// <summary>Checkpoint files, newest first.</summary>
    public IReadOnlyList<string> List() =>
        System.IO.Directory.Exists(_dir)
            ? System.IO.Directory.GetFiles(_dir, "ckpt-*.bin").OrderByDescending(Path.GetFileName, StringComparer.Ordinal).ToList()
            : [];

    /// <summary>Removes temporary files a kill may have left behind.</summary>
    public void RemoveTemporaries()
    {
        if (!System.IO.Directory.Exists(_dir)) return;
        foreach (var tmp in System.IO.Directory.GetFiles(_dir, "*.tmp"))
            File.Delete(tmp);
    }

    /// <summary>Moves an unusable checkpoint aside (kept for inspection, never tried again).</summary>
    public void Quarantine(string path)
    {
        var target = path + ".corrupt";
        File.Move(path, target, overwrite: true);
    }
}
