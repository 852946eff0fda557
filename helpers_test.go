package statesync

import (
	"context"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// testNet is a chain, serving nodes holding a snapshot of it, and a fresh
// node to restore, all on CometBFT switches over real MConnections.
type testNet struct {
	chain   *chaingen.Chain
	height  int64 // snapshot height
	source  *kvapp.App
	servers []*testNode
	fresh   *testNode
	nodes   []*p2ptest.Node
	p2pCfg  *cmtcfg.P2PConfig
}

type testNode struct {
	app        *kvapp.App
	reactor    *Reactor
	stateStore sm.Store
	blockStore *store.BlockStore
	p2p        *p2ptest.Node
}

type netOpts struct {
	servers     int
	keys        int
	valueSize   int
	chunkSize   int
	height      int64
	heights     []int64 // per-server snapshot heights (default: all at height)
	noSnapshots bool    // servers have no snapshot
	shareApp    bool    // every server serves the source app (saves memory in benchmarks)
	streamBytes int64   // kvapp streaming mode: a state of this many bytes, never held in memory
	rate        int64   // p2p rate per connection; 0 = 50 MB/s to keep tests fast
	// network, if set, connects the reactors instead of CometBFT switches
	// over MConnections (tn.nodes and testNode.p2p stay nil then).
	network func(t testing.TB, reactors []map[string]p2p.Reactor)
	cfg     func(c *Config)
	server  func(i int, app *kvapp.App)
	// freshDeps, if set, edits the fresh node's Deps before its Reactor
	// is built.
	freshDeps func(d *Deps)
	// serverApp, if set and non-nil for i, replaces server i's app (e.g. a
	// forged state at the snapshot height).
	serverApp func(i int) *kvapp.App
	provider  func(c *chaingen.Chain) StateProvider
}

func newAppConns(t testing.TB, app abci.Application) proxy.AppConns {
	conns := proxy.NewAppConns(proxy.NewLocalClientCreator(app), proxy.NopMetrics())
	require.NoError(t, conns.Start())
	t.Cleanup(func() { _ = conns.Stop() })
	return conns
}

// newTestNet builds the network; the fresh node is the last switch.
func newTestNet(t testing.TB, o netOpts) *testNet {
	t.Helper()
	switch {
	case o.servers == 0:
		o.servers = 3
	case o.servers < 0: // only the fresh node
		o.servers = 0
	}
	if o.keys == 0 {
		o.keys = 200
	}
	if o.valueSize == 0 {
		o.valueSize = 1024
	}
	if o.chunkSize == 0 {
		o.chunkSize = 16 << 10
	}
	if o.height == 0 {
		o.height = 20
	}
	if o.rate == 0 {
		o.rate = 50_000_000
	}
	tn := &testNet{height: o.height}
	tn.source = kvapp.New(kvapp.Options{Keys: o.keys, ValueSize: o.valueSize, ChunkSize: o.chunkSize, Height: o.height,
		StreamBytes: o.streamBytes})
	srcHash := tn.source.AppHash()
	snapHeights := map[int64]bool{o.height: true}
	heightOf := func(i int) int64 {
		if i < len(o.heights) {
			return o.heights[i]
		}
		return o.height
	}
	for i := 0; i < o.servers; i++ {
		snapHeights[heightOf(i)] = true
	}
	chain, err := chaingen.New(chaingen.Options{
		ChainID: "statesync-test", Height: o.height + 4, Validators: 4,
		ValSetChanges: map[int64]int{o.height - 5: 5, o.height + 2: 3},
		AppHash: func(h int64) []byte {
			if snapHeights[h-1] {
				return srcHash // every snapshot holds the same state
			}
			return nil
		},
		StartTime: time.Now().Add(-time.Hour),
	})
	require.NoError(t, err)
	tn.chain = chain

	mkNode := func(app *kvapp.App, serving bool) *testNode {
		n := &testNode{app: app}
		n.stateStore = sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
		n.blockStore = store.NewBlockStore(dbm.NewMemDB())
		if serving {
			require.NoError(t, chain.Populate(n.blockStore, n.stateStore, 1, o.height+3))
		}
		cfg := testConfig()
		if o.cfg != nil {
			o.cfg(&cfg)
		}
		if cfg.TempDir == "" {
			cfg.TempDir = t.TempDir()
		}
		conns := newAppConns(t, app)
		deps := Deps{
			Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: n.stateStore, BlockStore: n.blockStore,
			Genesis: chain.GenesisState(), Logger: log.NewNopLogger(),
		}
		if !serving && o.freshDeps != nil {
			o.freshDeps(&deps)
		}
		if !serving {
			if o.provider != nil {
				deps.StateProvider = o.provider(chain)
			} else {
				deps.StateProvider = chainStateProvider(t, chain)
			}
		}
		r, err := NewReactor(cfg, deps)
		require.NoError(t, err)
		n.reactor = r
		return n
	}
	for i := 0; i < o.servers; i++ {
		var app *kvapp.App
		if !o.shareApp {
			app = kvapp.New(kvapp.Options{Keys: o.keys, ValueSize: o.valueSize, ChunkSize: o.chunkSize, Height: heightOf(i)})
		}
		if o.noSnapshots {
			app = kvapp.New(kvapp.Options{})
		}
		if o.shareApp {
			app = tn.source
		}
		if o.serverApp != nil && o.serverApp(i) != nil {
			app = o.serverApp(i)
		}
		if o.server != nil {
			o.server(i, app)
		}
		tn.servers = append(tn.servers, mkNode(app, true))
	}
	tn.fresh = mkNode(kvapp.New(kvapp.Options{}), false)
	nodes := append(append([]*testNode(nil), tn.servers...), tn.fresh)
	tn.p2pCfg = p2ptest.Config(o.rate)
	reactors := make([]map[string]p2p.Reactor, len(nodes))
	for i, n := range nodes {
		reactors[i] = map[string]p2p.Reactor{"STATESYNC": n.reactor}
	}
	if o.network != nil {
		o.network(t, reactors)
		return tn
	}
	tn.nodes = p2ptest.Network(t, tn.p2pCfg, reactors)
	for i, n := range nodes {
		n.p2p = tn.nodes[i]
	}
	return tn
}

// chainStateProvider is the real light-client state provider over the
// chain's data (primary and one witness).
func chainStateProvider(t testing.TB, chain *chaingen.Chain) StateProvider {
	t.Helper()
	primary := chain.Provider()
	sp, err := newLightStateProvider(context.Background(), chain.ChainID(), sm.InitStateVersion, 1,
		primary, []provider.Provider{chain.Provider()}, chain.TrustOptions(1, 24*time.Hour), primary,
		5*time.Second, log.NewNopLogger())
	require.NoError(t, err)
	return sp
}

// syncCtx returns a context bounded so a hung test fails instead of hanging.
func syncCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor waits for cond with a deadline, failing the test on timeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 20*time.Second, 5*time.Millisecond, "waiting for %s", what)
}

// metricValue reads a counter or gauge from reg by full name and, for
// vectors, the value of its "reason" label ("" for none). Missing is 0.
func metricValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := reason == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					match = true
				}
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
		}
	}
	return 0
}

// testConfig returns DefaultConfig with timeouts short enough for tests on
// one machine (localnet.FastConfig is the same for tests outside this
// package, which cannot import it).
func testConfig() Config {
	c := DefaultConfig()
	c.DiscoveryTime = 200 * time.Millisecond
	c.DiscoveryTimeout = 5 * time.Second
	c.ChunkRequestTimeout = 2 * time.Second
	c.VerifyTimeout = 5 * time.Second
	c.LightBlockTimeout = 2 * time.Second
	return c
}
