package node_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
	"github.com/statesync/statesync/node"
)

// nodeGoroutines returns the stacks of live goroutines running code of
// package node.
func nodeGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/statesync/statesync/node.") {
			out = append(out, g)
		}
	}
	return out
}

// TestFailedSyncStopIsOwned: a node whose state sync fails stops itself on
// the goroutine that ran the sync, which Stop waits for: once Stop has
// returned, no goroutine of the node is left (not even one returning from
// the stop it made), also when Stop races with the failure.
func TestFailedSyncStopIsOwned(t *testing.T) {
	for _, stopEarly := range []bool{false, true} {
		n := lonelyNode(t)
		require.NoError(t, n.Start())
		if !stopEarly {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := n.Wait(ctx) // the node stops itself
			cancel()
			require.ErrorIs(t, err, node.ErrStateSyncFailed)
		}
		require.NoError(t, n.Stop())
		<-n.Done()
		require.Empty(t, nodeGoroutines(), "goroutines of the node outlive Stop")
		require.False(t, n.CometBFT().IsRunning())
	}
}

// lonelyNode is a node that state syncs (the genesis validator is someone
// else) with no peer to sync from: its Sync fails after discovery_timeout.
func lonelyNode(t *testing.T) *node.Node {
	t.Helper()
	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(t.TempDir())
	cfg.DBBackend = "memdb"
	cfg.RPC.ListenAddress = ""
	cfg.TxIndex.Indexer = "null"
	addr, err := localnet.FreeAddress()
	require.NoError(t, err)
	cfg.P2P.ListenAddress = addr
	other := ed25519.GenPrivKey().PubKey()
	gen := &types.GenesisDoc{ChainID: "lonely", GenesisTime: time.Now(), ConsensusParams: types.DefaultConsensusParams(),
		Validators: []types.GenesisValidator{{Address: other.Address(), PubKey: other, Power: 1}}}
	require.NoError(t, gen.ValidateAndComplete())
	ss := statesync.DefaultConfig()
	ss.Enable, ss.UseP2P = true, true
	ss.TrustHeight, ss.TrustHash = 1, strings.Repeat("AB", 32)
	ss.DiscoveryTime, ss.DiscoveryTimeout = 200*time.Millisecond, time.Second
	n, err := node.New(node.Options{
		Config: cfg, StateSync: &ss, PrivValidator: types.NewMockPV(), NodeKey: &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()},
		ClientCreator: proxy.NewLocalClientCreator(kvapp.New(kvapp.Options{})),
		Genesis:       func() (*types.GenesisDoc, error) { return gen, nil },
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Stop() })
	return n
}
