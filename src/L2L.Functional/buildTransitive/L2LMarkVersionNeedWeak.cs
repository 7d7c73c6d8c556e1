// libLibTorchSharp.so (TorchSharp 0.107.0) records a version requirement on GLIBCXX_3.4.32, which
// Debian 12's libstdc++ (GLIBCXX up to 3.4.30) does not define, so the dynamic loader refuses it.
// The only symbol bound to that version is std::ios_base_library_init(), a link-time marker with
// no relocation, so the requirement can be marked weak (VER_FLG_WEAK in the vna_flags of its
// Vernaux entry in .gnu.version_r) and the library loads.
//
// One source, two users: MSBuild compiles it (RoslynCodeTaskFactory) for the build and publish
// targets in L2L.Functional.targets; L2L.Kernels compiles it with L2L_LIBRARY defined, without
// the MSBuild task, for hosts that load TorchSharp without a build (F# Interactive, notebooks).
#nullable enable
using System;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;

namespace L2L.Native
{
    /// <summary>What marking a version requirement weak found.</summary>
    public enum WeakMark
    {
        /// <summary>The requirement was found and marked weak.</summary>
        Marked,
        /// <summary>The requirement is weak already.</summary>
        AlreadyWeak,
        /// <summary>The file has no requirement on that version.</summary>
        NoRequirement,
        /// <summary>The file is not a 64-bit little-endian ELF file.</summary>
        NotElf,
        /// <summary>An ELF file whose section headers or version records lie outside it.</summary>
        Malformed
    }

    /// <summary>Version requirements (.gnu.version_r) of 64-bit little-endian ELF shared libraries.</summary>
    public static class VersionNeed
    {
        static readonly string[] SystemLibStdCxx = {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6",
            "/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6" };

        static bool At(byte[] hay, long pos, byte[] needle)
        {
            if (pos < 0 || pos + needle.Length > hay.Length) return false;
            for (int k = 0; k < needle.Length; k++) if (hay[pos + k] != needle[k]) return false;
            return true;
        }

        /// <summary>The system's libstdc++.so.6, or null where none is found (or not on Linux).</summary>
        public static string? SystemLibrary()
        {
            if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux)) return null;
            foreach (var lib in SystemLibStdCxx) if (File.Exists(lib)) return lib;
            return null;
        }

        /// <summary>Whether the file's bytes contain the version name (as a NUL-terminated string).</summary>
        public static bool Defines(string path, string versionName)
        {
            var marker = Encoding.ASCII.GetBytes(versionName + "\0");
            var bytes = File.ReadAllBytes(path);
            for (int i = 0; i + marker.Length <= bytes.Length; i++)
                if (bytes[i] == marker[0] && At(bytes, i, marker)) return true;
            return false;
        }

        /// <summary>Whether this system's libstdc++ exists and lacks the version (the case to patch).</summary>
        public static bool SystemLacks(string versionName)
        {
            var lib = SystemLibrary();
            return lib != null && !Defines(lib, versionName);
        }

        /// <summary>Finds the Vernaux entry of the version: its flags' offset, or what was found instead.</summary>
        public static WeakMark Inspect(byte[] b, string versionName, out int flagsAt)
        {
            flagsAt = -1;
            if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F' || b[4] != 2 || b[5] != 1)
                return WeakMark.NotElf;
            var marker = Encoding.ASCII.GetBytes(versionName + "\0");
            // every read is bounds-checked: a truncated or damaged file is Malformed, never an exception
            bool Fits(long at, long size) => at >= 0 && size >= 0 && at <= b.Length - size;
            long shoff = BitConverter.ToInt64(b, 0x28);
            int shentsize = BitConverter.ToUInt16(b, 0x3A), shnum = BitConverter.ToUInt16(b, 0x3C);
            if (shnum == 0) return WeakMark.NoRequirement;
            if (shentsize < 64 || !Fits(shoff, (long)shnum * shentsize)) return WeakMark.Malformed;
            for (int s = 0; s < shnum; s++)
            {
                long sh = shoff + (long)s * shentsize;
                uint type = BitConverter.ToUInt32(b, (int)sh + 4);
                if (type != 0x6ffffffe) continue;                        // SHT_GNU_verneed
                long off = BitConverter.ToInt64(b, (int)sh + 0x18);
                long link = BitConverter.ToUInt32(b, (int)sh + 0x28);
                if (link >= shnum) return WeakMark.Malformed;
                long strOff = BitConverter.ToInt64(b, (int)(shoff + link * shentsize) + 0x18);
                if (!Fits(strOff, 0)) return WeakMark.Malformed;
                long vn = off;
                for (int guard = 0; ; guard++)
                {
                    if (guard > 4096 || !Fits(vn, 16)) return WeakMark.Malformed;
                    int cnt = BitConverter.ToUInt16(b, (int)vn + 2);
                    long aux = vn + BitConverter.ToUInt32(b, (int)vn + 8);
                    for (int a = 0; a < cnt; a++)
                    {
                        if (!Fits(aux, 16)) return WeakMark.Malformed;
                        long name = strOff + BitConverter.ToUInt32(b, (int)aux + 8);
                        if (At(b, name, marker))
                        {
                            int flags = BitConverter.ToUInt16(b, (int)aux + 4);
                            if ((flags & 0x2) != 0) return WeakMark.AlreadyWeak;
                            flagsAt = (int)aux + 4;
                            return WeakMark.Marked;
                        }
                        uint nextAux = BitConverter.ToUInt32(b, (int)aux + 12);
                        if (nextAux == 0) break;
                        aux += nextAux;
                    }
                    uint next = BitConverter.ToUInt32(b, (int)vn + 12);
                    if (next == 0) break;
                    vn += next;
                }
            }
            return WeakMark.NoRequirement;
        }

        /// <summary>
        /// Writes `source` to `destination` with the requirement on the version marked weak, through a
        /// temporary file and a rename (so a hard link into a package cache is never written through);
        /// `source` and `destination` may be the same file. The result keeps the source's last-write
        /// time, so an incremental build that compares size and time does not copy the original over it
        /// again. Writes nothing unless it marks.
        /// </summary>
        public static WeakMark MarkWeak(string source, string destination, string versionName)
        {
            var stamp = File.GetLastWriteTimeUtc(source);
            var b = File.ReadAllBytes(source);
            var found = Inspect(b, versionName, out int flagsAt);
            if (found != WeakMark.Marked) return found;
            b[flagsAt] |= 0x2;                                            // VER_FLG_WEAK
            var dir = Path.GetDirectoryName(Path.GetFullPath(destination))!;
            Directory.CreateDirectory(dir);
            var tmp = Path.Combine(dir, "." + Path.GetFileName(destination) + "." + Guid.NewGuid().ToString("N") + ".tmp");
            try
            {
                File.WriteAllBytes(tmp, b);
                if (File.Exists(destination)) File.Replace(tmp, destination, null);
                else File.Move(tmp, destination);
                File.SetLastWriteTimeUtc(destination, stamp);
            }
            finally
            {
                if (File.Exists(tmp)) File.Delete(tmp);
            }
            return WeakMark.Marked;
        }
    }
}

#if !L2L_LIBRARY
/// <summary>
/// MSBuild task: marks the requirement on `VersionName` weak in each of `Files`, where the system's
/// libstdc++ lacks that version (or always, with `Always`). Running it again changes nothing.
/// </summary>
public class L2LMarkVersionNeedWeak : Microsoft.Build.Utilities.Task
{
    [Microsoft.Build.Framework.Required]
    public Microsoft.Build.Framework.ITaskItem[] Files { get; set; } = Array.Empty<Microsoft.Build.Framework.ITaskItem>();

    [Microsoft.Build.Framework.Required]
    public string VersionName { get; set; } = "";

    /// <summary>Mark even where this system's libstdc++ defines the version (for files shipped elsewhere).</summary>
    public bool Always { get; set; }

    public override bool Execute()
    {
        if (Files.Length == 0) return true;
        if (!Always && !RuntimeInformation.IsOSPlatform(OSPlatform.Linux)) return true;
        if (!Always)
        {
            var lib = L2L.Native.VersionNeed.SystemLibrary();
            if (lib == null)
            {
                Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Low, "No system libstdc++.so.6 found; nothing to patch.");
                return true;
            }
            if (L2L.Native.VersionNeed.Defines(lib, VersionName))
            {
                Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Low, lib + " defines " + VersionName + "; nothing to patch.");
                return true;
            }
        }
        foreach (var item in Files)
        {
            var path = item.ItemSpec;
            if (!File.Exists(path)) continue;
            switch (L2L.Native.VersionNeed.MarkWeak(path, path, VersionName))
            {
                case L2L.Native.WeakMark.NotElf:
                    Log.LogWarning("{0} is not a 64-bit little-endian ELF file; left unchanged.", path);
                    break;
                case L2L.Native.WeakMark.Malformed:
                    Log.LogWarning("{0} is a damaged ELF file (its version records lie outside it); left unchanged.", path);
                    break;
                case L2L.Native.WeakMark.Marked:
                    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High, "Marked the " + VersionName + " requirement of " + path + " weak.");
                    break;
                default:
                    break;
            }
        }
        return true;
    }
}
#endif
