package node_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/libs/log"
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

// stopStacks records the stack of the goroutine that stops the CometBFT
// node (CometBFT logs "Stopping Node service" on it).
type stopStacks struct {
	log.Logger
	mtx    *sync.Mutex
	stacks *[]string
}

func newStopStacks() stopStacks {
	return stopStacks{Logger: log.NewNopLogger(), mtx: new(sync.Mutex), stacks: new([]string)}
}

func (l stopStacks) Info(msg string, keyvals ...any) {
	for i := 0; msg == "service stop" && i+1 < len(keyvals); i += 2 {
		if keyvals[i] == "msg" && fmt.Sprint(keyvals[i+1]) == "Stopping Node service" {
			l.mtx.Lock()
			*l.stacks = append(*l.stacks, string(debug.Stack()))
			l.mtx.Unlock()
		}
	}
}

func (l stopStacks) With(...any) log.Logger { return l }

func (l stopStacks) get() []string {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return append([]string(nil), *l.stacks...)
}

// TestFailedSyncStopIsOwned: a node whose state sync fails stops itself on
// the goroutine that ran the sync (started by Start, waited for by Stop),
// not on one that nothing waits for; once Stop has returned, no goroutine
// of the node is left, also when Stop comes before the failure.
func TestFailedSyncStopIsOwned(t *testing.T) {
	for _, stopEarly := range []bool{false, true} {
		logs := newStopStacks()
		n := lonelyNode(t, logs)
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

		stacks := logs.get()
		require.Len(t, stacks, 1, "the CometBFT node is stopped once")
		if stopEarly {
			require.Contains(t, stacks[0], "statesync/node.(*Node).Stop(", "Stop stops the node itself")
		} else {
			require.Contains(t, stacks[0], "statesync/node.(*Node).Start.func", "the failed sync's own goroutine stops the node")
		}
		require.NotContains(t, stacks[0], "statesync/node.(*Node).fail.func")
	}
}

// lonelyNode is a node that state syncs (the genesis validator is someone
// else) with no peer to sync from: its Sync fails after discovery_timeout.
func lonelyNode(t *testing.T, logger log.Logger) *node.Node {
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
		Logger:        logger,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Stop() })
	return n
}
