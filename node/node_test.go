package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/mempool"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
	"github.com/statesync/statesync/node"
)

func TestMain(m *testing.M) {
	localnet.VerifyTestMain(m)
}

func startNet(t *testing.T, ctx context.Context, o localnet.Options) *localnet.Network {
	t.Helper()
	net, err := localnet.Start(ctx, o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, net.Stop()) })
	return net
}

func joinConfig(t *testing.T, net *localnet.Network) statesync.Config {
	t.Helper()
	h, hash, err := net.TrustRoot(1)
	require.NoError(t, err)
	cfg := localnet.FastConfig()
	cfg.Enable, cfg.UseP2P = true, true
	cfg.TrustHeight, cfg.TrustHash = h, hash
	cfg.TempDir = t.TempDir()
	return cfg
}

// TestStateSyncOverP2P: a fresh node restores from a live network over
// P2P only (no RPC servers anywhere), backfills to the initial height,
// hands over to block sync and follows the chain.
func TestStateSyncOverP2P(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const interval = 5
	net := startNet(t, ctx, localnet.Options{
		Validators: 2, FullNodes: 1,
		App: kvapp.Options{Keys: 200, ValueSize: 512, ChunkSize: 16 << 10, SnapshotInterval: interval},
	})
	// A transaction in the state the snapshot captures.
	require.NoError(t, net.Nodes[0].CometBFT().Mempool().CheckTx([]byte("before=1"), nil, mempool.TxInfo{}))
	require.NoError(t, localnet.WaitFor(ctx, func() bool {
		_, ok := net.Nodes[0].App.Get("before")
		return ok
	}, "the first transaction"))
	require.NoError(t, net.WaitHeight(ctx, net.Height()+interval+2))

	m, err := net.Join(localnet.JoinOptions{Name: "fresh", StateSync: joinConfig(t, net)})
	require.NoError(t, err)
	n := m.Node()
	require.True(t, n.StateSyncing())

	select {
	case <-n.Synced():
	case <-n.Done():
		t.Fatalf("node stopped: %v", n.Err())
	case <-ctx.Done():
		t.Fatalf("no sync: %v (progress %+v)", ctx.Err(), n.Reactor().Progress())
	}
	res := n.SyncResult()
	require.True(t, res.Synced)
	snap := res.State.LastBlockHeight
	t.Logf("handover: snapshot height %d, chain tip %d (%d blocks behind), %v after the bootstrap",
		snap, net.Height(), net.Height()-snap, res.Total-res.Restore)
	require.Zero(t, snap%interval, "snapshot height %d", snap)
	// Backfill runs after the handover, alongside block sync.
	bf, err := n.WaitBackfill(ctx)
	require.NoError(t, err)
	require.NotNil(t, bf, "a backfill was started")
	require.Equal(t, int64(1), bf.To, "backfill result %+v", bf)
	require.NoError(t, bf.Err)

	// Backfilled headers are readable through CometBFT's own loaders.
	bs := m.BlockStore()
	for h := int64(1); h <= snap; h++ {
		meta := bs.LoadBlockMeta(h)
		require.NotNil(t, meta, "height %d", h)
		want := net.Nodes[0].BlockStore().LoadBlockMeta(h)
		require.Equal(t, want.BlockID, meta.BlockID, "height %d", h)
	}

	// It follows the chain: blocks after the snapshot arrive by block sync
	// (then consensus), and match the validators'.
	target := snap + 4
	require.NoError(t, localnet.WaitFor(ctx, func() bool { return m.Height() >= target && net.Nodes[0].Height() >= target }, "the node to follow"))
	require.Equal(t, net.Nodes[0].BlockStore().LoadBlockMeta(target).BlockID,
		bs.LoadBlockMeta(target).BlockID)
	require.Equal(t, net.Nodes[0].App.Data()["before"], m.App.Data()["before"])

	// Its app executes new blocks: a transaction sent now shows up in it.
	require.NoError(t, net.Nodes[0].CometBFT().Mempool().CheckTx([]byte("after=2"), nil, mempool.TxInfo{}))
	require.NoError(t, localnet.WaitFor(ctx, func() bool {
		v, ok := m.App.Get("after")
		return ok && string(v) == "2"
	}, "the transaction to reach the restored app"))
	// Block sync handed over to consensus once caught up.
	require.NoError(t, localnet.WaitFor(ctx, func() bool { return !m.CometBFT().ConsensusReactor().WaitSync() },
		"the node to switch to consensus"))

	// With adaptive sync (block sync and consensus together), the handover
	// switches consensus and the mempool on first.
	cfg := joinConfig(t, net)
	a, err := net.Join(localnet.JoinOptions{Name: "adaptive", StateSync: cfg,
		Configure: func(c *cmtcfg.Config) { c.BlockSync.AdaptiveSync = true }})
	require.NoError(t, err)
	select {
	case <-a.Node().Synced():
	case <-a.Node().Done():
		t.Fatalf("adaptive node stopped: %v", a.Node().Err())
	case <-ctx.Done():
		t.Fatalf("adaptive node: no sync: %v", ctx.Err())
	}
	require.False(t, a.CometBFT().ConsensusReactor().WaitSync())
	target = net.Height() + 2
	// Height may run ahead of either block store by a moment: wait until
	// both hold the block at target.
	require.NoError(t, localnet.WaitFor(ctx, func() bool {
		return a.Height() >= target && a.BlockStore().LoadBlockMeta(target) != nil &&
			net.Nodes[0].BlockStore().LoadBlockMeta(target) != nil
	}, "the adaptive node to follow"))
	require.Equal(t, net.Nodes[0].BlockStore().LoadBlockMeta(target).BlockID, a.BlockStore().LoadBlockMeta(target).BlockID)
}

// TestStopWithoutStart: a node built and stopped without running releases
// everything NewNode started (no goroutine outlives it: TestMain checks).
func TestStopWithoutStart(t *testing.T) {
	home := t.TempDir()
	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(home)
	cfg.DBBackend = "memdb"
	cfg.RPC.ListenAddress = ""
	gen := &types.GenesisDoc{ChainID: "c", GenesisTime: time.Now(), ConsensusParams: types.DefaultConsensusParams()}
	pv := types.NewMockPV()
	pub, err := pv.GetPubKey()
	require.NoError(t, err)
	gen.Validators = []types.GenesisValidator{{Address: pub.Address(), PubKey: pub, Power: 1}}
	require.NoError(t, gen.ValidateAndComplete())
	n, err := node.New(node.Options{
		Config: cfg, PrivValidator: pv, NodeKey: &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()},
		ClientCreator: proxy.NewLocalClientCreator(kvapp.New(kvapp.Options{})),
		Genesis:       func() (*types.GenesisDoc, error) { return gen, nil },
	})
	require.NoError(t, err)
	require.NoError(t, n.Stop())
	<-n.Done()
	require.NoError(t, n.Err())
	require.NoError(t, n.Stop()) // idempotent
	require.Error(t, n.Start())
}

// TestStateSyncFailureStopsNode: when Sync fails (no snapshots anywhere),
// the node stops itself and reports why, instead of sitting parked.
func TestStateSyncFailureStopsNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	net := startNet(t, ctx, localnet.Options{
		Validators: 1, FullNodes: 1,
		App: kvapp.Options{Keys: 10, ValueSize: 10, SnapshotInterval: 1_000_000},
	})
	require.NoError(t, net.WaitHeight(ctx, 2))
	cfg := joinConfig(t, net)
	cfg.DiscoveryTimeout = 6 * time.Second // CometBFT staggers dials to persistent peers by up to 3 s
	m, err := net.Join(localnet.JoinOptions{Name: "fresh", StateSync: cfg})
	require.NoError(t, err)
	n := m.Node()
	require.Error(t, n.Wait(ctx))
	require.ErrorIs(t, n.Err(), node.ErrStateSyncFailed)
	require.ErrorIs(t, n.Err(), statesync.ErrNoSnapshots)
	require.False(t, n.CometBFT().IsRunning())
	select {
	case <-n.Synced():
		t.Fatal("Synced closed after a failure")
	default:
	}
}

// TestServesAllChannels: with state sync off, every node runs our Reactor
// as STATESYNC and advertises all four channels.
func TestServesAllChannels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	net := startNet(t, ctx, localnet.Options{Validators: 1, FullNodes: 1})
	for _, m := range net.Nodes {
		n := m.Node()
		require.False(t, n.StateSyncing())
		select {
		case <-n.Synced():
		default:
			t.Fatal("Synced not closed on a node that does not sync")
		}
		r, ok := n.CometBFT().Switch().Reactor(node.ReactorName)
		require.True(t, ok)
		require.Same(t, n.Reactor(), r)
		ni := n.CometBFT().NodeInfo().(p2p.DefaultNodeInfo)
		for _, ch := range []byte{statesync.SnapshotChannel, statesync.ChunkChannel,
			statesync.LightBlockChannel, statesync.ParamsChannel} {
			require.True(t, ni.HasChannel(ch), "%s lacks channel %#x", m.Name, ch)
		}
	}
	// And the peers see them.
	full := net.Nodes[1].CometBFT()
	require.NoError(t, localnet.WaitFor(ctx, func() bool { return full.Switch().Peers().Size() > 0 }, "a peer"))
	peer := full.Switch().Peers().Copy()[0]
	require.True(t, peer.NodeInfo().(p2p.DefaultNodeInfo).HasChannel(statesync.LightBlockChannel))
}

// TestNewRejectsBadOptions: each missing or contradictory option is
// refused with ErrInvalidOptions and names the option; a bad [statesync]
// section with statesync.ErrInvalidConfig naming its key.
func TestNewRejectsBadOptions(t *testing.T) {
	valid := func() node.Options {
		cfg := cmtcfg.TestConfig()
		cfg.SetRoot(t.TempDir())
		return node.Options{
			Config: cfg, PrivValidator: types.NewMockPV(), NodeKey: &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()},
			ClientCreator: proxy.NewLocalClientCreator(kvapp.New(kvapp.Options{Keys: 1, ValueSize: 1})),
		}
	}
	for want, mutate := range map[string]func(o *node.Options){
		"Config is required": func(o *node.Options) { o.Config = nil },
		"Config must have its StateSync, P2P and BlockSync":   func(o *node.Options) { o.Config.P2P = nil },
		"PrivValidator is required":                           func(o *node.Options) { o.PrivValidator = nil },
		"NodeKey is required":                                 func(o *node.Options) { o.NodeKey = nil },
		"ClientCreator is required":                           func(o *node.Options) { o.ClientCreator = nil },
		"p2p.libp2p is enabled, but CometBFT's libp2p switch": func(o *node.Options) { o.Config.P2P.LibP2PConfig.Enabled = true },
	} {
		o := valid()
		mutate(&o)
		_, err := node.New(o)
		require.True(t, errors.Is(err, node.ErrInvalidOptions), "%s: %v", want, err)
		require.ErrorContains(t, err, want)
	}
	o := valid()
	o.StateSync = &statesync.Config{Enable: true}
	_, err := node.New(o)
	require.ErrorIs(t, err, statesync.ErrInvalidConfig)
	require.ErrorContains(t, err, "statesync.")
}
