package statesync

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSyncRestoresFromThreePeers restores a fresh node from three serving
// nodes over real MConnections and checks the app, the returned state and
// the bootstrapped stores.
func TestSyncRestoresFromThreePeers(t *testing.T) {
	tn := newTestNet(t, netOpts{servers: 3, keys: 2000, valueSize: 2048, chunkSize: 64 << 10})
	start := time.Now()
	state, err := tn.fresh.reactor.Sync(syncCtx(t))
	require.NoError(t, err)
	took := time.Since(start)

	snap := tn.source.Snapshot(uint64(tn.height))
	bytes := len(tn.source.Data()) * (2048 + 12)
	t.Logf("restored %d chunks (~%.1f MB) of %d KiB from 3 peers in %v: %.1f MB/s (incl. %v discovery)",
		snap.Chunks, float64(bytes)/1e6, 64, took, float64(bytes)/1e6/took.Seconds(), testConfig().DiscoveryTime)

	// The app holds the source's state.
	require.Equal(t, tn.source.AppHash(), tn.fresh.app.AppHash())
	require.Equal(t, tn.source.Data(), tn.fresh.app.Data())
	require.Equal(t, tn.height, tn.fresh.app.Height())

	// The state is the chain's.
	want := tn.chain.State(tn.height)
	require.Equal(t, want.LastBlockHeight, state.LastBlockHeight)
	require.Equal(t, want.LastBlockID, state.LastBlockID)
	require.Equal(t, want.AppHash, state.AppHash)
	require.Equal(t, want.Validators.Hash(), state.Validators.Hash())
	require.Equal(t, want.NextValidators.Hash(), state.NextValidators.Hash())
	require.Equal(t, want.LastValidators.Hash(), state.LastValidators.Hash())
	require.Equal(t, want.ConsensusParams.Hash(), state.ConsensusParams.Hash())
	require.Equal(t, tn.chain.ChainID(), state.ChainID)

	// The stores are bootstrapped.
	loaded, err := tn.fresh.stateStore.Load()
	require.NoError(t, err)
	require.Equal(t, tn.height, loaded.LastBlockHeight)
	require.Equal(t, state.AppHash, loaded.AppHash)
	seen := tn.fresh.blockStore.LoadSeenCommit(tn.height)
	require.NotNil(t, seen)
	require.Equal(t, tn.chain.Commit(tn.height).Hash(), seen.Hash())

	// Every chunk was applied, and every serving peer contributed chunks
	// (the fresh node is the only one asking them).
	require.Equal(t, int64(snap.Chunks), tn.fresh.reactor.metrics.SnapshotChunksCount())
	require.Len(t, tn.servers, 3)
	for i, s := range tn.servers {
		require.Positive(t, s.app.Stats().Loads, "serving peer %d sent no chunk", i)
	}
	require.Equal(t, PhaseDone, tn.fresh.reactor.Progress().Phase)
}
