package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	cmtss "github.com/cometbft/cometbft/statesync"

	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// The serving-latency scenario with restoring nodes as the syncing peers
// (-serving-load restore): each syncing peer is CometBFT v0.40's built-in
// reactor restoring the snapshot for real (discovery, its 4 chunk
// fetchers, its chunk queue on disk, the app applying and hashing every
// chunk), the same restorers whichever server serves. Latencies are
// recorded from the end of discovery until the first restore finishes, so
// that all syncing peers are pulling chunks throughout.

// memoApp serves snapshot chunks from memory once generated: chunk loads
// cost both servers a map lookup (the serving app is in streaming mode so
// that the restoring apps keep only a digest).
type memoApp struct {
	*kvapp.App
	mtx    sync.Mutex
	chunks map[uint32][]byte
}

func (m *memoApp) LoadSnapshotChunk(ctx context.Context, req *abci.RequestLoadSnapshotChunk) (*abci.ResponseLoadSnapshotChunk, error) {
	m.mtx.Lock()
	c, ok := m.chunks[req.Chunk]
	m.mtx.Unlock()
	if ok {
		return &abci.ResponseLoadSnapshotChunk{Chunk: c}, nil
	}
	resp, err := m.App.LoadSnapshotChunk(ctx, req)
	if err == nil && len(resp.Chunk) > 0 {
		m.mtx.Lock()
		m.chunks[req.Chunk] = resp.Chunk
		m.mtx.Unlock()
	}
	return resp, err
}

// cometDiscovery is the shortest discovery CometBFT's Sync accepts.
const cometDiscovery = 5 * time.Second

func serveRestoreOnce(c servingCase, src *memoApp, chain *chaingen.Chain, ours bool, logger log.Logger) (run servingRun, err error) {
	err = withEnv(func(e *env) error {
		reactor, err := serverReactor(e, src, ours, logger)
		if err != nil {
			return err
		}
		p2pCfg := p2ptest.Config(c.rate)
		cfg := *cmtcfg.DefaultStateSyncConfig()
		if cfg.TempDir, err = os.MkdirTemp("", "statesync-bench-serving-"); err != nil {
			return err
		}
		e.Cleanup(func() { os.RemoveAll(cfg.TempDir) })
		n := &servingNet{}
		server, idle := startPinged(e, p2pCfg, reactor, n)
		n.idlePeer = server.Peer(idle.ID())
		apps := make([]*kvapp.App, c.peers)
		restorers := make([]*cmtss.Reactor, c.peers)
		for i := range restorers {
			apps[i] = kvapp.New(kvapp.Options{})
			conns := appConns(e, apps[i])
			restorers[i] = cmtss.NewReactor(cfg, conns.Snapshot(), conns.Query(), cmtss.NopMetrics())
			var lat *latencies
			if i == 0 {
				lat = &n.syncLat
			}
			node := p2ptest.Start(e, p2pCfg, 2+i, map[string]p2p.Reactor{
				"STATESYNC": restorers[i], "PING": pingProbe("PING", []*p2p.ChannelDescriptor{pingDescriptor()}, lat, nil),
			}, nil)
			p2ptest.Connect(e, node, server)
			if i == 0 {
				n.syncPeer = server.Peer(node.ID())
			}
		}
		if n.idlePeer == nil || n.syncPeer == nil {
			return errors.New("the server lost its peers")
		}
		return n.measureRestores(c, restorers, apps, chain, &run)
	})
	return run, err
}

// startPinged starts the serving node (reactor plus the pinger) and the
// idle peer, connected.
func startPinged(e *env, p2pCfg *cmtcfg.P2PConfig, reactor p2p.Reactor, n *servingNet) (server, idle *p2ptest.Node) {
	pinger := p2ptest.NewProbe("PING", []*p2p.ChannelDescriptor{pingDescriptor()}, nil)
	server = p2ptest.Start(e, p2pCfg, 0, map[string]p2p.Reactor{"STATESYNC": reactor, "PING": pinger}, nil)
	idle = p2ptest.Start(e, p2pCfg, 1, map[string]p2p.Reactor{
		"PING": pingProbe("PING", []*p2p.ChannelDescriptor{pingDescriptor()}, &n.idleLat, nil),
	}, nil)
	p2ptest.Connect(e, idle, server)
	return server, idle
}

// measureRestores runs every restorer's Sync, pings while they pull
// chunks, and waits for all of them.
func (n *servingNet) measureRestores(c servingCase, restorers []*cmtss.Reactor, apps []*kvapp.App,
	chain *chaingen.Chain, run *servingRun,
) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lost atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.pingLoop(stop, &lost)
	}()
	defer func() { close(stop); wg.Wait() }()

	done := make(chan error, len(restorers))
	for _, r := range restorers {
		go func() {
			_, _, err := r.Sync(chainProvider{chain}, cometDiscovery)
			done <- err
		}()
	}
	time.Sleep(cometDiscovery + time.Second) // discovery, then the first chunks
	applied := func() (n int) {
		for _, a := range apps {
			n += a.Stats().ChunksApplied
		}
		return n
	}
	n.idleLat.record(true)
	n.syncLat.record(true)
	start, before := time.Now(), applied()
	timeout := time.After(5 * time.Minute)
	var errs []error
	select {
	case err := <-done:
		errs = append(errs, err)
	case <-timeout:
		return errors.New("no restore finished within 5 minutes")
	}
	n.idleLat.record(false)
	n.syncLat.record(false)
	run.took = time.Since(start)
	run.bytes = int64(applied()-before) * int64(c.chunk)
	run.idle, run.syncing, run.lost = n.idleLat.take(), n.syncLat.take(), lost.Load()
	for len(errs) < len(restorers) {
		select {
		case err := <-done:
			errs = append(errs, err)
		case <-timeout:
			return errors.New("the restores did not finish within 5 minutes")
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("a restore failed: %w", err)
	}
	if len(run.idle) == 0 || len(run.syncing) == 0 {
		return fmt.Errorf("no ping arrived (idle %d, syncing %d)", len(run.idle), len(run.syncing))
	}
	return nil
}

// restoreSource is the served snapshot and its chain.
func restoreSource(c servingCase) (*memoApp, *chaingen.Chain, error) {
	app := kvapp.New(kvapp.Options{StreamBytes: c.size, ChunkSize: c.chunk, Height: snapshotHeight, Seed: 11})
	hash := app.AppHash()
	chain, err := chaingen.New(chaingen.Options{
		ChainID: "bench", Height: snapshotHeight + 3, Validators: 4,
		StartTime: time.Now().Add(-time.Hour),
		AppHash: func(h int64) []byte {
			if h == snapshotHeight+1 {
				return hash
			}
			return nil
		},
	})
	if err != nil {
		return nil, nil, err
	}
	return &memoApp{App: app, chunks: map[uint32][]byte{}}, chain, nil
}
