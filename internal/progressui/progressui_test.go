package progressui

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statesync/statesync"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// screen is a minimal terminal of a fixed width: it interprets what the
// Renderer writes (\r, \n, ESC[2K, printable runes) and wraps a rune
// written past the last column onto a new row, as a terminal does.
type screen struct {
	width    int
	rows     [][]rune
	row, col int
}

func newScreen(width int) *screen { return &screen{width: width, rows: [][]rune{nil}} }

func (s *screen) Write(b []byte) (int, error) {
	text := string(b)
	for len(text) > 0 {
		if strings.HasPrefix(text, "\x1b[2K") {
			s.rows[s.row] = nil
			text = text[len("\x1b[2K"):]
			continue
		}
		r, n := utf8.DecodeRuneInString(text)
		text = text[n:]
		switch r {
		case '\r':
			s.col = 0
		case '\n':
			s.newRow()
		default:
			if s.col == s.width { // the terminal wraps
				s.newRow()
			}
			for len(s.rows[s.row]) <= s.col {
				s.rows[s.row] = append(s.rows[s.row], ' ')
			}
			s.rows[s.row][s.col] = r
			s.col++
		}
	}
	return len(b), nil
}

func (s *screen) newRow() {
	s.row++
	s.col = 0
	if s.row == len(s.rows) {
		s.rows = append(s.rows, nil)
	}
}

// lines are the screen's non-empty rows.
func (s *screen) lines() []string {
	var out []string
	for _, r := range s.rows {
		if len(r) > 0 {
			out = append(out, string(r))
		}
	}
	return out
}

func (s *screen) current() string { return string(s.rows[s.row]) }

// stream is a whole Sync's progress: discovery, verify, a 256-chunk
// restore of 256 MiB, bootstrap, a 10-block backfill and done, one event
// every step apart from start.
func stream(start time.Time, step time.Duration) []statesync.Progress {
	ps := []statesync.Progress{{Phase: statesync.PhaseIdle}} // what Subscribe sends first
	at := start
	add := func(p statesync.Progress) {
		at = at.Add(step)
		p.Time = at
		ps = append(ps, p)
	}
	for i := 0; i <= 3; i++ {
		add(statesync.Progress{Phase: statesync.PhaseDiscovery, Snapshots: i, Peers: 5})
	}
	add(statesync.Progress{Phase: statesync.PhaseVerify, SnapshotHeight: 123450, SnapshotFormat: 1, Peers: 5})
	for i := uint32(0); i <= 256; i++ {
		add(statesync.Progress{Phase: statesync.PhaseRestore, SnapshotHeight: 123450, ChunksTotal: 256,
			ChunksFetched: min(i+8, 256), ChunksApplied: i, Bytes: int64(min(i+8, 256)) << 20,
			Rate: 12.5 * (1 << 20), ETA: time.Duration(256-i) * 300 * time.Millisecond, Peers: 5})
	}
	add(statesync.Progress{Phase: statesync.PhaseBootstrap, SnapshotHeight: 123450, Peers: 5})
	for i := int64(0); i <= 10; i++ {
		add(statesync.Progress{Phase: statesync.PhaseBackfill, SnapshotHeight: 123450, BackfillDone: i,
			BackfillTotal: 10, Peers: 5})
	}
	add(statesync.Progress{Phase: statesync.PhaseDone, SnapshotHeight: 123450, ChunksTotal: 256,
		Bytes: 256 << 20, BackfillDone: 10, BackfillTotal: 10})
	return ps
}

// TestRendererFitsEightyColumns: on an 80-column terminal every redraw
// replaces the status line in place (nothing wraps, no row is left
// behind), the restore line keeps its rate, ETA and peers, and the screen
// ends with one line per phase.
func TestRendererFitsEightyColumns(t *testing.T) {
	scr := newScreen(80)
	r := &Renderer{W: scr, TTY: true, Width: 80, Prefix: "    "}
	for _, p := range stream(time.Unix(0, 0), 200*time.Millisecond) {
		r.Update(p)
		cur := scr.current()
		require.LessOrEqual(t, utf8.RuneCountInString(cur), 79, "a status line takes the last column: %q", cur)
		if p.Phase == statesync.PhaseRestore {
			for _, want := range []string{"MiB/s", "peers 5", "/256"} {
				require.Contains(t, cur, want, "the restore line at 80 columns lost %q", want)
			}
			if p.ETA > 0 {
				require.Contains(t, cur, "ETA "+p.ETA.Round(time.Second).String(), "the restore line at 80 columns lost the ETA")
			}
		}
	}
	r.Finish()
	lines := scr.lines()
	require.Len(t, lines, 6, "one line per phase, nothing left behind by redraws:\n%s", strings.Join(lines, "\n"))
	for i, ph := range []string{"discovery", "verify", "restore", "bootstrap", "backfill", "done"} {
		require.True(t, strings.HasPrefix(lines[i], "    "+ph), "line %d is %q, want phase %s", i, lines[i], ph)
	}
	require.Contains(t, lines[2], "256/256", "the restore's line shows how it ended")
	require.Contains(t, lines[4], "blocks 10/10", "the backfill's line shows how it ended")
}

// TestRendererNarrowTerminal: below what even the kept fields need, the
// line is cut, still within the width.
func TestRendererNarrowTerminal(t *testing.T) {
	for _, w := range []int{1, 5, 20, 40} {
		scr := newScreen(w)
		r := &Renderer{W: scr, TTY: true, Width: w, Prefix: "    "}
		for _, p := range stream(time.Unix(0, 0), 200*time.Millisecond) {
			r.Update(p)
		}
		r.Finish()
		require.Len(t, scr.lines(), 6, "width %d: rows wrapped or left behind: %q", w, scr.lines())
	}
}

func TestFit(t *testing.T) {
	for _, p := range stream(time.Unix(0, 0), time.Second) {
		full := Line(p)
		require.Equal(t, full, Fit(p, 1000), "a wide terminal shows every field")
		for _, w := range []int{30, 60, 76, 80} {
			got := Fit(p, w)
			require.LessOrEqual(t, utf8.RuneCountInString(got), w, "%q", got)
			require.True(t, strings.HasPrefix(got, string(p.Phase)), "%q lost its phase", got)
		}
	}
	p := statesync.Progress{Phase: statesync.PhaseRestore, SnapshotHeight: 9, ChunksTotal: 256, ChunksFetched: 200,
		ChunksApplied: 100, Bytes: 200 << 20, Rate: 3 << 20, ETA: 90 * time.Second, Peers: 12}
	require.Equal(t, "restore   snapshot 9  [#######.............]  fetched 200/256  applied 100/256  200.0 MiB  3.0 MiB/s  ETA 1m30s  peers 12", Line(p))
	require.Equal(t, "restore   snapshot 9  applied 100/256  200.0 MiB  3.0 MiB/s  ETA 1m30s  peers 12", Fit(p, 90))
	require.Equal(t, "restore   applied 100/256  200.0 MiB  3.0 MiB/s  ETA 1m30s  peers 12", Fit(p, 76))
	require.Equal(t, "restore   100/256  3.0 MiB/s  ETA 1m30s  peers 12", Fit(p, 50))

	long := statesync.Progress{Phase: statesync.PhaseFailed, Err: errors.New(strings.Repeat("very long cause ", 20))}
	got := Fit(long, 60)
	require.Equal(t, 60, utf8.RuneCountInString(got))
	require.True(t, strings.HasSuffix(got, "…"))
}

// TestPlainPrintsHowEachPhaseEnded: piped output has, for every phase, its
// final state (not its start state), plus at most one line per Interval
// within a long phase.
func TestPlainPrintsHowEachPhaseEnded(t *testing.T) {
	var out bytes.Buffer
	r := &Renderer{W: &out, Interval: time.Second}
	for _, p := range stream(time.Unix(0, 0), 10*time.Millisecond) {
		r.Update(p)
	}
	r.Finish()
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	var phases []string
	for _, l := range lines {
		ph := strings.Fields(l)[0]
		if len(phases) == 0 || phases[len(phases)-1] != ph {
			phases = append(phases, ph)
		}
	}
	require.Equal(t, []string{"discovery", "verify", "restore", "bootstrap", "backfill", "done"}, phases, "%s", out.String())
	last := func(phase string) string {
		var l string
		for _, s := range lines {
			if strings.HasPrefix(s, phase) {
				l = s
			}
		}
		return l
	}
	require.Contains(t, last("discovery"), "snapshots found 3")
	require.Contains(t, last("restore"), "applied 256/256")
	require.Contains(t, last("backfill"), "blocks 10/10")
	require.NotContains(t, out.String(), "applied 0/256", "the restore's start state was printed")
	require.NotContains(t, out.String(), "blocks 0/10", "the backfill's start state was printed")
	// 257 restore events 10 ms apart: a line at 1 s and 2 s, then the end.
	n := 0
	for _, s := range lines {
		if strings.HasPrefix(s, "restore") {
			n++
		}
	}
	require.Equal(t, 3, n, "%s", out.String())
}

// TestPlainFinishPrintsTheLastState: a stream cut short (the caller stops
// reading) still ends with the latest state.
func TestPlainFinishPrintsTheLastState(t *testing.T) {
	var out bytes.Buffer
	r := &Renderer{W: &out}
	ps := stream(time.Unix(0, 0), 10*time.Millisecond)
	for _, p := range ps[:50] {
		r.Update(p)
	}
	r.Finish()
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	require.Equal(t, Line(ps[49]), lines[len(lines)-1])
}

func TestUnits(t *testing.T) {
	require.Equal(t, "256.0 MiB", Bytes(256<<20))
	require.Equal(t, "1.5 GiB", Bytes(3<<29))
	require.Equal(t, "12.5 MiB/s", Rate(12.5*(1<<20)))
}

func TestTermWidthFallsBack(t *testing.T) {
	t.Setenv("COLUMNS", "")
	require.Equal(t, DefaultWidth, TermWidth(nil))
	t.Setenv("COLUMNS", "132")
	require.Equal(t, 132, TermWidth(nil))
}
