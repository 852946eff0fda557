package statesync

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	sm "github.com/cometbft/cometbft/state"
)

// BackfillCheckpoint is a backfill's progress as it is persisted, so that
// a restarted node continues the backfill where it stopped
// (Reactor.ResumeBackfill).
type BackfillCheckpoint struct {
	// Top is the height the node was state-synced to: backfill covers the
	// heights from Top down.
	Top int64 `json:"top"`
	// Lowest is the lowest height whose header, commit and validator set
	// are durably stored, every height from it to Top being stored too;
	// Top+1 when none is.
	Lowest int64 `json:"lowest"`
	// Floor, StopHeight and StopTime are the run's bounds: the chain's
	// initial height, and the evidence horizon computed at Top.
	Floor      int64     `json:"floor"`
	StopHeight int64     `json:"stop_height"`
	StopTime   time.Time `json:"stop_time"`
	// Done is set once the backfill reached its bounds.
	Done bool `json:"done"`
}

// BackfillCheckpointer is implemented by a BackfillStore that persists
// backfill checkpoints (NewDBBackfillStore's does). Without it a backfill
// is not resumed after a restart.
type BackfillCheckpointer interface {
	// SaveBackfillCheckpoint buffers cp; the next Flush writes it together
	// with (and not before) the data saved before it.
	SaveBackfillCheckpoint(cp BackfillCheckpoint) error
	// LoadBackfillCheckpoint returns the last flushed checkpoint, and
	// false if there is none.
	LoadBackfillCheckpoint() (BackfillCheckpoint, bool, error)
}

// backfillCheckpointKey is the state DB key of the checkpoint: owned by
// this package, unknown to CometBFT.
var backfillCheckpointKey = []byte("statesync/backfillCheckpoint")

// SaveBackfillCheckpoint implements BackfillCheckpointer. The checkpoint
// goes in the state DB batch, which Flush writes after the block DB's: it
// is durable only once the data it covers is.
func (s *dbBackfillStore) SaveBackfillCheckpoint(cp BackfillCheckpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	s.mtx.Lock()
	defer s.mtx.Unlock()
	return s.stateBatch().Set(backfillCheckpointKey, b)
}

// LoadBackfillCheckpoint implements BackfillCheckpointer.
func (s *dbBackfillStore) LoadBackfillCheckpoint() (BackfillCheckpoint, bool, error) {
	b, err := s.stateDB.Get(backfillCheckpointKey)
	if err != nil || len(b) == 0 {
		return BackfillCheckpoint{}, false, err
	}
	var cp BackfillCheckpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return BackfillCheckpoint{}, false, fmt.Errorf("decoding the backfill checkpoint: %w", err)
	}
	return cp, true, nil
}

func (r *Reactor) checkpointer() BackfillCheckpointer {
	c, _ := r.deps.Backfill.(BackfillCheckpointer)
	return c
}

// saveBackfillStart persists the checkpoint of a backfill not yet begun
// from state (part of Sync's store writes, before Bootstrap), so that a
// node that stops before backfilling anything still backfills after a
// restart.
func (r *Reactor) saveBackfillStart(state sm.State) error {
	c := r.checkpointer()
	if c == nil {
		return nil
	}
	a := anchorAt(state)
	if err := c.SaveBackfillCheckpoint(a.checkpoint(a.top + 1)); err != nil {
		return err
	}
	return r.deps.Backfill.Flush()
}

func (a backfillAnchor) checkpoint(lowest int64) BackfillCheckpoint {
	return BackfillCheckpoint{Top: a.origin, Lowest: lowest, Floor: a.floor, StopHeight: a.stopHeight,
		StopTime: a.stopTime}
}

// saveCheckpoint buffers the run's checkpoint for the coming Flush.
func (b *backfiller) saveCheckpoint() error {
	c := b.r.checkpointer()
	if c == nil {
		return nil
	}
	cp := b.anchor.checkpoint(b.anchor.top + 1 - int64(b.blocks))
	cp.Done = b.done
	if err := c.SaveBackfillCheckpoint(cp); err != nil {
		return fmt.Errorf("saving the backfill checkpoint: %w", err)
	}
	return nil
}

// resumeAnchor anchors the continuation of the backfill cp describes, for
// a node whose current state is state, on data this node stored and
// verified before: the lowest backfilled header, or the block above Top.
func (r *Reactor) resumeAnchor(cp BackfillCheckpoint, state sm.State) (backfillAnchor, error) {
	a := backfillAnchor{origin: cp.Top, top: cp.Lowest - 1, floor: cp.Floor, stopHeight: cp.StopHeight,
		stopTime: cp.StopTime}
	above := cp.Lowest
	if cp.Lowest > cp.Top && state.LastBlockHeight == cp.Top {
		// Nothing stored yet and no block above Top: the state anchors it.
		a.wantID = state.LastBlockID
		return a, nil
	}
	meta := r.deps.BlockStore.LoadBlockMeta(above)
	if meta == nil {
		return a, fmt.Errorf("no stored header at height %d to continue the backfill from", above)
	}
	a.wantID, a.wantCommitHash = meta.Header.LastBlockID, meta.Header.LastCommitHash
	if vals, err := r.deps.StateStore.LoadValidators(above); err == nil && vals != nil && !vals.IsNilOrEmpty() {
		a.upperVals = vals
	}
	return a, nil
}

// ResumeBackfill continues, in the background, a backfill that a previous
// run of this node (before a restart) left unfinished, as recorded by
// Deps.Backfill's checkpoint (BackfillCheckpointer). state is the node's
// current state (its chain ID is used). It returns false, nil when there
// is nothing to resume: no checkpointing store, no checkpoint, or a
// finished one. Errors say why a checkpoint could not be resumed.
func (r *Reactor) ResumeBackfill(state sm.State) (bool, error) {
	c := r.checkpointer()
	if c == nil {
		return false, nil
	}
	cp, ok, err := c.LoadBackfillCheckpoint()
	if err != nil || !ok || cp.Done {
		return false, err
	}
	a, err := r.resumeAnchor(cp, state)
	if err != nil {
		return false, fmt.Errorf("%w: resuming: %w", ErrBackfill, err)
	}
	r.logger.Info("Resuming backfill", "state_synced_at", cp.Top, "lowest_stored", min(cp.Lowest, cp.Top+1),
		"stop_height", cp.StopHeight)
	top := state
	if a.wantCommitHash != nil {
		top.LastValidators = nil // the top block is checked by hash, not signatures
	}
	set := r.backfillSettings()
	set.background = true
	return r.startBackfill(func(ctx context.Context) (BackfillResult, error) {
		return r.runBackfill(ctx, a, top, set)
	}), nil
}

// StartBackfill runs Backfill(state) in the background, on a goroutine the
// Reactor owns: Stop ends it (its result then says BackfillCancelled). Its
// progress shows in Progress.BackfillDone and BackfillTotal (Phase is left
// as it is) and in the metrics (backfill_active).
// Sync calls it after a restore when Config.Backfill is set. It returns
// false if a background backfill is already running or the Reactor is not
// running. The outcome is read with WaitBackfill or LastBackfill.
func (r *Reactor) StartBackfill(state sm.State) bool {
	set := r.backfillSettings()
	set.background = true
	return r.startBackfill(func(ctx context.Context) (BackfillResult, error) {
		return r.backfill(ctx, state, set)
	})
}

func (r *Reactor) startBackfill(run func(ctx context.Context) (BackfillResult, error)) bool {
	r.mtx.Lock()
	if r.bfDone != nil {
		select {
		case <-r.bfDone:
		default:
			r.mtx.Unlock()
			return false // one is running
		}
	}
	done := make(chan struct{})
	r.bfDone, r.lastBackfill = done, nil
	r.mtx.Unlock()
	started := r.goFunc(func(ctx context.Context) {
		r.metrics.setBackfilling(true)
		res, err := run(ctx)
		r.metrics.setBackfilling(false)
		res.Err = err
		r.setBackfillResult(&res, done)
	})
	if !started {
		err := fmt.Errorf("%w: %w", ErrBackfill, ErrStopped)
		r.setBackfillResult(&BackfillResult{Stopped: BackfillCancelled, Err: err}, done)
	}
	return started
}

func (r *Reactor) setBackfillResult(res *BackfillResult, done chan struct{}) {
	r.mtx.Lock()
	r.lastBackfill = res
	r.mtx.Unlock()
	close(done)
}

// WaitBackfill waits for the background backfill (StartBackfill,
// ResumeBackfill, or the one Sync starts) to end and returns its result.
// It returns nil, nil if none was started, and ctx.Err() if ctx ends
// first. A backfill failure is in the result's Err; it is never fatal.
func (r *Reactor) WaitBackfill(ctx context.Context) (*BackfillResult, error) {
	r.mtx.Lock()
	done := r.bfDone
	r.mtx.Unlock()
	if done == nil {
		return nil, nil
	}
	select {
	case <-done:
		return r.LastBackfill(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// BackfillCheckpoint returns the backfill checkpoint last flushed to
// Deps.Backfill (where the backfill stands, also after a restart), and
// false if there is none or the store keeps no checkpoints.
func (r *Reactor) BackfillCheckpoint() (BackfillCheckpoint, bool, error) {
	c := r.checkpointer()
	if c == nil {
		return BackfillCheckpoint{}, false, nil
	}
	return c.LoadBackfillCheckpoint()
}
