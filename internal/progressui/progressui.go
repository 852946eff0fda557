// Package progressui renders a statesync.Progress stream for people: a
// live, redrawn status line on a terminal, fitted to its width, and plain
// lines otherwise (logs, pipes, CI).
//
// One unit family throughout: sizes and rates are binary (KiB, MiB, GiB,
// MiB/s).
package progressui

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/statesync/statesync"
)

// DefaultWidth is the terminal width assumed when it cannot be read.
const DefaultWidth = 80

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// TermWidth returns the width in columns of the terminal f is: the
// terminal's own, else $COLUMNS, else DefaultWidth.
func TermWidth(f *os.File) int {
	if f != nil {
		if w := ttyColumns(f); w > 0 {
			return w
		}
	}
	if w, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && w > 0 {
		return w
	}
	return DefaultWidth
}

// Bytes formats n bytes in binary units.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Rate formats a rate in bytes per second in binary units (MiB/s).
func Rate(bps float64) string { return fmt.Sprintf("%.1f MiB/s", bps/(1<<20)) }

// Line describes p on one line, with every field.
func Line(p statesync.Progress) string { return Fit(p, 0) }

// Fit describes p in at most width columns (0: no limit). Fields that
// matter least are shortened or dropped first (the bar, the fetched
// count, the snapshot height, the byte count); the phase, the chunks
// applied, the rate, the ETA and the peers stay. What still does not fit
// is cut, ending in "…".
func Fit(p statesync.Progress, width int) string {
	fs := fields(p)
	for width > 0 && joined(fs).len > width {
		if !shorten(fs) {
			break
		}
	}
	return cut(joined(fs).s, width)
}

// field is one part of a line: its variants from longest to shortest (an
// empty one drops it), and its rank: higher ranks are shortened first, rank
// 0 never.
type field struct {
	variants []string
	at       int
	rank     int
}

func keep(s string) *field { return &field{variants: []string{s}} }

func opt(rank int, variants ...string) *field {
	return &field{variants: append(variants, ""), rank: rank}
}

func fields(p statesync.Progress) []*field {
	fs := []*field{keep(fmt.Sprintf("%-9s", p.Phase))}
	peers := func() {
		if p.Peers > 0 {
			fs = append(fs, keep(fmt.Sprintf("peers %d", p.Peers)))
		}
	}
	switch p.Phase {
	case statesync.PhaseDiscovery:
		fs = append(fs, keep(fmt.Sprintf("snapshots found %d", p.Snapshots)))
		peers()
	case statesync.PhaseVerify:
		fs = append(fs, &field{variants: []string{
			fmt.Sprintf("snapshot %d (format %d): light-client verification", p.SnapshotHeight, p.SnapshotFormat),
			fmt.Sprintf("snapshot %d: light-client verification", p.SnapshotHeight),
			fmt.Sprintf("snapshot %d", p.SnapshotHeight)}, rank: 1})
	case statesync.PhaseRestore:
		fs = append(fs,
			opt(3, fmt.Sprintf("snapshot %d", p.SnapshotHeight)),
			opt(5, bar(int64(p.ChunksApplied), int64(p.ChunksTotal), 20), bar(int64(p.ChunksApplied), int64(p.ChunksTotal), 10)),
			opt(4, fmt.Sprintf("fetched %d/%d", p.ChunksFetched, p.ChunksTotal)),
			&field{variants: []string{fmt.Sprintf("applied %d/%d", p.ChunksApplied, p.ChunksTotal),
				fmt.Sprintf("%d/%d", p.ChunksApplied, p.ChunksTotal)}, rank: 1},
			opt(2, Bytes(p.Bytes)),
			keep(Rate(p.Rate)))
		if p.ETA > 0 {
			fs = append(fs, keep("ETA "+p.ETA.Round(time.Second).String()))
		}
		peers()
	case statesync.PhaseBootstrap:
		fs = append(fs, keep(fmt.Sprintf("state and seen commit at height %d", p.SnapshotHeight)))
	case statesync.PhaseBackfill:
		if p.BackfillTotal > 0 {
			fs = append(fs, opt(2, bar(p.BackfillDone, p.BackfillTotal, 20), bar(p.BackfillDone, p.BackfillTotal, 10)),
				keep(fmt.Sprintf("blocks %d/%d", p.BackfillDone, p.BackfillTotal)))
		} else {
			fs = append(fs, keep(fmt.Sprintf("headers below height %d: %d blocks", p.SnapshotHeight, p.BackfillDone)))
		}
		peers()
	case statesync.PhaseDone:
		s := fmt.Sprintf("snapshot %d, %d chunks, %s", p.SnapshotHeight, p.ChunksTotal, Bytes(p.Bytes))
		if p.BackfillTotal > 0 || p.BackfillDone > 0 {
			s += fmt.Sprintf(", backfilled %d blocks", p.BackfillDone)
		}
		fs = append(fs, keep(s))
	case statesync.PhaseFailed:
		fs = append(fs, keep(fmt.Sprint(p.Err)))
	}
	return fs
}

// shorten moves the highest-ranked field that can still shrink to its
// next variant; false if none can.
func shorten(fs []*field) bool {
	var best *field
	for _, f := range fs {
		if f.at < len(f.variants)-1 && (best == nil || f.rank > best.rank) {
			best = f
		}
	}
	if best == nil {
		return false
	}
	best.at++
	return true
}

type line struct {
	s   string
	len int
}

func joined(fs []*field) line {
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		if v := f.variants[f.at]; v != "" {
			parts = append(parts, v)
		}
	}
	// The phase column is padded; the others are two spaces apart.
	s := strings.TrimRight(parts[0], " ")
	if len(parts) > 1 {
		s = parts[0] + " " + strings.Join(parts[1:], "  ")
	}
	return line{s: s, len: utf8.RuneCountInString(s)}
}

// cut shortens s to width runes (0: no limit), ending in "…".
func cut(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	if width == 1 {
		return "…"
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}

func bar(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(min(done, total) * int64(width) / total)
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

// Renderer writes a Progress stream to W.
type Renderer struct {
	W io.Writer
	// TTY redraws one status line in place, fitted to the terminal's width
	// (with a permanent line for each finished phase); otherwise a line is
	// printed at most every Interval within a phase, and how each phase
	// ended when the next begins.
	TTY bool
	// Width of the terminal in columns; 0 reads it from W (an *os.File)
	// at every redraw, so a resize is followed (TermWidth). A redrawn line
	// never takes the last column, so that no terminal wraps it.
	Width int
	// Interval between plain lines within a phase (default 1 s); on a TTY
	// the line is redrawn at most every 100 ms.
	Interval time.Duration
	// Prefix starts every line.
	Prefix string

	last    time.Time
	phase   statesync.Phase
	drawn   bool // TTY: a status line is on screen, without newline
	current statesync.Progress
	pending string // plain: the phase's latest state, not yet printed
}

// Update renders one progress event. Its Time (now if zero) paces the
// output. The idle state (before Sync starts) is not shown.
func (r *Renderer) Update(p statesync.Progress) {
	if p.Phase == statesync.PhaseIdle {
		return
	}
	now := p.Time
	if now.IsZero() {
		now = time.Now()
	}
	phaseChange := p.Phase != r.phase
	if r.TTY {
		r.updateTTY(p, now, phaseChange)
	} else {
		r.updatePlain(p, now, phaseChange)
	}
	r.phase, r.current = p.Phase, p
}

func (r *Renderer) updateTTY(p statesync.Progress, now time.Time, phaseChange bool) {
	if phaseChange && r.drawn {
		// Keep the finished phase's last state on screen.
		fmt.Fprintf(r.W, "\r\x1b[2K%s\n", r.fit(r.current))
		r.drawn = false
	}
	if phaseChange || now.Sub(r.last) >= 100*time.Millisecond {
		fmt.Fprintf(r.W, "\r\x1b[2K%s", r.fit(p))
		r.drawn, r.last = true, now
	}
}

func (r *Renderer) updatePlain(p statesync.Progress, now time.Time, phaseChange bool) {
	iv := r.Interval
	if iv <= 0 {
		iv = time.Second
	}
	if phaseChange {
		r.flush() // how the previous phase ended
		r.last = now
	}
	r.pending = ""
	switch {
	case p.Phase == statesync.PhaseDone || p.Phase == statesync.PhaseFailed:
		fmt.Fprintln(r.W, r.Prefix+Line(p))
	case !phaseChange && now.Sub(r.last) >= iv:
		fmt.Fprintln(r.W, r.Prefix+Line(p))
		r.last = now
	default:
		r.pending = r.Prefix + Line(p)
	}
}

func (r *Renderer) flush() {
	if r.pending != "" {
		fmt.Fprintln(r.W, r.pending)
		r.pending = ""
	}
}

// fit is p's line with the prefix, in one column less than the width.
func (r *Renderer) fit(p statesync.Progress) string {
	w := r.Width
	if w <= 0 {
		f, _ := r.W.(*os.File)
		w = TermWidth(f)
	}
	avail := w - 1 - utf8.RuneCountInString(r.Prefix)
	if avail < 1 {
		return cut(r.Prefix+Line(p), max(w-1, 1))
	}
	return r.Prefix + Fit(p, avail)
}

// Finish ends the output: the redrawn line gets its newline, or the last
// state not yet printed is printed.
func (r *Renderer) Finish() {
	if r.TTY {
		if r.drawn {
			fmt.Fprintf(r.W, "\r\x1b[2K%s\n", r.fit(r.current))
			r.drawn = false
		}
		return
	}
	r.flush()
}

// Run renders ch until ctx ends or a Done or Failed phase arrives, then
// finishes the line.
func (r *Renderer) Run(ctx context.Context, ch <-chan statesync.Progress) {
	defer r.Finish()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-ch:
			r.Update(p)
			if p.Phase == statesync.PhaseDone || p.Phase == statesync.PhaseFailed {
				return
			}
		}
	}
}
