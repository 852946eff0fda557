// Package progressui renders a statesync.Progress stream for people: a
// live, redrawn status line on a terminal, plain lines otherwise (logs,
// pipes, CI).
package progressui

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/statesync/statesync"
)

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
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

// Rate formats a rate in bytes per second in decimal megabytes.
func Rate(bps float64) string { return fmt.Sprintf("%.1f MB/s", bps/1e6) }

// Line describes p on one line.
func Line(p statesync.Progress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-9s", p.Phase)
	switch p.Phase {
	case statesync.PhaseDiscovery:
		fmt.Fprintf(&b, " snapshots found %d", p.Snapshots)
	case statesync.PhaseVerify:
		fmt.Fprintf(&b, " snapshot %d (format %d): light-client verification", p.SnapshotHeight, p.SnapshotFormat)
	case statesync.PhaseRestore:
		fmt.Fprintf(&b, " snapshot %d  %s  fetched %d/%d  applied %d/%d  %s  %s",
			p.SnapshotHeight, bar(p.ChunksApplied, p.ChunksTotal, 20), p.ChunksFetched, p.ChunksTotal,
			p.ChunksApplied, p.ChunksTotal, Bytes(p.Bytes), Rate(p.Rate))
		if p.ETA > 0 {
			fmt.Fprintf(&b, "  ETA %s", p.ETA.Round(time.Second))
		}
		if p.Peers > 0 {
			fmt.Fprintf(&b, "  peers %d", p.Peers)
		}
	case statesync.PhaseBootstrap:
		fmt.Fprintf(&b, " state and seen commit at height %d", p.SnapshotHeight)
	case statesync.PhaseBackfill:
		if p.BackfillTotal > 0 {
			fmt.Fprintf(&b, " %s  blocks %d/%d", bar64(p.BackfillDone, p.BackfillTotal, 20), p.BackfillDone, p.BackfillTotal)
		} else {
			fmt.Fprintf(&b, " headers below height %d: %d blocks", p.SnapshotHeight, p.BackfillDone)
		}
	case statesync.PhaseDone:
		fmt.Fprintf(&b, " snapshot %d, %d chunks, %s", p.SnapshotHeight, p.ChunksTotal, Bytes(p.Bytes))
		if p.BackfillTotal > 0 || p.BackfillDone > 0 {
			fmt.Fprintf(&b, ", backfilled %d blocks", p.BackfillDone)
		}
	case statesync.PhaseFailed:
		fmt.Fprintf(&b, " %v", p.Err)
	}
	return b.String()
}

func bar(done, total uint32, width int) string { return bar64(int64(done), int64(total), width) }

func bar64(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(min(done, total) * int64(width) / total)
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

// Renderer writes a Progress stream to W.
type Renderer struct {
	W io.Writer
	// TTY redraws one status line in place (with a permanent line per
	// phase); otherwise a line is printed on every change of phase and at
	// most every Interval in between.
	TTY bool
	// Interval between plain lines within a phase (default 1 s); on a TTY
	// the line is redrawn at most every 100 ms.
	Interval time.Duration
	// Prefix starts every line.
	Prefix string

	last     time.Time
	phase    statesync.Phase
	drawn    bool
	lastLine string
}

// Update renders one progress event.
func (r *Renderer) Update(p statesync.Progress) {
	now := time.Now()
	phaseChange := p.Phase != r.phase
	line := r.Prefix + Line(p)
	if r.TTY {
		if phaseChange && r.drawn {
			// Keep the finished phase's last state on screen.
			fmt.Fprintf(r.W, "\r\x1b[2K%s\n", r.lastLine)
			r.drawn = false
		}
		if phaseChange || now.Sub(r.last) >= 100*time.Millisecond {
			fmt.Fprintf(r.W, "\r\x1b[2K%s", line)
			r.drawn, r.last = true, now
		}
	} else {
		iv := r.Interval
		if iv <= 0 {
			iv = time.Second
		}
		if phaseChange || now.Sub(r.last) >= iv {
			fmt.Fprintln(r.W, line)
			r.last = now
		}
	}
	r.phase, r.lastLine = p.Phase, line
}

// Finish ends a redrawn line (no-op for plain output).
func (r *Renderer) Finish() {
	if r.TTY && r.drawn {
		fmt.Fprintf(r.W, "\r\x1b[2K%s\n", r.lastLine)
		r.drawn = false
	}
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
