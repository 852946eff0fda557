package kvapp

import (
	"context"
	"slices"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
)

// Knobs make the app misbehave. Change them with Misbehave; the zero
// value is a well-behaved app.
type Knobs struct {
	// OfferResults are returned by OfferSnapshot, one per call, in order;
	// an ACCEPT entry lets that call behave normally.
	OfferResults []abci.ResponseOfferSnapshot_Result
	// OfferAlways, once OfferResults is used up, is returned by every
	// OfferSnapshot.
	OfferAlways *abci.ResponseOfferSnapshot_Result
	// RejectFormat makes OfferSnapshot answer REJECT_FORMAT for it.
	RejectFormat *uint32
	// ApplyResults[i] lists responses ApplySnapshotChunk returns for
	// chunk i, one per call, before handling the chunk normally (the
	// chunk is not applied by these calls).
	ApplyResults map[uint32][]abci.ResponseApplySnapshotChunk
	// SkipAppHashCheck installs a restored state even if its hash differs
	// from the offer's trusted app hash (to test the node's own check).
	SkipAppHashCheck bool
	// CorruptChunks are served with a flipped byte (serving side).
	CorruptChunks map[uint32]bool
	// MissingChunks are served as missing (a nil chunk).
	MissingChunks map[uint32]bool
	// LoadGate, if set, blocks LoadSnapshotChunk until it is closed (or
	// the call's context ends).
	LoadGate chan struct{}
	// LoadDelay delays every LoadSnapshotChunk (a slow disk).
	LoadDelay time.Duration
	// LoadError makes LoadSnapshotChunk fail with it.
	LoadError error
	// InfoOverride may change every Info response (e.g. a wrong height,
	// app hash or app version after a restore).
	InfoOverride func(*abci.ResponseInfo)
}

// ApplyResult queues res as ApplySnapshotChunk's answer for chunk index,
// times times.
func (k *Knobs) ApplyResult(index uint32, times int, res abci.ResponseApplySnapshotChunk) {
	if k.ApplyResults == nil {
		k.ApplyResults = map[uint32][]abci.ResponseApplySnapshotChunk{}
	}
	for i := 0; i < times; i++ {
		k.ApplyResults[index] = append(k.ApplyResults[index], res)
	}
}

// Corrupt serves the given chunks corrupted.
func (k *Knobs) Corrupt(indexes ...uint32) {
	if k.CorruptChunks == nil {
		k.CorruptChunks = map[uint32]bool{}
	}
	for _, i := range indexes {
		k.CorruptChunks[i] = true
	}
}

// Missing serves the given chunks as missing.
func (k *Knobs) Missing(indexes ...uint32) {
	if k.MissingChunks == nil {
		k.MissingChunks = map[uint32]bool{}
	}
	for _, i := range indexes {
		k.MissingChunks[i] = true
	}
}

// Misbehave changes the knobs under the app's lock. Safe at any time.
func (a *App) Misbehave(f func(k *Knobs)) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	f(&a.knobs)
}

// Stats count what happened to the app.
type Stats struct {
	Offers         int // OfferSnapshot calls
	Accepted       int // offers accepted (restores started)
	ChunksApplied  int // chunks applied (each index once per restore)
	Reapplied      int // already applied chunks applied again (accepted, no effect)
	BadChunks      int // chunks that did not match the metadata (RETRY + refetch + reject sender)
	OutOfOrder     int // chunks beyond the next expected one (REJECT_SNAPSHOT)
	HashMismatches int // restores whose app hash differed from the trusted one (REJECT_SNAPSHOT)
	Overridden     int // ApplySnapshotChunk calls answered from Knobs.ApplyResults
	Restores       int // restores completed
	Loads          int // LoadSnapshotChunk calls served (after gate and delay)
	Commits        int // blocks committed
}

// Stats returns the counters.
func (a *App) Stats() Stats {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.stats
}

// Offers returns how many snapshots were offered.
func (a *App) Offers() int { return a.Stats().Offers }

// Applied returns the indexes of applied chunks, in order, over all
// restores.
func (a *App) Applied() []uint32 {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return slices.Clone(a.applied)
}

// OnApply registers a hook called after every applied chunk, outside the
// lock and before ApplySnapshotChunk returns (so a blocking hook pauses
// the restore). nil removes it.
func (a *App) OnApply(f func(index uint32)) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	a.onApply = f
}

// Changed returns a channel closed at the next change of the counters or
// of the committed state. Take a fresh one after each wake-up.
func (a *App) Changed() <-chan struct{} {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.changed
}

// WaitFor waits until cond holds for the counters, or ctx ends.
func (a *App) WaitFor(ctx context.Context, cond func(Stats) bool) error {
	for {
		a.mtx.Lock()
		ok, ch := cond(a.stats), a.changed
		a.mtx.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitApplied waits until at least n chunks were applied.
func (a *App) WaitApplied(ctx context.Context, n int) error {
	return a.WaitFor(ctx, func(s Stats) bool { return s.ChunksApplied >= n })
}

// WaitOffers waits until at least n snapshots were offered.
func (a *App) WaitOffers(ctx context.Context, n int) error {
	return a.WaitFor(ctx, func(s Stats) bool { return s.Offers >= n })
}

// WaitRestored waits until a restore completed.
func (a *App) WaitRestored(ctx context.Context) error {
	return a.WaitFor(ctx, func(s Stats) bool { return s.Restores > 0 })
}
