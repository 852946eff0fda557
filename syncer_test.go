package statesync

import (
	"context"
	"sync"
	"testing"
	"time"

	sm "github.com/cometbft/cometbft/state"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
)

type syncResult struct {
	state sm.State
	err   error
}

// startSync runs Sync on its own goroutine.
func startSync(ctx context.Context, r *Reactor) <-chan syncResult {
	done := make(chan syncResult, 1)
	go func() {
		st, err := r.Sync(ctx)
		done <- syncResult{st, err}
	}()
	return done
}

func waitSync(t *testing.T, done <-chan syncResult, within time.Duration) syncResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(within):
		t.Fatalf("Sync did not return within %v", within)
		return syncResult{}
	}
}

func requireRestored(t *testing.T, tn *testNet, height int64) {
	t.Helper()
	require.Equal(t, tn.source.AppHash(), tn.fresh.app.AppHash())
	require.Equal(t, tn.source.Data(), tn.fresh.app.Data())
	require.Equal(t, height, tn.fresh.app.Height())
	st, err := tn.fresh.stateStore.Load()
	require.NoError(t, err)
	require.Equal(t, height, st.LastBlockHeight)
}

// TestRejectSendersOnCorruptChunks: server 0 serves corrupt chunks; the app
// catches them and answers RETRY with RefetchChunks and RejectSenders; the
// sender is disconnected and the restore completes from the others.
func TestRejectSendersOnCorruptChunks(t *testing.T) {
	tn := newTestNet(t, netOpts{server: func(i int, app *kvapp.App) {
		if i == 0 {
			app.Misbehave(func(k *kvapp.Knobs) {
				k.CorruptChunks = map[uint32]bool{}
				for c := uint32(0); c < 100; c++ {
					k.CorruptChunks[c] = true
				}
			})
		}
	}})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
	waitFor(t, "corrupting peer disconnected", func() bool {
		return !tn.fresh.p2p.Switch.Peers().Has(tn.servers[0].p2p.ID())
	})
	require.True(t, tn.fresh.p2p.Switch.Peers().Has(tn.servers[1].p2p.ID()))
}

// chunkPause holds a restore after the app applied one chunk, until
// release (see pauseAtChunk).
type chunkPause struct {
	index       uint32
	reached     chan struct{} // closed when the chunk was applied
	proceed     chan struct{} // closed by release
	reachedOnce sync.Once
	releaseOnce sync.Once
}

// pauseAtChunk pauses app's restore once chunk index is applied (inside
// ApplySnapshotChunk): the restore cannot run past it until release, which
// the test's cleanup also calls, so a failed test does not leave it held.
func pauseAtChunk(t *testing.T, app *kvapp.App, index uint32) *chunkPause {
	p := &chunkPause{index: index, reached: make(chan struct{}), proceed: make(chan struct{})}
	app.OnApply(func(i uint32) {
		if i != index {
			return
		}
		first := false
		p.reachedOnce.Do(func() { close(p.reached); first = true })
		if first {
			<-p.proceed
		}
	})
	t.Cleanup(p.release)
	return p
}

// wait waits until the restore is paused at the chunk, and fails the test
// if it is not within 30 s (instead of hanging until -timeout).
func (p *chunkPause) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.reached:
	case <-time.After(30 * time.Second):
		t.Fatalf("the restore did not apply chunk %d within 30 s", p.index)
	}
}

// release lets the restore continue. Idempotent.
func (p *chunkPause) release() { p.releaseOnce.Do(func() { close(p.proceed) }) }

// TestCancelMidSync: cancelling ctx mid-restore returns within a second.
func TestCancelMidSync(t *testing.T) {
	tn := newMemNet(t, netOpts{keys: 400, chunkSize: 4 << 10})
	pause := pauseAtChunk(t, tn.fresh.app, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startSync(ctx, tn.fresh.reactor)
	pause.wait(t) // the restore is held mid-way: it cannot finish before the cancel
	cancel()
	pause.release()
	res := waitSync(t, done, time.Second)
	require.ErrorIs(t, res.err, context.Canceled)
	require.Equal(t, PhaseFailed, tn.fresh.reactor.Progress().Phase)
	// The reactor is usable again.
	require.Nil(t, tn.fresh.reactor.activeSyncer())
}

// TestStopDuringSync: Stop during a restore returns Sync with ErrStopped,
// without deadlock, and Stop is idempotent.
func TestStopDuringSync(t *testing.T) {
	tn := newMemNet(t, netOpts{keys: 400, chunkSize: 4 << 10})
	pause := pauseAtChunk(t, tn.fresh.app, 2)
	done := startSync(syncCtx(t), tn.fresh.reactor)
	pause.wait(t)
	stopped := make(chan error, 1)
	go func() { stopped <- tn.fresh.reactor.Stop() }()
	pause.release()
	res := waitSync(t, done, 5*time.Second)
	require.ErrorIs(t, res.err, ErrStopped)
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
	require.Error(t, tn.fresh.reactor.Stop(), "a second Stop reports already stopped")
	_, err := tn.fresh.reactor.Sync(context.Background())
	require.ErrorIs(t, err, ErrStopped)
}

// TestConcurrentSyncRefused: a second Sync while one runs fails at once.
func TestConcurrentSyncRefused(t *testing.T) {
	tn := newMemNet(t, netOpts{keys: 400, chunkSize: 4 << 10})
	pause := pauseAtChunk(t, tn.fresh.app, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startSync(ctx, tn.fresh.reactor)
	pause.wait(t) // the first Sync is held mid-restore
	_, err := tn.fresh.reactor.Sync(context.Background())
	require.ErrorIs(t, err, ErrSyncInProgress)
	cancel()
	pause.release()
	waitSync(t, done, 5*time.Second)
}
