package statesync

import (
	"sync"
	"time"
)

// Phase names a stage of Sync.
type Phase string

// The phases of Sync, in order. A failed Sync ends in PhaseFailed.
const (
	PhaseIdle      Phase = "idle"
	PhaseDiscovery Phase = "discovery" // asking peers for snapshots
	PhaseVerify    Phase = "verify"    // light-client verification of a snapshot's height
	PhaseRestore   Phase = "restore"   // fetching and applying chunks
	PhaseBootstrap Phase = "bootstrap" // writing the state and the seen commit
	PhaseBackfill  Phase = "backfill"  // fetching historical headers
	PhaseDone      Phase = "done"
	PhaseFailed    Phase = "failed"
)

// Progress is one snapshot of Sync's progress, published to subscribers on
// every change of phase and as chunks and blocks arrive.
type Progress struct {
	Phase Phase
	Time  time.Time

	// The snapshot being restored (zero before one is chosen).
	SnapshotHeight uint64
	SnapshotFormat uint32
	Snapshots      int // snapshots discovered so far

	ChunksTotal   uint32
	ChunksFetched uint32 // distinct chunks on disk for the current snapshot
	ChunksApplied uint32
	Bytes         int64   // chunk bytes received during this Sync
	Rate          float64 // chunk bytes per second since the restore started
	ETA           time.Duration

	BackfillDone  int64 // blocks backfilled
	BackfillTotal int64 // blocks the backfill needs at most

	Peers int   // connected peers, kept current while Sync runs
	Err   error // set with PhaseFailed
}

// progressBuffer is how many updates a subscriber may fall behind;
// phaseReserve of those slots are kept for changes of phase.
const (
	progressBuffer = 64
	phaseReserve   = 16
)

// progressHub fans Progress out to subscribers. Publishing never blocks.
// A subscriber that falls behind misses chunk-level updates first (they stop
// once only phaseReserve slots are left), so changes of phase still reach
// it; only a reader that ignores more than phaseReserve phase changes loses
// its oldest queued update.
type progressHub struct {
	mtx  sync.Mutex
	last Progress
	subs map[chan Progress]struct{}
}

func newProgressHub() *progressHub {
	return &progressHub{subs: make(map[chan Progress]struct{}), last: Progress{Phase: PhaseIdle}}
}

// update applies f to the current progress and publishes the result.
func (h *progressHub) update(f func(p *Progress)) {
	h.mtx.Lock()
	defer h.mtx.Unlock()
	prev := h.last.Phase
	f(&h.last)
	h.last.Time = time.Now()
	phaseChange := h.last.Phase != prev
	for ch := range h.subs {
		if !phaseChange && len(ch) >= cap(ch)-phaseReserve {
			continue // the subscriber is behind: skip a chunk-level update
		}
		select {
		case ch <- h.last:
			continue
		default:
		}
		select {
		case <-ch: // drop the oldest to make room for the phase change
		default:
		}
		select {
		case ch <- h.last: // only we send, under the lock: there is room now
		default:
		}
	}
}

func (h *progressHub) current() Progress {
	h.mtx.Lock()
	defer h.mtx.Unlock()
	return h.last
}

func (h *progressHub) subscribe() (<-chan Progress, func()) {
	ch := make(chan Progress, progressBuffer)
	h.mtx.Lock()
	h.subs[ch] = struct{}{}
	ch <- h.last
	h.mtx.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mtx.Lock()
			delete(h.subs, ch)
			h.mtx.Unlock()
		})
	}
}

// Subscribe returns a channel that receives the current Progress at once
// and every later update, and a cancel function to call when done. A reader
// more than 64 updates behind misses chunk-level updates but never a change
// of phase. The channel is never closed; stop reading after cancel.
func (r *Reactor) Subscribe() (<-chan Progress, func()) {
	return r.progress.subscribe()
}

// Progress returns the latest progress of Sync.
func (r *Reactor) Progress() Progress {
	return r.progress.current()
}
