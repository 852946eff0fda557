package main

import (
	"context"
	"fmt"
	"os"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	cmtss "github.com/cometbft/cometbft/statesync"
	"github.com/cometbft/cometbft/store"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// snapshotHeight is the height of every benchmark snapshot.
const snapshotHeight = 10

// restoreCase is one restore configuration.
type restoreCase struct {
	peers int
	chunk int   // bytes
	size  int64 // bytes of app state
	rate  int64 // per-connection send/recv rate, B/s; 0 = lifted
	ours  bool
	their bool
}

// restoreRun is one reactor's restore.
type restoreRun struct {
	took       time.Duration // accepted offer to last chunk applied
	peak, live uint64        // heap growth during the restore (bytes)
}

type restoreResult struct {
	restoreCase
	bytes        int64
	ours, theirs restoreRun
}

// lifted is the rate used when limits are lifted: far above what the
// machine can push.
const lifted = 1 << 40

func (c restoreCase) linkRate() int64 {
	if c.rate == 0 {
		return lifted
	}
	return c.rate
}

// runRestore serves the same snapshot from c.peers nodes running our
// Reactor (one shared app, kvapp's streaming mode: chunks generated on
// demand, never all in memory) and restores it on a fresh node with our
// Reactor, then on another fresh node with CometBFT v0.40's built-in
// reactor, both over real MConnections on loopback TCP.
func runRestore(c restoreCase, logger log.Logger) (res restoreResult, err error) {
	res.restoreCase = c
	res.bytes = c.size
	err = withEnv(func(e *env) error {
		src := kvapp.New(kvapp.Options{StreamBytes: c.size, ChunkSize: c.chunk, Height: snapshotHeight, Seed: 7})
		appHash := src.AppHash()
		chain, err := chaingen.New(chaingen.Options{
			ChainID: "bench", Height: snapshotHeight + 3, Validators: 4,
			StartTime: time.Now().Add(-time.Hour),
			AppHash: func(h int64) []byte {
				if h == snapshotHeight+1 {
					return appHash
				}
				return nil
			},
		})
		if err != nil {
			return err
		}
		p2pCfg := p2ptest.Config(c.linkRate())
		srcConns := appConns(e, src)
		servers := make([]*p2ptest.Node, c.peers)
		for i := range servers {
			r, err := statesync.NewReactor(statesync.DefaultConfig(), statesync.Deps{
				Snapshots: srcConns.Snapshot(), Query: srcConns.Query(),
				StateStore: sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{}),
				BlockStore: store.NewBlockStore(dbm.NewMemDB()),
				Genesis:    chain.GenesisState(), Logger: logger.With("server", i),
			})
			if err != nil {
				return err
			}
			servers[i] = p2ptest.Start(e, p2pCfg, i, map[string]p2p.Reactor{"STATESYNC": r}, nil)
		}
		tmp, err := os.MkdirTemp("", "statesync-bench-")
		if err != nil {
			return err
		}
		e.Cleanup(func() { os.RemoveAll(tmp) })

		if c.ours {
			if res.ours, err = restoreOurs(c, chain, servers, p2pCfg, tmp, logger); err != nil {
				return fmt.Errorf("ours: %w", err)
			}
		}
		if c.their {
			if res.theirs, err = restoreTheirs(chain, servers, p2pCfg, tmp, logger); err != nil {
				return fmt.Errorf("CometBFT's: %w", err)
			}
		}
		return nil
	})
	return res, err
}

// connectAll starts a node holding reactor and connects it to servers.
func connectAll(e *env, p2pCfg *cmtcfg.P2PConfig, reactor p2p.Reactor, servers []*p2ptest.Node) *p2ptest.Node {
	n := p2ptest.Start(e, p2pCfg, 100, map[string]p2p.Reactor{"STATESYNC": reactor}, nil)
	for _, s := range servers {
		p2ptest.Connect(e, n, s)
	}
	return n
}

func restoreOurs(c restoreCase, chain *chaingen.Chain, servers []*p2ptest.Node, p2pCfg *cmtcfg.P2PConfig,
	tmp string, logger log.Logger,
) (run restoreRun, err error) {
	err = withEnv(func(e *env) error {
		app := &timedApp{App: kvapp.New(kvapp.Options{})}
		conns := appConns(e, app)
		cfg := statesync.DefaultConfig()
		cfg.DiscoveryTime = 500 * time.Millisecond
		cfg.Backfill = false
		cfg.TempDir = tmp
		r, err := statesync.NewReactor(cfg, statesync.Deps{
			Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{}),
			BlockStore: store.NewBlockStore(dbm.NewMemDB()),
			Genesis:    chain.GenesisState(), StateProvider: chainProvider{chain},
			Logger: logger.With("node", "ours"),
		})
		if err != nil {
			return err
		}
		n := connectAll(e, p2pCfg, r, servers)
		heap := sampleHeap()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		_, err = r.Sync(ctx)
		run.peak, run.live = heap.finish()
		if err != nil {
			return err
		}
		run.took = app.restoreTime()
		n.Stop() // disconnect from the servers before the next restorer
		return nil
	})
	return run, err
}

func restoreTheirs(chain *chaingen.Chain, servers []*p2ptest.Node, p2pCfg *cmtcfg.P2PConfig,
	tmp string, logger log.Logger,
) (run restoreRun, err error) {
	err = withEnv(func(e *env) error {
		app := &timedApp{App: kvapp.New(kvapp.Options{})}
		conns := appConns(e, app)
		cfg := *cmtcfg.DefaultStateSyncConfig()
		cfg.TempDir = tmp
		r := cmtss.NewReactor(cfg, conns.Snapshot(), conns.Query(), cmtss.NopMetrics())
		r.SetLogger(logger.With("node", "theirs"))
		n := connectAll(e, p2pCfg, r, servers)
		heap := sampleHeap()
		// 5 s is the shortest discovery CometBFT accepts (shorter becomes 25 s);
		// timing starts at the accepted offer, so it is not counted.
		_, _, err := r.Sync(chainProvider{chain}, 5*time.Second)
		run.peak, run.live = heap.finish()
		if err != nil {
			return err
		}
		run.took = app.restoreTime()
		n.Stop()
		return nil
	})
	return run, err
}
