package kvapp

import (
	"context"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
)

// Timed wraps an App and records when a restore was accepted and when its
// last chunk was applied, so that different reactors restoring into it are
// timed the same way: from the accepted OfferSnapshot to the last
// ApplySnapshotChunk.
type Timed struct {
	*App
	mtx              sync.Mutex
	offered, applied time.Time
}

// OfferSnapshot records the time of an ACCEPT.
func (a *Timed) OfferSnapshot(ctx context.Context, req *abci.RequestOfferSnapshot) (*abci.ResponseOfferSnapshot, error) {
	res, err := a.App.OfferSnapshot(ctx, req)
	if err == nil && res.Result == abci.ResponseOfferSnapshot_ACCEPT {
		a.mtx.Lock()
		a.offered = time.Now()
		a.mtx.Unlock()
	}
	return res, err
}

// ApplySnapshotChunk records the time of the latest apply.
func (a *Timed) ApplySnapshotChunk(ctx context.Context, req *abci.RequestApplySnapshotChunk) (*abci.ResponseApplySnapshotChunk, error) {
	res, err := a.App.ApplySnapshotChunk(ctx, req)
	a.mtx.Lock()
	a.applied = time.Now()
	a.mtx.Unlock()
	return res, err
}

// RestoreTime is the time from the accepted offer to the last chunk applied.
func (a *Timed) RestoreTime() time.Duration {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.applied.Sub(a.offered)
}
