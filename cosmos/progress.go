package cosmos

import (
	"context"
	"fmt"
	"time"

	"github.com/cosmos/cosmos-sdk/server"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/node"
)

// logProgress logs the boot-time state sync: every change of phase and,
// within a phase, every 5 s; then the outcome. It returns when ctx ends,
// the node stops, or the sync is done.
func logProgress(ctx context.Context, svrCtx *server.Context, n *node.Node) {
	ch, cancel := n.Reactor().Subscribe()
	defer cancel()
	var (
		phase statesync.Phase
		last  time.Time
		t     restoreTimes
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.Done():
			return
		case <-n.Synced():
			r := n.SyncResult()
			svrCtx.Logger.Info("state sync complete; block sync running", "height", r.State.LastBlockHeight,
				"took", r.Total.Round(time.Millisecond).String(),
				"chunks", t.chunks, "bytes", t.bytes, "fetched_s", t.fetched.Seconds(), "applied_s", t.applied.Seconds())
			return
		case p := <-ch:
			t.observe(p)
			if p.Phase != phase || time.Since(last) >= 5*time.Second {
				svrCtx.Logger.Info("state sync: "+Line(p), "phase", string(p.Phase))
				phase, last = p.Phase, time.Now()
			}
		}
	}
}

// Line is a one-line summary of p.
func Line(p statesync.Progress) string {
	s := string(p.Phase)
	if p.SnapshotHeight > 0 {
		s += fmt.Sprintf(" height %d", p.SnapshotHeight)
	}
	if p.ChunksTotal > 0 {
		s += fmt.Sprintf(" chunks %d/%d fetched, %d applied", p.ChunksFetched, p.ChunksTotal, p.ChunksApplied)
	}
	if p.Bytes > 0 {
		s += fmt.Sprintf(", %.1f MB at %.1f MB/s", float64(p.Bytes)/1e6, p.Rate/1e6)
	}
	if p.Err != nil {
		s += ": " + p.Err.Error()
	}
	return s
}

// restoreTimes records, from the progress stream, when the restore of the
// chosen snapshot started and how long after that every chunk had been
// fetched and applied: fetch-bound restores apply right behind the last
// fetch, apply-bound ones finish applying well after it.
type restoreTimes struct {
	start            time.Time
	fetched, applied time.Duration
	chunks           uint32
	bytes            int64
}

func (t *restoreTimes) observe(p statesync.Progress) {
	if p.Phase != statesync.PhaseRestore || p.ChunksTotal == 0 {
		return
	}
	if t.start.IsZero() || p.ChunksTotal != t.chunks {
		*t = restoreTimes{start: p.Time, chunks: p.ChunksTotal}
	}
	t.bytes = p.Bytes
	if p.ChunksFetched == p.ChunksTotal && t.fetched == 0 {
		t.fetched = p.Time.Sub(t.start)
	}
	if p.ChunksApplied == p.ChunksTotal && t.applied == 0 {
		t.applied = p.Time.Sub(t.start)
	}
}
