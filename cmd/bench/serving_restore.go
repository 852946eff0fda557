package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
// chunk), the same restorers whichever server serves, in a child process
// (see restorersChildFlag). Latencies are recorded from the end of
// discovery until the first restore finishes, so that all syncing peers
// are pulling chunks throughout.

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

// The restorers run in a child process (this binary with
// restorersChildFlag), as they would on other machines: in the serving
// node's process their work (decrypting 16 chunk streams, writing every
// chunk to disk on their receive goroutines, hashing) took about two thirds
// of its CPU time against a few per cent for serving, and the idle peer's
// latency measured how Go's scheduler shared the process among them, not
// the serving node. The serving node, its pinger and the idle peer stay in
// this process; the child reports the syncing peer's latencies and the
// chunks applied in the measured window. Protocol on the child's stdout:
// "SYNCPEER <id>", "READY" (every restorer connected), "START" (discovery
// over, recording), "STOP <chunks applied> <ns>" (first restore done),
// "LAT <ns>" per ping the syncing peer got while recording, "END ok" or
// "END <error>".
const restorersChildFlag = "-serving-restorers-child"

func serveRestoreOnce(c servingCase, src *memoApp, ours bool, logger log.Logger) (run servingRun, err error) {
	err = withEnv(func(e *env) error {
		reactor, err := serverReactor(e, src, ours, logger)
		if err != nil {
			return err
		}
		n := &servingNet{}
		server, idle := startPinged(e, p2ptest.Config(c.rate), reactor, n)
		n.idlePeer = server.Peer(idle.ID())
		ch, err := startRestorersChild(c, server.Addr)
		if err != nil {
			return err
		}
		e.Cleanup(ch.stop)
		id, err := ch.expect("SYNCPEER ")
		if err != nil {
			return err
		}
		if _, err := ch.expect("READY"); err != nil {
			return err
		}
		if n.syncPeer = server.Peer(p2p.ID(id)); n.idlePeer == nil || n.syncPeer == nil {
			return errors.New("the server lost its peers")
		}
		return n.measureChild(ch, &run)
	})
	return run, err
}

// measureChild pings while the child's restorers pull chunks and collects
// the figures of the window the child reports.
func (n *servingNet) measureChild(ch *restorersProc, run *servingRun) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lost atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.pingLoop(stop, &lost)
	}()
	defer func() { close(stop); wg.Wait() }()
	if _, err := ch.expect("START"); err != nil {
		return err
	}
	n.idleLat.record(true)
	lost.Store(0)
	line, err := ch.expect("STOP ")
	n.idleLat.record(false)
	if err != nil {
		return err
	}
	var applied int64
	var took time.Duration
	if _, err := fmt.Sscanf(line, "%d %d", &applied, &took); err != nil {
		return fmt.Errorf("child: %q: %w", line, err)
	}
	run.took, run.bytes = took, applied
	run.idle, run.lost = n.idleLat.take(), lost.Load()
	for {
		line, err := ch.next()
		if err != nil {
			return err
		}
		if v, ok := strings.CutPrefix(line, "LAT "); ok {
			d, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("child: %q: %w", line, err)
			}
			run.syncing = append(run.syncing, time.Duration(d))
			continue
		}
		if v, ok := strings.CutPrefix(line, "END "); ok {
			if v != "ok" {
				return fmt.Errorf("restorers: %s", v)
			}
			break
		}
	}
	if len(run.idle) == 0 || len(run.syncing) == 0 {
		return fmt.Errorf("no ping arrived (idle %d, syncing %d)", len(run.idle), len(run.syncing))
	}
	return nil
}

// restorersProc is the running child.
type restorersProc struct {
	stop  func()
	lines chan string
}

// childWait bounds every wait for the child's next report.
const childWait = 6 * time.Minute

func (p *restorersProc) next() (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			return "", errors.New("the restorers' process exited early")
		}
		return l, nil
	case <-time.After(childWait):
		return "", errors.New("the restorers' process said nothing for 6 minutes")
	}
}

// expect skips lines up to one starting with prefix and returns the rest
// of it.
func (p *restorersProc) expect(prefix string) (string, error) {
	for {
		l, err := p.next()
		if err != nil {
			return "", fmt.Errorf("waiting for %q: %w", prefix, err)
		}
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v, nil
		}
	}
}

func startRestorersChild(c servingCase, server *p2p.NetAddress) (*restorersProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, restorersChildFlag, strconv.Itoa(c.peers), strconv.FormatInt(c.size, 10),
		strconv.Itoa(c.chunk), strconv.FormatInt(c.rate, 10), server.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &restorersProc{lines: make(chan string, 1024)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	p.stop = func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		go func() { // drain what the child still prints
			for range p.lines { //nolint:revive // draining
			}
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	return p, nil
}

// restorersChild is the child's main: args are peers, size, chunk, rate
// and the serving node's address. It restores from that node with
// c.peers CometBFT restorers and reports as described at
// restorersChildFlag, then waits for its stdin to close.
func restorersChild(args []string) error {
	if len(args) != 5 {
		return errors.New("want: peers size chunk rate server")
	}
	var v [4]int64
	for i, a := range args[:4] {
		x, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return err
		}
		v[i] = x
	}
	c := servingCase{peers: int(v[0]), size: v[1], chunk: int(v[2]), rate: v[3]}
	server, err := p2p.NewNetAddressString(args[4])
	if err != nil {
		return err
	}
	_, chain, err := restoreSource(c) // the same snapshot, so the same app hash
	if err != nil {
		return err
	}
	err = withEnv(func(e *env) error {
		restorers, apps, lat, err := startRestorers(e, c, server)
		if err != nil {
			return err
		}
		return runRestores(c, restorers, apps, chain, lat)
	})
	if err != nil {
		fmt.Printf("END %v\n", err)
	} else {
		fmt.Println("END ok")
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// startRestorers starts c.peers CometBFT restorers, each dialing server;
// the first one's ping receiver records into lat.
func startRestorers(e *env, c servingCase, server *p2p.NetAddress) ([]*cmtss.Reactor, []*kvapp.App, *latencies, error) {
	p2pCfg := p2ptest.Config(c.rate)
	cfg := *cmtcfg.DefaultStateSyncConfig()
	var err error
	if cfg.TempDir, err = os.MkdirTemp("", "statesync-bench-serving-"); err != nil {
		return nil, nil, nil, err
	}
	e.Cleanup(func() { os.RemoveAll(cfg.TempDir) })
	lat := &latencies{}
	apps := make([]*kvapp.App, c.peers)
	restorers := make([]*cmtss.Reactor, c.peers)
	for i := range restorers {
		apps[i] = kvapp.New(kvapp.Options{})
		conns := appConns(e, apps[i])
		restorers[i] = cmtss.NewReactor(cfg, conns.Snapshot(), conns.Query(), cmtss.NopMetrics())
		var l *latencies
		if i == 0 {
			l = lat
		}
		node := p2ptest.Start(e, p2pCfg, 2+i, map[string]p2p.Reactor{
			"STATESYNC": restorers[i], "PING": pingProbe("PING", []*p2p.ChannelDescriptor{pingDescriptor()}, l, nil),
		}, nil)
		if i == 0 {
			fmt.Printf("SYNCPEER %s\n", node.ID())
		}
		if err := node.Switch.DialPeerWithAddress(server); err != nil {
			return nil, nil, nil, err
		}
		deadline := time.Now().Add(30 * time.Second)
		for !node.Connected(server.ID) {
			if time.Now().After(deadline) {
				return nil, nil, nil, errors.New("a restorer did not connect")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	fmt.Println("READY")
	return restorers, apps, lat, nil
}

// runRestores runs every restorer's Sync, records the syncing peer's
// latencies from the end of discovery to the first restore done, and
// waits for all of them.
func runRestores(c servingCase, restorers []*cmtss.Reactor, apps []*kvapp.App, chain *chaingen.Chain, lat *latencies) error {
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
	lat.record(true)
	fmt.Println("START")
	start, before := time.Now(), applied()
	timeout := time.After(5 * time.Minute)
	var errs []error
	select {
	case err := <-done:
		errs = append(errs, err)
	case <-timeout:
		return errors.New("no restore finished within 5 minutes")
	}
	lat.record(false)
	fmt.Printf("STOP %d %d\n", int64(applied()-before)*int64(c.chunk), time.Since(start))
	for _, d := range lat.take() {
		fmt.Printf("LAT %d\n", d)
	}
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
