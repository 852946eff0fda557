package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
	"github.com/statesync/statesync/node"
)

// TestRebootBeforeFirstBlock: a node whose stores were state-synced to S
// (seen commit, offline height, Bootstrap, as Sync writes them) boots,
// stops before block sync stores S+1, and boots again, twice. CometBFT's
// NewNode resets the offline state sync height at every boot, so without
// the node setting it again the second boot panics ("state (S) and store
// (0) height mismatch").
func TestRebootBeforeFirstBlock(t *testing.T) {
	const height = 10
	app := kvapp.New(kvapp.Options{Keys: 10, ValueSize: 10, Height: height})
	chain, err := chaingen.New(chaingen.Options{
		ChainID: "reboot", Height: height + 2, Validators: 2, StartTime: time.Now().Add(-time.Hour),
		AppHash: func(h int64) []byte {
			if h == height+1 {
				return app.AppHash()
			}
			return nil
		},
	})
	require.NoError(t, err)
	stateDB, blockDB := dbm.NewMemDB(), dbm.NewMemDB() // MemDB.Close keeps the data: a restart
	ss := sm.NewStore(stateDB, sm.StoreOptions{})
	require.NoError(t, store.NewBlockStore(blockDB).SaveSeenCommit(height, chain.Commit(height)))
	require.NoError(t, ss.SetOfflineStateSyncHeight(height))
	require.NoError(t, ss.Bootstrap(chain.State(height)))

	home := t.TempDir()
	for boot := 1; boot <= 3; boot++ {
		cfg := cmtcfg.DefaultConfig()
		cfg.SetRoot(home)
		cmtcfg.EnsureRoot(home)
		cfg.TxIndex.Indexer = "null"
		cfg.RPC.ListenAddress = ""
		cfg.P2P.PexReactor = false // its address book writes config/ after Stop returns
		cfg.P2P.ListenAddress, err = localnet.FreeAddress()
		require.NoError(t, err)
		ssCfg := localnet.FastConfig()
		ssCfg.Enable, ssCfg.UseP2P = true, true // a synced node does not sync again
		ssCfg.TrustHeight, ssCfg.TrustHash = 1, chain.Block(1).Hash().String()
		ssCfg.Backfill = false
		var n *node.Node
		require.NotPanics(t, func() {
			n, err = node.New(node.Options{
				Config: cfg, StateSync: &ssCfg, PrivValidator: types.NewMockPV(),
				NodeKey: &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()}, ClientCreator: proxy.NewLocalClientCreator(app),
				Genesis: func() (*types.GenesisDoc, error) { return chain.Genesis(), nil },
				DBProvider: func(c *cmtcfg.DBContext) (dbm.DB, error) {
					switch c.ID {
					case "state":
						return stateDB, nil
					case "blockstore":
						return blockDB, nil
					}
					return dbm.NewMemDB(), nil
				},
			})
		}, "boot %d", boot)
		require.NoError(t, err, "boot %d", boot)
		require.False(t, n.StateSyncing())
		require.NoError(t, n.Start())
		require.Zero(t, n.CometBFT().BlockStore().Height())
		require.NoError(t, n.Stop())
		h, err := ss.GetOfflineStateSyncHeight()
		require.NoError(t, err)
		require.Zero(t, h, "NewNode reset the offline height (boot %d)", boot)
	}
}

// TestFallbackToBlockSync: with on_no_snapshot = "blocksync", a node that
// finds no snapshot within the discovery bound boots into block sync from
// genesis instead of stopping (counted in the fallback metric), and
// follows the chain with the validators' app state; with the default
// "stop" it stops with ErrNoSnapshots (TestStateSyncFailureStopsNode).
func TestFallbackToBlockSync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	appOpts := kvapp.Options{Keys: 10, ValueSize: 10, SnapshotInterval: 1_000_000} // no snapshots
	net := startNet(t, ctx, localnet.Options{Validators: 1, FullNodes: 1, App: appOpts})
	require.NoError(t, net.WaitHeight(ctx, 3))
	cfg := joinConfig(t, net)
	cfg.DiscoveryTimeout = 6 * time.Second
	cfg.OnNoSnapshot = statesync.OnNoSnapshotBlockSync
	m, err := net.Join(localnet.JoinOptions{Name: "fresh", StateSync: cfg, App: appOpts})
	require.NoError(t, err)
	n := m.Node()
	require.True(t, n.StateSyncing())
	select {
	case <-n.Synced():
	case <-n.Done():
		t.Fatalf("node stopped: %v", n.Err())
	case <-ctx.Done():
		t.Fatalf("no fallback: %v", ctx.Err())
	}
	res := n.SyncResult()
	require.True(t, res.FellBack)
	require.False(t, res.Synced)
	require.EqualValues(t, 1, n.Metrics().Fallbacks())
	require.Zero(t, m.App.Stats().Restores)

	target := net.Height() + 2
	require.NoError(t, localnet.WaitFor(ctx, func() bool { return m.Height() >= target && net.Nodes[0].Height() >= target }, "the node to block-sync"))
	require.EqualValues(t, 1, m.BlockStore().Base(), "block sync from the initial height")
	require.Equal(t, net.Nodes[0].BlockStore().LoadBlockMeta(target).BlockID, m.BlockStore().LoadBlockMeta(target).BlockID)
	require.NoError(t, localnet.WaitFor(ctx, func() bool {
		return string(m.App.AppHash()) == string(net.Nodes[0].App.AppHash())
	}, "the same app hash"))
	require.NoError(t, n.Err())
}

// TestStopWhileAppPaused: the joining node's app is stuck inside
// ApplySnapshotChunk; the node's Stop still returns (it used to wait for
// the app), and once the app is released its abandoned call ends (no
// goroutine is left: TestMain's leak check).
func TestStopWhileAppPaused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	net := startNet(t, ctx, localnet.Options{
		Validators: 2, App: kvapp.Options{Keys: 200, ValueSize: 512, ChunkSize: 8 << 10, SnapshotInterval: 5},
	})
	require.NoError(t, net.WaitHeight(ctx, 7))
	cfg := joinConfig(t, net)
	cfg.DiscoveryTime = time.Second // the hook below is set before the first chunk arrives
	m, err := net.Join(localnet.JoinOptions{Name: "fresh", StateSync: cfg})
	require.NoError(t, err)
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	m.App.OnApply(func(i uint32) {
		if i == 1 {
			once.Do(func() { close(reached) })
			<-release
		}
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	select {
	case <-reached:
	case <-ctx.Done():
		t.Fatalf("no chunk applied: %v", ctx.Err())
	}
	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop() }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("node Stop waits for the paused app")
	}
	require.NoError(t, m.Node().Err())
	close(release)
	select {
	case <-m.Node().Reactor().AppCallsDone():
	case <-ctx.Done():
		t.Fatal("the released app's call did not end")
	}
}
