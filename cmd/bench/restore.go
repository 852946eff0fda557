package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
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
	// isolate runs the serving peers in a child process.
	isolate bool
	// cmtServe serves with CometBFT v0.40's built-in reactor instead of ours.
	cmtServe bool
	// theirsFirst restores with CometBFT's reactor before ours.
	theirsFirst bool
}

// restoreRun is one reactor's restore.
type restoreRun struct {
	took       time.Duration // accepted offer to last chunk applied
	e2e        time.Duration // Sync called to Sync returned
	peak, live uint64        // heap growth during the restore (bytes)
	peersLeft  int           // peers still connected when Sync returned
	// firstReq is Sync called to the restore phase starting (ours): the
	// first chunk requests go out in the same step of the restore loop.
	firstReq time.Duration
	recv     int64 // chunk bytes received (ours: Progress().Bytes)
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
		appHash := srcApp(restoreCase{size: c.size, chunk: c.chunk}).AppHash()
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
		var servers []*p2p.NetAddress
		if c.isolate {
			addrs, stop, err := childServers(c)
			if err != nil {
				return err
			}
			e.Cleanup(stop)
			servers = addrs
		} else if c.cmtServe {
			servers = startCmtServers(e, c, logger)
		} else {
			servers = startServers(e, c, logger)
		}
		tmp, err := os.MkdirTemp("", "statesync-bench-")
		if err != nil {
			return err
		}
		e.Cleanup(func() { os.RemoveAll(tmp) })
		p2pCfg := p2ptest.Config(c.linkRate())

		oursRun := func() error {
			if !c.ours {
				return nil
			}
			if res.ours, err = restoreOurs(chain, servers, p2pCfg, tmp, logger); err != nil {
				return fmt.Errorf("ours: %w", err)
			}
			return nil
		}
		theirsRun := func() error {
			if !c.their {
				return nil
			}
			if res.theirs, err = restoreTheirs(chain, servers, p2pCfg, tmp, logger); err != nil {
				return fmt.Errorf("CometBFT's: %w", err)
			}
			return nil
		}
		first, second := oursRun, theirsRun
		if c.theirsFirst {
			first, second = theirsRun, oursRun
		}
		if err := first(); err != nil {
			return err
		}
		return second()
	})
	return res, err
}

// connectAll starts a node holding reactor and dials every server.
func connectAll(e *env, p2pCfg *cmtcfg.P2PConfig, reactor p2p.Reactor, servers []*p2p.NetAddress) *p2ptest.Node {
	n := p2ptest.Start(e, p2pCfg, 100, map[string]p2p.Reactor{"STATESYNC": reactor}, nil)
	for _, a := range servers {
		if err := n.Switch.DialPeerWithAddress(a); err != nil {
			e.Fatalf("dialling %s: %v", a, err)
		}
	}
	deadline := time.Now().Add(p2ptest.ConnectTimeout)
	for n.Switch.Peers().Size() < len(servers) {
		if time.Now().After(deadline) {
			e.Fatalf("connected to %d of %d servers", n.Switch.Peers().Size(), len(servers))
		}
		time.Sleep(time.Millisecond) // the switch has no connect event to wait on
	}
	return n
}

func restoreOurs(chain *chaingen.Chain, servers []*p2p.NetAddress, p2pCfg *cmtcfg.P2PConfig,
	tmp string, logger log.Logger,
) (run restoreRun, err error) {
	return restoreOursWith(chain, servers, p2pCfg, tmp, logger, func(cfg *statesync.Config) {
		cfg.DiscoveryTime = 500 * time.Millisecond
		cfg.Backfill = false
		experimentKnobs(cfg)
	})
}

// Environment variables set by the bench's flags, read by restorers in
// this process and in child processes.
const (
	envChildProfile = "STATESYNC_BENCH_CHILD_CPUPROFILE" // -child-cpuprofile
	envChunkWindow  = "STATESYNC_BENCH_CHUNK_WINDOW"     // -ours-chunk-window
	envMemoryBudget = "STATESYNC_BENCH_MEMORY_BUDGET"    // -ours-memory-budget
)

// experimentKnobs applies -ours-chunk-window and -ours-memory-budget.
func experimentKnobs(cfg *statesync.Config) {
	if w, err := strconv.Atoi(os.Getenv(envChunkWindow)); err == nil && w > 0 {
		cfg.ChunkWindow = w
	}
	if b, err := strconv.ParseInt(os.Getenv(envMemoryBudget), 10, 64); err == nil && b >= 0 {
		cfg.ChunkMemoryBudget = b
	}
}

// restoreOursWith restores with DefaultConfig changed by set.
func restoreOursWith(chain *chaingen.Chain, servers []*p2p.NetAddress, p2pCfg *cmtcfg.P2PConfig,
	tmp string, logger log.Logger, set func(*statesync.Config),
) (run restoreRun, err error) {
	err = withEnv(func(e *env) error {
		app := &kvapp.Timed{App: kvapp.New(kvapp.Options{})}
		conns := appConns(e, app)
		cfg := statesync.DefaultConfig()
		set(&cfg)
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
		first := watchFirstRequest(r)
		start := time.Now()
		_, err = r.Sync(ctx)
		run.e2e = time.Since(start)
		run.firstReq = first(start)
		run.recv = r.Progress().Bytes
		run.peersLeft = n.Switch.Peers().Size()
		run.peak, run.live = heap.finish()
		if err != nil {
			return err
		}
		run.took = app.RestoreTime()
		n.Stop() // disconnect from the servers before the next restorer
		return nil
	})
	return run, err
}

// watchFirstRequest records when r's Sync enters the restore phase (its
// loop sends the first chunk requests in the same step); the function it
// returns stops watching and gives that time after start (0 if never).
func watchFirstRequest(r *statesync.Reactor) func(start time.Time) time.Duration {
	ch, cancel := r.Subscribe()
	stop := make(chan struct{})
	got := make(chan time.Time, 1)
	go func() {
		for {
			select {
			case <-stop:
				got <- time.Time{}
				return
			case p := <-ch:
				if p.Phase == statesync.PhaseRestore {
					got <- p.Time
					return
				}
			}
		}
	}()
	return func(start time.Time) time.Duration {
		close(stop)
		at := <-got
		cancel()
		if at.IsZero() {
			return 0
		}
		return at.Sub(start)
	}
}

func restoreTheirs(chain *chaingen.Chain, servers []*p2p.NetAddress, p2pCfg *cmtcfg.P2PConfig,
	tmp string, logger log.Logger,
) (run restoreRun, err error) {
	err = withEnv(func(e *env) error {
		app := &kvapp.Timed{App: kvapp.New(kvapp.Options{})}
		conns := appConns(e, app)
		cfg := *cmtcfg.DefaultStateSyncConfig()
		cfg.TempDir = tmp
		r := cmtss.NewReactor(cfg, conns.Snapshot(), conns.Query(), cmtss.NopMetrics())
		r.SetLogger(logger.With("node", "theirs"))
		n := connectAll(e, p2pCfg, r, servers)
		heap := sampleHeap()
		// 5 s is the shortest discovery CometBFT accepts (shorter becomes 25 s);
		// timing starts at the accepted offer, so it is not counted.
		// CometBFT's Sync has no context: bound it here (on a hang the
		// command fails and exits, taking the goroutine with it).
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, _, err := r.Sync(chainProvider{chain}, 5*time.Second)
			done <- err
		}()
		var err error
		select {
		case err = <-done:
			run.e2e = time.Since(start)
		case <-time.After(30 * time.Minute):
			err = errors.New("CometBFT's Sync did not return within 30 minutes")
		}
		run.peersLeft = n.Switch.Peers().Size()
		run.peak, run.live = heap.finish()
		if err != nil {
			return err
		}
		run.took = app.RestoreTime()
		n.Stop()
		return nil
	})
	return run, err
}
