package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
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

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
	ssproto "github.com/statesync/statesync/proto"
)

// The serving-latency scenario (issue 10, "Serving: consensus traffic waits
// behind chunks"): one serving node, N syncing peers pulling chunks from it
// at CometBFT's default connection rate, and one idle peer. The serving
// node also sends a small message every pingEvery on a channel of its own,
// declared like CometBFT's consensus vote channel (priority 7, send queue
// 100), to the idle peer and to one of the syncing peers; each message
// carries its send time and the receiver records the latency. The same
// load is served once by our Reactor and once by CometBFT v0.40's built-in
// reactor.
//
// The state is held in memory (kvapp's key-value mode), so a chunk load
// costs both servers a slice and the comparison is of the serving path and
// the channels, not of the app. The syncing peers are load generators, not restorers: each keeps
// servingWindow chunk requests in flight (CometBFT's 4 chunk fetchers),
// walking the snapshot's chunks in order from chunk 0 like every restorer
// of one snapshot, and reads every response at once. So both servers face
// the same requests, and what the latency shows is the serving side.

const (
	pingChannel   = byte(0xE0)
	pingEvery     = 10 * time.Millisecond
	servingWindow = 4
	servingWarmup = 2 * time.Second
	// servingTimeout re-asks a chunk whose answer did not come (a dropped
	// response), as a restorer's chunk timeout would.
	servingTimeout = 10 * time.Second
)

type servingCase struct {
	load    string // "requests" (load generators) or "restore" (CometBFT's restorers)
	rounds  int    // runs of each server, interleaved (ours, theirs, ours, ...), pooled
	peers   int
	chunk   int   // bytes
	size    int64 // bytes of state
	rate    int64 // per-connection rate, B/s
	measure time.Duration
}

// servingRun is one server's figures.
type servingRun struct {
	idle, syncing []time.Duration // ping latencies
	lost          int64           // pings the pinger could not queue
	bytes         int64           // chunk bytes received by the syncing peers while measuring
	took          time.Duration
}

type servingResult struct {
	servingCase
	ours, theirs servingRun
	// rounds in order, each round one run of each server back to back
	perRound [][2]servingRun
}

// pingDescriptor is the descriptor of the ping channel: like CometBFT's
// consensus VoteChannel.
func pingDescriptor() *p2p.ChannelDescriptor {
	return &p2p.ChannelDescriptor{
		ID: pingChannel, Priority: 7, SendQueueCapacity: 100,
		RecvMessageCapacity: 1024, MessageType: &ssproto.Message{},
	}
}

// loaderDescriptors are the chunk channels a syncing peer speaks.
func loaderDescriptors() []*p2p.ChannelDescriptor {
	return []*p2p.ChannelDescriptor{
		{ID: statesync.SnapshotChannel, Priority: 5, SendQueueCapacity: 10,
			RecvMessageCapacity: ssproto.SnapshotMsgSize, MessageType: &ssproto.Message{}},
		{ID: statesync.ChunkChannel, Priority: 3, SendQueueCapacity: 10,
			RecvMessageCapacity: ssproto.ChunkMsgSize, MessageType: &ssproto.Message{}},
	}
}

// latencies collects ping latencies while recording is on.
type latencies struct {
	mtx sync.Mutex
	on  bool
	d   []time.Duration
}

func (l *latencies) add(sent uint64) {
	d := time.Since(time.Unix(0, int64(sent)))
	l.mtx.Lock()
	defer l.mtx.Unlock()
	if l.on {
		l.d = append(l.d, d)
	}
}

func (l *latencies) record(on bool) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	l.on = on
}

func (l *latencies) take() []time.Duration {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return slices.Clone(l.d)
}

// loader keeps servingWindow chunk requests in flight to one server.
type loader struct {
	peer    p2p.Peer
	height  uint64
	chunks  uint32
	next    uint32
	mtx     sync.Mutex
	pending map[uint32]time.Time
	bytes   *atomic.Int64
	count   *atomic.Bool
}

func (l *loader) request() {
	l.mtx.Lock()
	i := l.next
	l.next = (l.next + 1) % l.chunks
	l.pending[i] = time.Now()
	l.mtx.Unlock()
	l.peer.TrySend(p2p.Envelope{ChannelID: statesync.ChunkChannel, Message: &ssproto.ChunkRequest{
		Height: l.height, Format: kvapp.Format, Index: i,
	}})
}

func (l *loader) onChunk(m *ssproto.ChunkResponse) {
	l.mtx.Lock()
	_, ok := l.pending[m.Index]
	delete(l.pending, m.Index)
	l.mtx.Unlock()
	if !ok {
		return
	}
	if l.count.Load() {
		l.bytes.Add(int64(len(m.Chunk)))
	}
	l.request()
}

// expire re-asks requests older than servingTimeout.
func (l *loader) expire(now time.Time) {
	l.mtx.Lock()
	var lost int
	for i, at := range l.pending {
		if now.Sub(at) > servingTimeout {
			delete(l.pending, i)
			lost++
		}
	}
	l.mtx.Unlock()
	for ; lost > 0; lost-- {
		l.request()
	}
}

// runServing measures both servers under the same load, c.rounds times
// each, interleaved so that a change in the machine's load during the run
// weighs on both alike; the rounds' samples are pooled.
func runServing(c servingCase, logger log.Logger) (res servingResult, err error) {
	res.servingCase = c
	once := func(ours bool) (servingRun, error) {
		return servingRun{}, fmt.Errorf("unknown -serving-load %q", c.load)
	}
	switch c.load {
	case "requests":
		// An in-memory state: loading a chunk costs a slice, for both
		// servers, so what differs is the serving path and the channels.
		app := kvapp.New(kvapp.Options{Keys: int(c.size >> 10), ValueSize: 1000, ChunkSize: c.chunk,
			Height: snapshotHeight, Seed: 11})
		once = func(ours bool) (servingRun, error) { return serveOnce(c, app, ours, logger) }
	case "restore":
		src, _, err := restoreSource(c)
		if err != nil {
			return res, err
		}
		once = func(ours bool) (servingRun, error) { return serveRestoreOnce(c, src, ours, logger) }
	}
	for i := 0; i < max(1, c.rounds); i++ {
		o, err := once(true)
		if err != nil {
			return res, fmt.Errorf("ours: %w", err)
		}
		res.ours.add(o)
		t, err := once(false)
		if err != nil {
			return res, fmt.Errorf("CometBFT's: %w", err)
		}
		res.theirs.add(t)
		res.perRound = append(res.perRound, [2]servingRun{o, t})
	}
	return res, nil
}

func (r *servingRun) add(o servingRun) {
	r.idle = append(r.idle, o.idle...)
	r.syncing = append(r.syncing, o.syncing...)
	r.lost += o.lost
	r.bytes += o.bytes
	r.took += o.took
}

// serverReactor builds the serving reactor: ours, or CometBFT's built-in.
func serverReactor(e *env, app abci.Application, ours bool, logger log.Logger) (p2p.Reactor, error) {
	conns := appConns(e, app)
	if !ours {
		r := cmtss.NewReactor(*cmtcfg.DefaultStateSyncConfig(), conns.Snapshot(), conns.Query(), cmtss.NopMetrics())
		r.SetLogger(logger.With("server", "theirs"))
		return r, nil
	}
	return statesync.NewReactor(statesync.DefaultConfig(), statesync.Deps{
		Snapshots: conns.Snapshot(), Query: conns.Query(), Logger: logger.With("server", "ours"),
	})
}

// servingNet is one serving node under load: its syncing peers (loaders),
// an idle peer, and the latencies the ping receivers record.
type servingNet struct {
	loaders            []*loader
	idlePeer, syncPeer p2p.Peer // the server's side of the two pinged peers
	idleLat, syncLat   latencies
	bytes              atomic.Int64
	counting           atomic.Bool
}

// pingProbe is a probe speaking chans that records the pings it gets in
// lat (if not nil) and hands chunk responses to onChunk (if not nil).
func pingProbe(name string, chans []*p2p.ChannelDescriptor, lat *latencies, onChunk func(*ssproto.ChunkResponse)) *p2ptest.Probe {
	return p2ptest.NewProbe(name, chans, func(ev p2p.Envelope) {
		switch m := ev.Message.(type) {
		case *ssproto.ChunkResponse:
			if onChunk != nil {
				onChunk(m)
			}
		case *ssproto.ParamsRequest:
			if lat != nil {
				lat.add(m.Height)
			}
		}
	})
}

// startServingNet starts the serving node (our Reactor or CometBFT's),
// the idle peer and c.peers loaders, all connected to the server.
func startServingNet(e *env, c servingCase, app *kvapp.App, ours bool, logger log.Logger) (*servingNet, error) {
	reactor, err := serverReactor(e, app, ours, logger)
	if err != nil {
		return nil, err
	}
	p2pCfg := p2ptest.Config(c.rate)
	n := &servingNet{}
	server, idle := startPinged(e, p2pCfg, reactor, n)
	n.idlePeer = server.Peer(idle.ID())

	snaps, err := app.ListSnapshots(context.Background(), &abci.RequestListSnapshots{})
	if err != nil || len(snaps.Snapshots) != 1 {
		return nil, fmt.Errorf("the serving app has no snapshot (%v)", err)
	}
	chunks := snaps.Snapshots[0].Chunks
	for i := 0; i < c.peers; i++ {
		l := &loader{height: snapshotHeight, chunks: chunks, pending: map[uint32]time.Time{}, bytes: &n.bytes, count: &n.counting}
		var lat *latencies
		if i == 0 {
			lat = &n.syncLat
		}
		probe := pingProbe("LOAD", append(loaderDescriptors(), pingDescriptor()), lat, l.onChunk)
		node := p2ptest.Start(e, p2pCfg, 2+i, map[string]p2p.Reactor{"LOAD": probe}, nil)
		p2ptest.Connect(e, node, server)
		l.peer = node.Peer(server.ID())
		if i == 0 {
			n.syncPeer = server.Peer(node.ID())
		}
		n.loaders = append(n.loaders, l)
	}
	if n.idlePeer == nil || n.syncPeer == nil {
		return nil, fmt.Errorf("the server lost its peers")
	}
	return n, nil
}

// pingLoop pings both peers every pingEvery and expires the loaders'
// lost requests, until stop is closed.
func (n *servingNet) pingLoop(stop <-chan struct{}, lost *atomic.Int64) {
	tick := time.NewTicker(pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			for _, p := range []p2p.Peer{n.idlePeer, n.syncPeer} {
				ping := &ssproto.ParamsRequest{Height: uint64(time.Now().UnixNano())}
				if !p.TrySend(p2p.Envelope{ChannelID: pingChannel, Message: ping}) {
					lost.Add(1)
				}
			}
			for _, l := range n.loaders {
				l.expire(now)
			}
		}
	}
}

// serveOnce runs the load on one server and measures it.
func serveOnce(c servingCase, app *kvapp.App, ours bool, logger log.Logger) (run servingRun, err error) {
	err = withEnv(func(e *env) error {
		n, err := startServingNet(e, c, app, ours, logger)
		if err != nil {
			return err
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var lost atomic.Int64
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.pingLoop(stop, &lost)
		}()
		for _, l := range n.loaders {
			for k := 0; k < servingWindow; k++ {
				l.request()
			}
		}
		time.Sleep(servingWarmup) // let the load reach its steady state
		n.idleLat.record(true)
		n.syncLat.record(true)
		n.counting.Store(true)
		lost.Store(0)
		start := time.Now()
		time.Sleep(c.measure)
		n.counting.Store(false)
		n.idleLat.record(false)
		n.syncLat.record(false)
		run.took = time.Since(start)
		close(stop)
		wg.Wait()
		run.idle, run.syncing = n.idleLat.take(), n.syncLat.take()
		run.lost, run.bytes = lost.Load(), n.bytes.Load()
		if len(run.idle) == 0 || len(run.syncing) == 0 {
			return fmt.Errorf("no ping arrived (idle %d, syncing %d)", len(run.idle), len(run.syncing))
		}
		return nil
	})
	return run, err
}

// percentile returns the p-th percentile (0..100) of d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func printServing(c config, rs []servingResult) {
	fmt.Printf("## Serving: another channel's latency under %d syncing peers (%s; ours vs CometBFT v0.40's built-in reactor)\n",
		rs[0].peers, map[string]string{"requests": "load generators", "restore": "restoring nodes"}[rs[0].load])
	fmt.Println()
	header := []string{"server", "peers", "chunk", "rate/conn", "idle p50 ms", "idle p99 ms", "syncing p50 ms",
		"syncing p99 ms", "served MB/s", "pings lost"}
	var rows [][]string
	for _, r := range rs {
		row := func(name string, x servingRun) []string {
			return []string{name, strconv.Itoa(r.peers), fmt.Sprintf("%d MB", r.chunk>>20),
				fmt.Sprintf("%.2f MB/s", float64(r.rate)/1e6),
				ms(percentile(x.idle, 50)), ms(percentile(x.idle, 99)),
				ms(percentile(x.syncing, 50)), ms(percentile(x.syncing, 99)),
				fmt.Sprintf("%.1f", float64(x.bytes)/1e6/x.took.Seconds()), strconv.FormatInt(x.lost, 10)}
		}
		rows = append(rows, row("ours", r.ours), row("CometBFT v0.40", r.theirs))
	}
	table(c.md, header, rows)
	for _, r := range rs {
		verdict := func(o, t time.Duration) string {
			if o <= t {
				return "met"
			}
			return "not met"
		}
		fmt.Printf("p99 ours/theirs: idle peer %.2f (%s), syncing peer %.2f (%s); target: ours at or below the built-in's.\n",
			float64(percentile(r.ours.idle, 99))/float64(percentile(r.theirs.idle, 99)),
			verdict(percentile(r.ours.idle, 99), percentile(r.theirs.idle, 99)),
			float64(percentile(r.ours.syncing, 99))/float64(percentile(r.theirs.syncing, 99)),
			verdict(percentile(r.ours.syncing, 99), percentile(r.theirs.syncing, 99)))
		if len(r.perRound) > 1 {
			fmt.Println(roundRatios("idle", r.perRound, func(x servingRun) []time.Duration { return x.idle }))
			fmt.Println(roundRatios("syncing", r.perRound, func(x servingRun) []time.Duration { return x.syncing }))
		}
	}
	fmt.Printf("A ping every %v from the serving node, on a channel declared like CometBFT's consensus vote\n", pingEvery)
	fmt.Println("channel (priority 7, send queue 100), to an idle peer and to a syncing peer; latency = queued to")
	if rs[0].load == "restore" {
		fmt.Println("received. Syncing peers: CometBFT v0.40's built-in reactor restoring the snapshot (the same")
		fmt.Printf("restorers for both servers, in a child process), measured from the end of discovery to the first\n")
		fmt.Printf("restore done; served MB/s = chunks applied by all restorers in that window. %d rounds per server,\n",
			rs[0].rounds)
		fmt.Println("interleaved, samples pooled. Serving node and idle peer in this process: CPU contention counts.")
	} else {
		fmt.Printf("received. Syncing peers keep %d chunk requests in flight each and read at once; %d rounds per\n",
			servingWindow, rs[0].rounds)
		fmt.Printf("server, interleaved, each %v measured after %v of warm-up, samples pooled. Everything in one\n",
			rs[0].measure, servingWarmup)
		fmt.Println("process: CPU contention counts.")
	}
	fmt.Println()
}

// roundRatios lists the p99 ratio ours/theirs of each round (the two
// servers' runs of a round are back to back, so they share the machine's
// state), their median, and in how many rounds ours was at or below.
func roundRatios(what string, rounds [][2]servingRun, lat func(servingRun) []time.Duration) string {
	var ratios []float64
	var parts []string
	atOrBelow := 0
	for _, rd := range rounds {
		o, t := percentile(lat(rd[0]), 99), percentile(lat(rd[1]), 99)
		if t <= 0 {
			continue
		}
		x := float64(o) / float64(t)
		ratios = append(ratios, x)
		parts = append(parts, fmt.Sprintf("%.2f", x))
		if o <= t {
			atOrBelow++
		}
	}
	if len(ratios) == 0 {
		return ""
	}
	sorted := append([]float64(nil), ratios...)
	sort.Float64s(sorted)
	med := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		med = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	return fmt.Sprintf("Per round, %s peer p99 ours/theirs: %s; median %.2f; ours at or below in %d of %d rounds.",
		what, strings.Join(parts, ", "), med, atOrBelow, len(ratios))
}
