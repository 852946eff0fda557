package statesync

import (
	"context"
	"sync"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/light/provider"
	sm "github.com/cometbft/cometbft/state"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
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

func TestOfferSnapshotResults(t *testing.T) {
	// Server 0 has a snapshot at 20; servers 1 and 2 at 16, which ranks
	// first (more peers). Each result applies to the first offer (of 16).
	cases := []struct {
		result   abci.ResponseOfferSnapshot_Result
		height   int64 // height restored, 0 = Sync fails
		err      error
		punished bool // servers 1 and 2 disconnected
	}{
		{abci.ResponseOfferSnapshot_ACCEPT, 16, nil, false},
		{abci.ResponseOfferSnapshot_REJECT, 20, nil, false},
		{abci.ResponseOfferSnapshot_REJECT_FORMAT, 0, ErrAllSnapshotsRejected, false},
		{abci.ResponseOfferSnapshot_REJECT_SENDER, 20, nil, true},
		{abci.ResponseOfferSnapshot_ABORT, 0, ErrAbort, false},
		{abci.ResponseOfferSnapshot_UNKNOWN, 0, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.result.String(), func(t *testing.T) {
			tn := newTestNet(t, netOpts{heights: []int64{20, 16, 16}, height: 20,
				cfg: func(c *Config) { c.DiscoveryTimeout = 2 * time.Second }})
			tn.fresh.app.Misbehave(func(k *kvapp.Knobs) {
				k.OfferResults = []abci.ResponseOfferSnapshot_Result{tc.result}
			})
			res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
			switch {
			case tc.height > 0:
				require.NoError(t, res.err)
				requireRestored(t, tn, tc.height)
			case tc.err != nil:
				require.ErrorIs(t, res.err, tc.err)
			default:
				require.ErrorContains(t, res.err, "unknown result")
			}
			if tc.punished {
				waitFor(t, "rejected senders disconnected", func() bool {
					return !tn.fresh.p2p.Switch.Peers().Has(tn.servers[1].p2p.ID()) &&
						!tn.fresh.p2p.Switch.Peers().Has(tn.servers[2].p2p.ID())
				})
				require.True(t, tn.fresh.p2p.Switch.Peers().Has(tn.servers[0].p2p.ID()))
			}
		})
	}
}

func TestApplySnapshotChunkResults(t *testing.T) {
	type applyCase struct {
		name    string
		results []abci.ResponseApplySnapshotChunk // for chunk 2
		err     error                             // nil: restored
		offers  int                               // OfferSnapshot calls expected
	}
	cases := []applyCase{
		{"accept", []abci.ResponseApplySnapshotChunk{}, nil, 1},
		{"retry", []abci.ResponseApplySnapshotChunk{
			{Result: abci.ResponseApplySnapshotChunk_RETRY}, {Result: abci.ResponseApplySnapshotChunk_RETRY},
		}, nil, 1},
		{"retry_snapshot", []abci.ResponseApplySnapshotChunk{{Result: abci.ResponseApplySnapshotChunk_RETRY_SNAPSHOT}}, nil, 2},
		{"reject_snapshot", []abci.ResponseApplySnapshotChunk{{Result: abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT}}, ErrAllSnapshotsRejected, 1},
		{"abort", []abci.ResponseApplySnapshotChunk{{Result: abci.ResponseApplySnapshotChunk_ABORT}}, ErrAbort, 1},
		{"refetch", []abci.ResponseApplySnapshotChunk{
			{Result: abci.ResponseApplySnapshotChunk_RETRY, RefetchChunks: []uint32{2}},
		}, nil, 1},
		{"retry_forever", func() []abci.ResponseApplySnapshotChunk {
			out := make([]abci.ResponseApplySnapshotChunk, maxChunkRetries+1)
			for i := range out {
				out[i].Result = abci.ResponseApplySnapshotChunk_RETRY
			}
			return out
		}(), ErrAllSnapshotsRejected, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t, netOpts{cfg: func(c *Config) { c.DiscoveryTimeout = time.Second }})
			tn.fresh.app.Misbehave(func(k *kvapp.Knobs) {
				k.ApplyResults = map[uint32][]abci.ResponseApplySnapshotChunk{2: tc.results}
			})
			res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
			if tc.err != nil {
				require.ErrorIs(t, res.err, tc.err)
			} else {
				require.NoError(t, res.err)
				requireRestored(t, tn, tn.height)
			}
			require.Equal(t, tc.offers, tn.fresh.app.Offers())
		})
	}
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

// TestPeerDisconnectsMidRestore stops a serving node after a few chunks were
// applied; the restore completes from the others.
func TestPeerDisconnectsMidRestore(t *testing.T) {
	tn := newTestNet(t, netOpts{keys: 400, chunkSize: 8 << 10})
	reached, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	tn.fresh.app.OnApply(func(index uint32) {
		if index == 3 {
			once.Do(func() { close(reached); <-proceed })
		}
	})
	done := startSync(syncCtx(t), tn.fresh.reactor)
	select {
	case <-reached:
	case res := <-done:
		t.Fatalf("Sync returned before the disconnect: %v", res.err)
	}
	tn.servers[0].p2p.Stop()
	waitFor(t, "peer gone", func() bool { return !tn.fresh.p2p.Switch.Peers().Has(tn.servers[0].p2p.ID()) })
	waitFor(t, "progress counts 2 peers", func() bool { return tn.fresh.reactor.Progress().Peers == 2 })
	close(proceed)
	res := waitSync(t, done, 30*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
}

// TestNoSnapshots: peers without snapshots end Sync with ErrNoSnapshots
// within the discovery bound.
func TestNoSnapshots(t *testing.T) {
	tn := newTestNet(t, netOpts{servers: 2, noSnapshots: true,
		cfg: func(c *Config) { c.DiscoveryTimeout = 600 * time.Millisecond }})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 10*time.Second)
	require.ErrorIs(t, res.err, ErrNoSnapshots)
	require.ErrorContains(t, res.err, "no peer advertised a snapshot")
	require.Equal(t, PhaseFailed, tn.fresh.reactor.Progress().Phase)
}

// TestPrunedSnapshotIsGivenUp: every peer advertises a snapshot but says it
// lacks one of its chunks (it pruned it). Sync does not retry it forever:
// the peers are asked again, the snapshot is rejected after a bounded number
// of stalls, and Sync ends with a documented error naming the cause.
func TestPrunedSnapshotIsGivenUp(t *testing.T) {
	tn := newTestNet(t, netOpts{
		cfg: func(c *Config) {
			c.DiscoveryTimeout = time.Second
			c.ChunkRequestTimeout = 300 * time.Millisecond
		},
		server: func(_ int, app *kvapp.App) { app.Misbehave(func(k *kvapp.Knobs) { k.Missing(1) }) },
	})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	require.ErrorIs(t, res.err, ErrAllSnapshotsRejected)
	require.ErrorIs(t, res.err, ErrNoPeers)
	require.ErrorContains(t, res.err, "stalled 3 times")
}

// TestSilentPeersAreGivenUp: peers advertise a snapshot and then never
// answer a chunk request. Sync ends with an error instead of re-requesting
// forever.
func TestSilentPeersAreGivenUp(t *testing.T) {
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	tn := newTestNet(t, netOpts{
		servers: 2,
		cfg: func(c *Config) {
			c.DiscoveryTimeout = time.Second
			c.ChunkRequestTimeout = 200 * time.Millisecond
		},
		server: func(_ int, app *kvapp.App) { app.Misbehave(func(k *kvapp.Knobs) { k.LoadGate = gate }) },
	})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	require.ErrorIs(t, res.err, ErrAllSnapshotsRejected)
	require.ErrorIs(t, res.err, ErrNoPeers)
}

// gatedProvider wraps a StateProvider and reports every AppHash error.
type gatedProvider struct {
	StateProvider
	errs chan error
}

func (g *gatedProvider) AppHash(ctx context.Context, h uint64) ([]byte, error) {
	b, err := g.StateProvider.AppHash(ctx, h)
	if err != nil {
		select {
		case g.errs <- err:
		default:
		}
	}
	return b, err
}

// TestSnapshotAtTipTriedLater: the snapshot's height+2 does not exist yet;
// the snapshot is deferred, not rejected, and restored once it does.
func TestSnapshotAtTipTriedLater(t *testing.T) {
	var primary *chaingen.Provider
	gp := &gatedProvider{errs: make(chan error, 1)}
	tn := newTestNet(t, netOpts{provider: func(c *chaingen.Chain) StateProvider {
		primary = c.Provider()
		sp, err := newLightStateProvider(context.Background(), c.ChainID(), sm.InitStateVersion, 1,
			primary, []provider.Provider{primary}, c.TrustOptions(1, 24*time.Hour), primary, 5*time.Second, nil)
		require.NoError(t, err)
		gp.StateProvider = sp
		return gp
	}})
	primary.SetTop(tn.height + 1)
	done := startSync(syncCtx(t), tn.fresh.reactor)
	select {
	case err := <-gp.errs:
		require.ErrorIs(t, err, ErrHeightNotAvailable)
	case res := <-done:
		t.Fatalf("Sync returned early: %v", res.err)
	}
	primary.SetTop(tn.height + 4)
	res := waitSync(t, done, 30*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
}

// TestTransientProviderErrorKeepsSnapshot: a provider failing with a
// transient error does not reject the snapshot.
func TestTransientProviderErrorKeepsSnapshot(t *testing.T) {
	var primary *chaingen.Provider
	gp := &gatedProvider{errs: make(chan error, 1)}
	tn := newTestNet(t, netOpts{provider: func(c *chaingen.Chain) StateProvider {
		primary = c.Provider()
		sp, err := newLightStateProvider(context.Background(), c.ChainID(), sm.InitStateVersion, 1,
			primary, []provider.Provider{c.Provider()}, c.TrustOptions(1, 24*time.Hour), primary, 5*time.Second, nil)
		require.NoError(t, err)
		gp.StateProvider = sp
		return gp
	}})
	primary.Fail(provider.ErrNoResponse)
	done := startSync(syncCtx(t), tn.fresh.reactor)
	select {
	case err := <-gp.errs:
		require.ErrorIs(t, err, ErrProviderTransient)
	case res := <-done:
		t.Fatalf("Sync returned early: %v", res.err)
	}
	primary.Fail(nil)
	res := waitSync(t, done, 30*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
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
	tn := newTestNet(t, netOpts{keys: 400, chunkSize: 4 << 10, rate: 500_000})
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
	tn := newTestNet(t, netOpts{keys: 400, chunkSize: 4 << 10, rate: 500_000})
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
	tn := newTestNet(t, netOpts{keys: 400, chunkSize: 4 << 10, rate: 500_000})
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

// TestDiscoveryAsksLatePeers: a serving node that connects after Sync
// started is asked for snapshots, and the restore uses it.
func TestDiscoveryAsksLatePeers(t *testing.T) {
	tn := newTestNet(t, netOpts{servers: 1, noSnapshots: true,
		cfg: func(c *Config) { c.DiscoveryTimeout = 20 * time.Second }})
	sub, cancel := tn.fresh.reactor.Subscribe()
	defer cancel()
	done := startSync(syncCtx(t), tn.fresh.reactor)
	for p := range sub {
		if p.Phase == PhaseDiscovery {
			break
		}
	}
	// A late server with the snapshot.
	app := kvapp.New(kvapp.Options{Keys: 200, ValueSize: 1024, ChunkSize: 16 << 10, Height: tn.height})
	late := newLateServer(t, tn, app)
	p2ptest.Connect(t, tn.fresh.p2p, late)
	res := waitSync(t, done, 30*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
}
