// Package interop tests state sync between this module's nodes and nodes
// running CometBFT v0.40's built-in state sync reactor, on real in-process
// CometBFT networks (internal/localnet) over loopback TCP.
package interop

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
)

func TestMain(m *testing.M) {
	localnet.VerifyTestMain(m)
}

const interval = 5

func appOpts() kvapp.Options {
	return kvapp.Options{Keys: 400, ValueSize: 1024, ChunkSize: 32 << 10, SnapshotInterval: interval}
}

// logsEnv names a directory that, when set, receives every node's logs
// (info, and debug for state sync), one file per test, kept only when the
// test fails: the way to see both sides of an interop failure.
const logsEnv = "STATESYNC_INTEROP_LOGS"

func testLogger(t *testing.T) log.Logger {
	dir := os.Getenv(logsEnv)
	if dir == "" {
		return nil
	}
	f, err := os.CreateTemp(dir, t.Name()+"-*.log")
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, f.Close())
		if !t.Failed() {
			require.NoError(t, os.Remove(f.Name()))
		}
	})
	return log.NewFilter(log.NewTMLogger(log.NewSyncWriter(f)), log.AllowInfo(),
		log.AllowDebugWith("module", "statesync"))
}

func startNet(ctx context.Context, t *testing.T, stock bool, app kvapp.Options) *localnet.Network {
	t.Helper()
	net, err := localnet.Start(ctx, localnet.Options{
		Validators: 2, FullNodes: 1, RPC: true, Stock: stock, App: app, Logger: testLogger(t),
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, net.Stop()) })
	require.NoError(t, net.WaitHeight(ctx, 2*interval+2))
	return net
}

// TestOursRestoresFromStockCometBFT: a node with our state sync restores
// from nodes running CometBFT's built-in reactor (channels 0x60/0x61 only;
// light blocks come from their RPC servers), then follows the chain.
func TestOursRestoresFromStockCometBFT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	net := startNet(ctx, t, true, appOpts())

	h, hash, err := net.TrustRoot(1)
	require.NoError(t, err)
	cfg := localnet.FastConfig()
	cfg.Enable = true
	cfg.RPCServers = net.RPCServers()
	cfg.TrustHeight, cfg.TrustHash = h, hash
	cfg.TempDir = t.TempDir()
	// Backfill stays on (the default): stock nodes serve no light blocks
	// over P2P (no channel 0x62), so it takes them from the RPC servers.
	m, err := net.Join(localnet.JoinOptions{Name: "ours", StateSync: cfg})
	require.NoError(t, err)
	n := m.Node()

	select {
	case <-n.Synced():
	case <-n.Done():
		t.Fatalf("node stopped: %v", n.Err())
	case <-ctx.Done():
		t.Fatalf("no sync: %v (progress %+v)", ctx.Err(), n.Reactor().Progress())
	}
	res := n.SyncResult()
	snap := res.State.LastBlockHeight
	// The handover does not wait for the backfill: how far behind the
	// chain's tip the node is when block sync takes over.
	t.Logf("handover: snapshot height %d, chain tip %d (%d blocks behind), %v after the bootstrap",
		snap, net.Height(), net.Height()-snap, res.Total-res.Restore)
	require.Zero(t, snap%interval)
	require.Equal(t, 1, m.App.Stats().Restores)
	target := snap + 3
	require.NoError(t, localnet.WaitFor(ctx, func() bool { return m.Height() >= target && net.Nodes[0].Height() >= target }, "the node to follow"))
	require.Equal(t, net.Nodes[0].BlockStore().LoadBlockMeta(target).BlockID, m.BlockStore().LoadBlockMeta(target).BlockID)

	bf, err := n.WaitBackfill(ctx)
	require.NoError(t, err)
	require.NotNil(t, bf)
	require.NoError(t, bf.Err, "backfill from the RPC servers: %+v", bf)
	require.Equal(t, int64(1), bf.To)
	for _, h := range []int64{1, snap} {
		require.Equal(t, net.Nodes[0].BlockStore().LoadBlockMeta(h).BlockID, m.BlockStore().LoadBlockMeta(h).BlockID,
			"backfilled height %d", h)
	}
}

// stockKeep is how many snapshots the serving nodes keep in
// TestStockRestoresFromOurs. CometBFT's restorer picks the best snapshot it
// heard of by the end of its discovery (5 s at the least) and never looks
// for another while it restores that one; a chunk answered "missing" it
// drops ("cannot add nil chunk") and asks for again every
// chunk_request_timeout, until its 2-minute chunk timeout rejects the
// snapshot. A snapshot the servers prune between advertising it and
// serving its last chunk therefore costs it minutes. With localnet's
// default (keep 3, one snapshot every 5 blocks: about 15 blocks, 6 s, of
// life) the snapshot it chose was often pruned a second or two after its
// discovery ended, and in about one run in ten before it had its chunks
// (then every chunk came back missing, from every server). Real chains
// keep snapshots for hours; 20 here keeps each for 100 blocks.
const stockKeep = 20

// TestStockRestoresFromOurs: a node running CometBFT's built-in reactor
// (RPC light client, as it requires) restores from nodes running ours.
func TestStockRestoresFromOurs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	app := appOpts()
	app.SnapshotKeep = stockKeep
	cfg := statesync.DefaultConfig()
	cfg.DiscoveryTime = 5 * time.Second // CometBFT's minimum
	// The snapshot CometBFT chooses must outlive its discovery and two
	// chunk request timeouts even at the fastest block rate (one block per
	// timeout_commit, localnet's 300 ms).
	life := time.Duration(stockKeep*interval) * 300 * time.Millisecond
	require.Greater(t, life, cfg.DiscoveryTime+2*cfg.ChunkRequestTimeout, "snapshots the servers keep")
	net := startNet(ctx, t, false, app)

	h, hash, err := net.TrustRoot(1)
	require.NoError(t, err)
	cfg.Enable = true
	cfg.RPCServers = net.RPCServers()
	cfg.TrustHeight, cfg.TrustHash = h, hash
	cfg.TempDir = t.TempDir()
	m, err := net.Join(localnet.JoinOptions{Name: "stock", Stock: true, StateSync: cfg})
	require.NoError(t, err)
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	if err := localnet.WaitFor(rctx, func() bool { return m.App.Stats().Restores == 1 }, "the stock node to restore"); err != nil {
		t.Fatalf("%v (height %d, network %d, the servers' snapshots at heights %v)", err, m.Height(),
			net.Height(), snapshotHeights(net))
	}
	target := net.Height() + 2
	require.NoError(t, localnet.WaitFor(ctx, func() bool { return m.Height() >= target && net.Nodes[0].Height() >= target }, "the stock node to follow"))
	require.Equal(t, net.Nodes[0].BlockStore().LoadBlockMeta(target).BlockID, m.BlockStore().LoadBlockMeta(target).BlockID)
	require.Greater(t, m.BlockStore().Base(), int64(1), "the stock node restored a snapshot instead of syncing every block")
}

// snapshotHeights lists the heights of the snapshots each node of net
// serves.
func snapshotHeights(net *localnet.Network) [][]uint64 {
	out := make([][]uint64, 0, len(net.Nodes))
	for _, n := range net.Nodes {
		var hs []uint64
		for _, s := range n.App.Snapshots() {
			hs = append(hs, s.Height)
		}
		out = append(out, hs)
	}
	return out
}
