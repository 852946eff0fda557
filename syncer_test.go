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

func pauseAtChunk(t *testing.T, app *kvapp.App, index uint32) (reached chan struct{}, proceed chan struct{}) {
	reached, proceed = make(chan struct{}), make(chan struct{})
	var once sync.Once
	app.OnApply(func(i uint32) {
		if i == index {
			once.Do(func() { close(reached) })
		}
	})
	return reached, proceed
}

// TestCancelMidSync: cancelling ctx mid-restore returns within a second.
func TestCancelMidSync(t *testing.T) {
	tn := newTestNet(t, netOpts{keys: 400, chunkSize: 4 << 10, rate: 500_000})
	reached, _ := pauseAtChunk(t, tn.fresh.app, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startSync(ctx, tn.fresh.reactor)
	<-reached
	cancel()
	res := waitSync(t, done, time.Second)
	require.ErrorIs(t, res.err, context.Canceled)
	require.Equal(t, PhaseFailed, tn.fresh.reactor.Progress().Phase)
	// The reactor is usable again.
	require.Nil(t, tn.fresh.reactor.activeSyncer())
}

// TestStopDuringSync: Stop during a restore returns Sync with ErrStopped,
// without deadlock, and Stop is idempotent.
func TestStopDuringSync(t *testing.T) {
	tn := newTestNet(t, netOpts{keys: 400, chunkSize: 4 << 10, rate: 500_000})
	reached, _ := pauseAtChunk(t, tn.fresh.app, 2)
	done := startSync(syncCtx(t), tn.fresh.reactor)
	<-reached
	stopped := make(chan error, 1)
	go func() { stopped <- tn.fresh.reactor.Stop() }()
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
	tn := newTestNet(t, netOpts{keys: 400, chunkSize: 4 << 10, rate: 500_000})
	reached, _ := pauseAtChunk(t, tn.fresh.app, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startSync(ctx, tn.fresh.reactor)
	<-reached
	_, err := tn.fresh.reactor.Sync(context.Background())
	require.ErrorIs(t, err, ErrSyncInProgress)
	cancel()
	waitSync(t, done, 5*time.Second)
}
