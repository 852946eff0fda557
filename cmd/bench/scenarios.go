package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	cmtss "github.com/cometbft/cometbft/statesync"
	"github.com/cometbft/cometbft/store"
	"github.com/cosmos/gogoproto/proto"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/p2ptest"
	ssproto "github.com/statesync/statesync/proto"
)

// The scenarios of issue 8: end to end (Sync called to Sync returned) with
// restorers fed by CometBFT v0.40's own serving reactor, and ours under a
// slow, a silent and a withholding peer. Each point is run `repeats` times
// and reported as min / median / max.

const repeats = 3

// benchChain builds the chain whose snapshot c's servers hold.
func benchChain(c restoreCase) (*chaingen.Chain, error) {
	return benchChainHash(srcApp(restoreCase{size: c.size, chunk: c.chunk}).AppHash())
}

// benchChainHash builds the chain whose snapshot has appHash (computing it
// generates the whole snapshot: a restoring child is given it instead).
func benchChainHash(appHash []byte) (*chaingen.Chain, error) {
	return chaingen.New(chaingen.Options{
		ChainID: "bench", Height: snapshotHeight + 3, Validators: 4,
		StartTime: time.Now().Add(-time.Hour),
		AppHash: func(h int64) []byte {
			if h == snapshotHeight+1 {
				return appHash
			}
			return nil
		},
	})
}

// startCmtServers starts c.peers serving nodes running CometBFT v0.40's
// built-in reactor (its serving side), on one shared source app.
func startCmtServers(e *env, c restoreCase, logger log.Logger) []*p2p.NetAddress {
	src := srcApp(c)
	conns := appConns(e, src)
	p2pCfg := p2ptest.Config(c.linkRate())
	addrs := make([]*p2p.NetAddress, c.peers)
	for i := range addrs {
		r := cmtss.NewReactor(*cmtcfg.DefaultStateSyncConfig(), conns.Snapshot(), conns.Query(), cmtss.NopMetrics())
		r.SetLogger(logger.With("server", i))
		addrs[i] = p2ptest.Start(e, p2pCfg, i, map[string]p2p.Reactor{"STATESYNC": r}, nil).Addr
	}
	return addrs
}

// e2eResult is one end-to-end point: `repeats` runs of each reactor.
type e2eResult struct {
	peers        int
	oursServe    bool // served by our Reactor (else CometBFT's)
	ours, theirs []time.Duration
	oursFetch    []time.Duration
	firstReq     []time.Duration // ours: Sync called to the first chunk requests
}

// runE2E restores c from servers running CometBFT's reactor, with our
// Reactor at its default config (discovery_time 15 s as a maximum) and
// with CometBFT's at its 5 s minimum discovery, `repeats` times each.
func runE2E(c restoreCase, logger log.Logger) (res e2eResult, err error) {
	res.peers, res.oursServe = c.peers, !c.cmtServe
	err = withEnv(func(e *env) error {
		chain, err := benchChain(c)
		if err != nil {
			return err
		}
		set := func(*statesync.Config) {}
		var servers []*p2p.NetAddress
		if c.cmtServe {
			servers = startCmtServers(e, c, logger)
		} else {
			// Our servers also serve light blocks: Sync would backfill
			// (their block stores are empty); compare the restore only.
			servers = startServers(e, c, logger)
			set = func(cfg *statesync.Config) { cfg.Backfill = false }
		}
		tmp, err := os.MkdirTemp("", "statesync-bench-")
		if err != nil {
			return err
		}
		e.Cleanup(func() { os.RemoveAll(tmp) })
		p2pCfg := p2ptest.Config(c.linkRate())
		for i := 0; i < repeats; i++ {
			ours, err := restoreOursWith(chain, servers, p2pCfg, tmp, logger, set)
			if err != nil {
				return fmt.Errorf("ours: %w", err)
			}
			theirs, err := restoreTheirs(chain, servers, p2pCfg, tmp, logger)
			if err != nil {
				return fmt.Errorf("CometBFT's: %w", err)
			}
			res.ours, res.theirs = append(res.ours, ours.e2e), append(res.theirs, theirs.e2e)
			res.oursFetch = append(res.oursFetch, ours.took)
			res.firstReq = append(res.firstReq, ours.firstReq)
		}
		return nil
	})
	return res, err
}

// faultRouter makes a serving Reactor misbehave on the chunk channel.
type faultRouter struct {
	sw     *p2p.Switch
	mtx    sync.Mutex
	sent   int
	mode   string // "silent": answers 10 chunk requests, then nothing; "pinger": withholds, re-sends "missing"
	held   map[uint32]*ssproto.ChunkResponse
	holder p2p.ID
}

func (f *faultRouter) send(peer p2p.ID, ch byte, msg proto.Message) bool {
	p := f.sw.Peers().Get(peer)
	return p != nil && p.Send(p2p.Envelope{ChannelID: ch, Message: msg})
}

func (f *faultRouter) Send(peer p2p.ID, ch byte, msg proto.Message) bool {
	m, ok := msg.(*ssproto.ChunkResponse)
	if !ok {
		return f.send(peer, ch, msg)
	}
	f.mtx.Lock()
	defer f.mtx.Unlock()
	f.sent++
	switch {
	case f.mode == "silent" && f.sent <= 10:
		return f.send(peer, ch, m)
	case f.mode == "pinger":
		f.held[m.Index], f.holder = m, peer
	}
	return true
}

func (f *faultRouter) Punish(peer p2p.ID, reason error) {
	if p := f.sw.Peers().Get(peer); p != nil {
		f.sw.StopPeerForError(p, reason)
	}
}

// ping re-sends "missing" for every withheld chunk every 300 ms until ctx
// ends.
func (f *faultRouter) ping(ctx context.Context) {
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mtx.Lock()
		var out []*ssproto.ChunkResponse
		for _, m := range f.held {
			out = append(out, &ssproto.ChunkResponse{Height: m.Height, Format: m.Format, Index: m.Index, Missing: true})
		}
		peer := f.holder
		f.mtx.Unlock()
		for _, m := range out {
			f.send(peer, statesync.ChunkChannel, m)
		}
	}
}

// startFaultServers starts c.peers serving nodes running our Reactor;
// server 0 has the fault: "slow" (0.5 MB/s), "silent", "pinger", or none.
func startFaultServers(e *env, c restoreCase, fault string, logger log.Logger) []*p2p.NetAddress {
	src := srcApp(c)
	conns := appConns(e, src)
	addrs := make([]*p2p.NetAddress, c.peers)
	for i := range addrs {
		r, err := statesync.NewReactor(statesync.DefaultConfig(), statesync.Deps{
			Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{}),
			BlockStore: store.NewBlockStore(dbm.NewMemDB()),
			Logger:     logger.With("server", i),
		})
		if err != nil {
			e.Fatalf("server reactor: %v", err)
		}
		rate := c.linkRate()
		if i == 0 && fault == "slow" {
			rate = 500_000
		}
		n := p2ptest.Start(e, p2ptest.Config(rate), i, map[string]p2p.Reactor{"STATESYNC": r}, nil)
		if i == 0 && (fault == "silent" || fault == "pinger") {
			f := &faultRouter{sw: n.Switch, mode: fault, held: map[uint32]*ssproto.ChunkResponse{}}
			r.AttachRouter(f)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); f.ping(ctx) }()
			e.Cleanup(func() { cancel(); <-done })
		}
		addrs[i] = n.Addr
	}
	return addrs
}

// faultResult is one fault scenario: `repeats` restores by our Reactor.
type faultResult struct {
	name      string
	fetch     []time.Duration // accepted offer to last chunk applied
	punished  int             // runs in which the faulty peer was disconnected
	peers     int
	bytes     int64
	faultPeer bool
}

// runFault restores c with our Reactor (discovery 500 ms, no backfill)
// from servers where server 0 has fault, `repeats` times.
func runFault(c restoreCase, name, fault string, logger log.Logger) (res faultResult, err error) {
	res.name, res.peers, res.bytes, res.faultPeer = name, c.peers, c.size, fault != ""
	err = withEnv(func(e *env) error {
		chain, err := benchChain(c)
		if err != nil {
			return err
		}
		servers := startFaultServers(e, c, fault, logger)
		tmp, err := os.MkdirTemp("", "statesync-bench-")
		if err != nil {
			return err
		}
		e.Cleanup(func() { os.RemoveAll(tmp) })
		for i := 0; i < repeats; i++ {
			run, err := restoreOurs(chain, servers, p2ptest.Config(c.linkRate()), tmp, logger)
			if err != nil {
				return err
			}
			res.fetch = append(res.fetch, run.took)
			if run.peersLeft < c.peers {
				res.punished++
			}
		}
		return nil
	})
	return res, err
}

// stats returns min, median and max.
func stats(ds []time.Duration) (lo, mid, hi time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0], s[len(s)/2], s[len(s)-1]
}

// ratios returns min / median / max of a[i]/b[i].
func ratios(a, b []time.Duration) string {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i].Seconds() / b[i].Seconds()
	}
	sort.Float64s(r)
	return fmt.Sprintf("%.2f / %.2f / %.2f", r[0], r[len(r)/2], r[len(r)-1])
}

func mmm(ds []time.Duration) string {
	lo, mid, hi := stats(ds)
	return fmt.Sprintf("%.1f / %.1f / %.1f", lo.Seconds(), mid.Seconds(), hi.Seconds())
}

func mmm2(ds []time.Duration) string {
	lo, mid, hi := stats(ds)
	return fmt.Sprintf("%.2f / %.2f / %.2f", lo.Seconds(), mid.Seconds(), hi.Seconds())
}

func printE2E(c config, rs []e2eResult) {
	fmt.Println("## End to end: Sync called to state returned")
	fmt.Println()
	header := []string{"served by", "peers", "ours s (min / median / max)", "built-in at 5 s discovery s", "built-in / ours", "ours fetch s",
		"ours first request s (≤ 1 s)", "target"}
	targets := map[int]string{4: "≥ 1.8×", 8: "≥ 2.5×", 16: "≥ 3×"}
	var rows [][]string
	for _, r := range rs {
		t := targets[r.peers]
		if t == "" {
			t = "—"
		}
		server := "CometBFT"
		if r.oursServe {
			server = "ours"
		}
		rows = append(rows, []string{server, strconv.Itoa(r.peers), mmm(r.ours), mmm(r.theirs), ratios(r.theirs, r.ours),
			mmm(r.oursFetch), mmm2(r.firstReq), t})
	}
	table(c.md, header, rows)
	size := faultSize >> 20
	if c.sizeMB > 0 {
		size = c.sizeMB
	}
	fmt.Printf("%d runs per point (min / median / max); ratio per run. %d MB snapshot, 1 MB chunks, %.2f MB/s per\n",
		repeats, size, float64(c.rate)/1e6)
	fmt.Println("connection. Ours: DefaultConfig (discovery_time 15 s as a maximum: it ends when every peer has")
	fmt.Println("answered). Built-in: CometBFT v0.40's Sync with 5 s discovery, its shortest. Served by CometBFT: the")
	fmt.Println("serving nodes run its built-in reactor (no light-block channel, so our Sync skips backfill); served by")
	fmt.Println("ours: our Reactor, with backfill off in ours (the servers' block stores are empty). First request:")
	fmt.Println("Sync called to the restore phase starting (its loop sends the first chunk requests in that step).")
	fmt.Println()
}

func printFaults(c config, rs []faultResult) {
	fmt.Println("## One faulty peer of 4 (ours; served by our Reactor)")
	fmt.Println()
	var base []time.Duration
	for _, r := range rs {
		if !r.faultPeer && r.peers == 3 {
			base = r.fetch
		}
	}
	header := []string{"scenario", "fetch s (min / median / max)", "÷ 3 fast peers alone", "faulty peer punished", "target"}
	targets := map[string]string{
		"1 slow (0.5 MB/s) of 4": "≤ 1.1×", "1 silent of 4": "≤ 3 fast + 1 chunk_request_timeout",
		"1 withholding pinger of 4": "≤ 2×, punished",
	}
	var rows [][]string
	for _, r := range rs {
		ratio, punished, t := "—", "—", targets[r.name]
		if base != nil {
			ratio = ratios(r.fetch, base)
		}
		if r.faultPeer {
			punished = fmt.Sprintf("%d of %d runs", r.punished, len(r.fetch))
		}
		if t == "" {
			t = "—"
		}
		rows = append(rows, []string{r.name, mmm(r.fetch), ratio, punished, t})
	}
	table(c.md, header, rows)
	fmt.Printf("%d runs each; fetch = accepted offer to last chunk applied; %d MB, 1 MB chunks, %.2f MB/s per\n",
		repeats, rs[0].bytes>>20, float64(c.rate)/1e6)
	fmt.Println("connection. Silent: answers 10 chunk requests, then nothing, staying connected. Withholding")
	fmt.Println("pinger: answers no chunk request and re-sends \"missing\" for each every 300 ms.")
	fmt.Println()
}

// faultSize is the snapshot size of the e2e and fault runs (-size changes it).
const faultSize = 100 << 20

// runScenarios runs the e2e and faults sections.
func runScenarios(c config, logger log.Logger) error {
	size := int64(faultSize)
	if c.sizeMB > 0 {
		size = int64(c.sizeMB) << 20
	}
	if c.only["e2e"] {
		var rs []e2eResult
		for _, cmt := range []bool{true, false} {
			for _, peers := range c.e2ePeers {
				fmt.Fprintf(os.Stderr, "e2e: %d peers (CometBFT's serving reactor: %v), %d MB ...\n", peers, cmt, size>>20)
				r, err := runE2E(restoreCase{peers: peers, chunk: 1 << 20, size: size, rate: c.rate, cmtServe: cmt}, logger)
				if err != nil {
					return fmt.Errorf("e2e: %w", err)
				}
				rs = append(rs, r)
			}
		}
		printE2E(c, rs)
	}
	if c.only["faults"] {
		var rs []faultResult
		for _, s := range []struct {
			name, fault string
			peers       int
		}{
			{"3 fast peers alone", "", 3},
			{"4 fast peers", "", 4},
			{"1 slow (0.5 MB/s) of 4", "slow", 4},
			{"1 silent of 4", "silent", 4},
			{"1 withholding pinger of 4", "pinger", 4},
		} {
			fmt.Fprintf(os.Stderr, "faults: %s, %d MB ...\n", s.name, size>>20)
			r, err := runFault(restoreCase{peers: s.peers, chunk: 1 << 20, size: size, rate: c.rate}, s.name, s.fault, logger)
			if err != nil {
				return fmt.Errorf("faults %s: %w", s.name, err)
			}
			rs = append(rs, r)
		}
		printFaults(c, rs)
	}
	return nil
}
