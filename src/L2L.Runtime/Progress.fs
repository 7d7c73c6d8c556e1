/// Progress of long work: the phase, the fraction done, the rate, the elapsed and the remaining time.
/// On a terminal it is one status line redrawn in place (other output goes above it, as tqdm.write
/// does); elsewhere (a pipe, a CI log, a job log) it is a plain line every few seconds and at the
/// end of each phase: one or the other, never both.
namespace L2L

open System
open System.Diagnostics
open System.IO

/// Where a phase stands.
type ProgressStatus =
    { Phase: string
      Done: float
      Total: float
      /// What is counted ("it", "runs", "steps").
      Unit: string
      Elapsed: TimeSpan }

module ProgressStatus =
    /// Units per second so far (NaN before anything is done).
    let rate (s: ProgressStatus) =
        if s.Done > 0.0 && s.Elapsed.TotalSeconds > 0.0 then s.Done / s.Elapsed.TotalSeconds else nan

    /// The remaining time at the rate so far (None before anything is done).
    let remaining (s: ProgressStatus) =
        let r = rate s
        if Double.IsFinite r && r > 0.0 then Some(TimeSpan.FromSeconds(max 0.0 (s.Total - s.Done) / r)) else None

    let private clock (t: TimeSpan) =
        if t.TotalHours >= 1.0 then sprintf "%d:%02d:%02d" (int t.TotalHours) t.Minutes t.Seconds
        else sprintf "%d:%02d" (int t.TotalMinutes) t.Seconds

    let private amount (v: float) = if v = floor v then sprintf "%.0f" v else sprintf "%.1f" v

    /// `phase  42.0%  2100/5000 it  18.3 it/s  elapsed 1:55  remaining 2:38`
    let describe (s: ProgressStatus) =
        let fraction = if s.Total > 0.0 then 100.0 * s.Done / s.Total else 100.0
        let r = rate s
        sprintf "%s  %5.1f%%  %s/%s %s  %s  elapsed %s  remaining %s" s.Phase fraction (amount s.Done) (amount s.Total) s.Unit
            (if Double.IsFinite r then sprintf "%.3g %s/s" r s.Unit else sprintf "- %s/s" s.Unit)
            (clock s.Elapsed) (remaining s |> Option.map clock |> Option.defaultValue "-")

/// Reports progress to `output ()` (read at every write, so a redirected console is followed):
/// in place when `interactive`, else as plain lines at most every `every`.
[<Sealed; AllowNullLiteral>]
type ProgressReporter(interactive: bool, output: unit -> TextWriter, every: TimeSpan) =
    let watch = Stopwatch()
    let mutable phase: (string * float * string) option = None
    let mutable doneSoFar = 0.0
    let mutable lastDraw = TimeSpan.Zero
    let mutable shown = false

    let status () =
        match phase with
        | Some(name, total, unit) -> Some { Phase = name; Done = doneSoFar; Total = total; Unit = unit; Elapsed = watch.Elapsed }
        | None -> None

    let bar (s: ProgressStatus) =
        let width = 24
        let filled = if s.Total > 0.0 then int (floor (float width * min 1.0 (s.Done / s.Total))) else width
        "[" + String('#', filled) + String('.', width - filled) + "]"

    let clear () =
        if interactive && shown then
            (output ()).Write("\r\u001b[2K")
            shown <- false

    let draw (force: bool) =
        match status () with
        | None -> ()
        | Some s ->
            let now = watch.Elapsed
            if interactive then
                if force || now - lastDraw >= TimeSpan.FromMilliseconds 100.0 then
                    let w = output ()
                    w.Write("\r\u001b[2K" + bar s + " " + ProgressStatus.describe s)
                    w.Flush()
                    shown <- true
                    lastDraw <- now
            elif not force && now - lastDraw >= every then
                (output ()).WriteLine(ProgressStatus.describe s)
                lastDraw <- now

    /// A reporter for this process's console: in place when standard output is a terminal (and
    /// not redirected in-process), else plain lines every 10 seconds.
    static member ForConsole() =
        let original = Console.Out
        let interactive () =
            not Console.IsOutputRedirected && obj.ReferenceEquals(Console.Out, original) && not (Console.Out :? StringWriter)
        ProgressReporter(interactive (), (fun () -> Console.Out), TimeSpan.FromSeconds 10.0)

    /// Plain lines to `output` every `every` (tests, logs).
    static member Plain(output: TextWriter, every: TimeSpan) = ProgressReporter(false, (fun () -> output), every)

    member _.Interactive = interactive

    /// Where the current phase stands (None between phases).
    member _.Status = status ()

    /// Starts a phase of `total` units (ending the one before).
    member this.Phase(name: string, total: float, unit: string) =
        this.Finish()
        phase <- Some(name, max 0.0 total, unit)
        doneSoFar <- 0.0
        lastDraw <- TimeSpan.Zero
        watch.Restart()
        draw true

    /// Sets how much of the phase is done (never less than before: progress is monotone).
    member _.Update(doneNow: float) =
        match phase with
        | Some(_, total, _) ->
            doneSoFar <- min total (max doneSoFar doneNow)
            draw false
        | None -> ()

    /// Reports `doneNow` of `total` in phase `name`, starting that phase when it is not the current one.
    member this.Track(name: string, doneNow: float, total: float, unit: string) =
        match phase with
        | Some(current, _, _) when current = name -> ()
        | _ -> this.Phase(name, total, unit)
        this.Update doneNow

    /// One more unit of the current phase done.
    member this.Advance() = this.Update(doneSoFar + 1.0)

    /// A line of other output, printed above the status line.
    member _.Line(text: string) =
        clear ()
        (output ()).WriteLine(text)
        if interactive then draw true

    /// Ends the phase: its last status is printed as a line of its own.
    member _.Finish() =
        match status () with
        | Some s ->
            clear ()
            (output ()).WriteLine(ProgressStatus.describe s)
            phase <- None
        | None -> ()
