package statesync_test

import (
	"context"
	"fmt"
	"os"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// exampleEnv lets the example use the p2p test helpers outside a test.
type exampleEnv struct{ cleanups []func() }

func (e *exampleEnv) Helper()                      {}
func (e *exampleEnv) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
func (e *exampleEnv) Cleanup(f func())             { e.cleanups = append(e.cleanups, f) }

// Example embeds the Reactor in two nodes on CometBFT switches: one serves
// a snapshot, the other restores from it with Sync. A real node passes its
// own app connections, stores and switch; see doc.go for the steps.
func Example() {
	env := &exampleEnv{}
	defer func() {
		for i := len(env.cleanups) - 1; i >= 0; i-- {
			env.cleanups[i]()
		}
	}()

	// A chain and an app holding a snapshot of its state at height 10.
	appOpts := kvapp.Options{Keys: 100, ValueSize: 100, Height: 10}
	appHash := kvapp.New(appOpts).AppHash()
	chain, _ := chaingen.New(chaingen.Options{Height: 14, StartTime: time.Now().Add(-time.Minute),
		AppHash: func(h int64) []byte {
			if h == 11 {
				return appHash
			}
			return nil
		}})

	newNode := func(app *kvapp.App, sp statesync.StateProvider) (*statesync.Reactor, sm.Store) {
		// Step 2: the app's connections and the node's stores.
		conns := proxy.NewAppConns(proxy.NewLocalClientCreator(app), proxy.NopMetrics())
		_ = conns.Start()
		env.Cleanup(func() { _ = conns.Stop() })
		stateStore := sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
		blockStore := store.NewBlockStore(dbm.NewMemDB())
		// Step 1 and 3: config and reactor.
		cfg := statesync.DefaultConfig()
		cfg.DiscoveryTime = 100 * time.Millisecond
		cfg.TempDir = os.TempDir()
		cfg.Backfill = false // the serving node here keeps no block history to backfill from
		r, err := statesync.NewReactor(cfg, statesync.Deps{
			Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: stateStore, BlockStore: blockStore,
			Genesis: chain.GenesisState(), StateProvider: sp,
		})
		if err != nil {
			panic(err)
		}
		return r, stateStore
	}
	server, _ := newNode(kvapp.New(appOpts), nil)
	p := chain.Provider()
	sp, _ := statesync.NewLightClientStateProvider(context.Background(), chain.ChainID(), sm.InitStateVersion, 1,
		p, []provider.Provider{chain.Provider()}, chain.TrustOptions(1, time.Hour), p, 5*time.Second, nil)
	fresh, stateStore := newNode(kvapp.New(kvapp.Options{}), sp)

	// Step 4: add the reactors to switches (as "STATESYNC") and start them.
	p2ptest.Network(env, p2ptest.Config(0), []map[string]p2p.Reactor{
		{"STATESYNC": server}, {"STATESYNC": fresh},
	})

	// Step 5: restore.
	state, err := fresh.Sync(context.Background())
	if err != nil {
		fmt.Println("sync failed:", err)
		return
	}
	stored, _ := stateStore.Load()
	fmt.Println("restored height", state.LastBlockHeight, "- state store at", stored.LastBlockHeight)
	// Output: restored height 10 - state store at 10
}
