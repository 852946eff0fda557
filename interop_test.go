package statesync

import (
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	cmtss "github.com/cometbft/cometbft/statesync"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// stockReactor is CometBFT v0.40's built-in statesync reactor on app.
func stockReactor(t testing.TB, app abci.Application) *cmtss.Reactor {
	conns := newAppConns(t, app)
	cfg := *cmtcfg.DefaultStateSyncConfig()
	r := cmtss.NewReactor(cfg, conns.Snapshot(), conns.Query(), cmtss.NopMetrics())
	r.SetLogger(log.NewNopLogger())
	return r
}

// TestInteropRestoreFromStockCometBFT: our reactor restores from nodes
// running CometBFT v0.40's built-in statesync reactor (channels 0x60/0x61,
// which is all they speak).
func TestInteropRestoreFromStockCometBFT(t *testing.T) {
	tn := newTestNet(t, netOpts{servers: -1})
	opts := kvapp.Options{Keys: 200, ValueSize: 1024, ChunkSize: 16 << 10, Height: tn.height}
	var nodes []*p2ptest.Node
	for i := 0; i < 2; i++ {
		app := &kvapp.Timed{App: kvapp.New(opts)}
		nodes = append(nodes, p2ptest.Start(t, tn.p2pCfg, 10+i, map[string]p2p.Reactor{"STATESYNC": stockReactor(t, app)}, nil))
	}
	for _, n := range nodes {
		p2ptest.Connect(t, tn.fresh.p2p, n)
	}
	require.Equal(t, []byte{SnapshotChannel, ChunkChannel}, []byte(tn.fresh.p2p.Switch.Peers().Get(nodes[0].ID()).NodeInfo().(p2p.DefaultNodeInfo).Channels))

	src := kvapp.New(opts)
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	require.NoError(t, res.err)
	require.Equal(t, src.AppHash(), tn.fresh.app.AppHash())
	require.Equal(t, tn.height, res.state.LastBlockHeight)
}

// TestInteropStockCometBFTRestoresFromUs: a node running CometBFT's
// built-in reactor restores from nodes running ours.
func TestInteropStockCometBFTRestoresFromUs(t *testing.T) {
	tn := newTestNet(t, netOpts{servers: 2, keys: 400, chunkSize: 16 << 10})
	fresh := &kvapp.Timed{App: kvapp.New(kvapp.Options{})}
	stock := stockReactor(t, fresh)
	node := p2ptest.Start(t, tn.p2pCfg, 20, map[string]p2p.Reactor{"STATESYNC": stock}, nil)
	for _, s := range tn.servers {
		p2ptest.Connect(t, node, s.p2p)
	}
	sp := chainStateProvider(t, tn.chain)
	state, commit, err := stock.Sync(sp, 5*time.Second) // CometBFT's minimum discovery time
	require.NoError(t, err)
	require.Equal(t, tn.height, state.LastBlockHeight)
	require.Equal(t, tn.chain.Commit(tn.height).Hash(), commit.Hash())
	require.Equal(t, tn.source.AppHash(), fresh.AppHash())
}
