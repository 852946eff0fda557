package statesync

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStopWhileAppPaused: the app is stuck inside ApplySnapshotChunk (it
// does not return until released, and the local ABCI client ignores ctx).
// Stop still returns, and Sync with it (ErrStopped); once the app is
// released its call ends, and no goroutine is left (TestMain's goleak).
func TestStopWhileAppPaused(t *testing.T) {
	tn := newMemNet(t, netOpts{keys: 400, chunkSize: 4 << 10})
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	tn.fresh.app.OnApply(func(i uint32) {
		if i == 2 {
			once.Do(func() { close(reached) })
			<-release // the app is paused inside ApplySnapshotChunk
		}
	})
	done := startSync(syncCtx(t), tn.fresh.reactor)
	<-reached

	stopped := make(chan error, 1)
	go func() { stopped <- tn.fresh.reactor.Stop() }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("Stop waits for the paused app")
	}
	res := waitSync(t, done, 5*time.Second)
	require.ErrorIs(t, res.err, ErrStopped)

	// The abandoned call is still inside the app.
	select {
	case <-tn.fresh.reactor.AppCallsDone():
		t.Fatal("the app's call ended while the app is paused")
	default:
	}
	close(release)
	select {
	case <-tn.fresh.reactor.AppCallsDone():
	case <-time.After(5 * time.Second):
		t.Fatal("the released app's call did not end")
	}
	// TestMain's goleak check finds no goroutine of this test left.
}
