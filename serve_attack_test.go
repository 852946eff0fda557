package statesync

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
	ssproto "github.com/statesync/statesync/proto"
)

// The serving-side attacks of issue 10 ("slow reader", "request flooder"),
// each on real MConnections against a serving Reactor with its default
// serving limits. Each test logs one line in the form
//
//	attack="<name>" completed=<bool> time=<duration> alone=<duration> heap_growth_mib=<float> punished=<bool> throttled=<bool>
//
// (serveAttackReport.log) for the attacker table of RELIABILITY.md:
// completed means the honest peer was served despite the attacker; time is
// how long the honest peer's requests took under attack, alone the same
// requests to a fresh server with no attacker; heap growth is the peak
// growth of the process's heap objects during the attack; punished means
// the attacker was disconnected for cause, throttled that its requests or
// responses were held back or dropped and counted.

// serveAttackReport is the outcome of one serving-side attack.
type serveAttackReport struct {
	name        string
	completed   bool
	took, alone time.Duration
	heapGrowth  uint64 // bytes
	punished    bool
	throttled   bool
}

func (r serveAttackReport) String() string {
	return fmt.Sprintf("attack=%q completed=%t time=%s alone=%s heap_growth_mib=%.1f punished=%t throttled=%t",
		r.name, r.completed, r.took.Round(time.Millisecond), r.alone.Round(time.Millisecond),
		float64(r.heapGrowth)/(1<<20), r.punished, r.throttled)
}

func (r serveAttackReport) log(t *testing.T) {
	t.Helper()
	t.Log(r.String())
}

// heapPeak samples the heap every few milliseconds until stopped and
// returns the peak growth of heap objects above the baseline.
func heapPeak(t *testing.T) (stop func() uint64) {
	t.Helper()
	runtime.GC()
	read := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	base := read()
	var peak atomic.Uint64
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			if h := read(); h > base && h-base > peak.Load() {
				peak.Store(h - base)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop = func() uint64 {
		once.Do(func() { close(done); <-exited })
		return peak.Load()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// serveFixture is a serving node (our Reactor over a kvapp snapshot) and a
// way to add requesting peers to it over real MConnections (net.Pipe, so
// that a peer that stops reading stalls the server's writes at once, with
// no kernel buffer in between).
type serveFixture struct {
	t       *testing.T
	app     *kvapp.App
	reactor *Reactor
	reg     *prometheus.Registry
	node    *p2ptest.Node
	height  uint64
	chunks  uint32
	peers   int
}

// newServeFixture starts the serving node. clock, if set, drives the
// Reactor's serving budgets and stall timing (nil: the real clock).
func newServeFixture(t *testing.T, chunkSize, nChunks int, clock *fakeClock) *serveFixture {
	t.Helper()
	app := kvapp.New(kvapp.Options{Keys: nChunks * chunkSize / 1024, ValueSize: 1000, ChunkSize: chunkSize, Height: 10})
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "test")
	require.NoError(t, err)
	conns := newAppConns(t, app)
	r, err := NewReactor(testConfig(), Deps{Snapshots: conns.Snapshot(), Query: conns.Query(), Metrics: m})
	require.NoError(t, err)
	if clock != nil {
		r.serveLim = newServeLimiter(r.cfg, clock.now)
	}
	f := &serveFixture{t: t, app: app, reactor: r, reg: reg, height: 10}
	f.node = p2ptest.Start(t, p2ptest.Config(0), 0, map[string]p2p.Reactor{"STATESYNC": r}, nil)
	snaps, err := r.recentSnapshots(syncCtx(t))
	require.NoError(t, err)
	require.Len(t, snaps, 1)
	f.chunks = snaps[0].Chunks
	return f
}

// peer starts a node holding a probe that speaks our channels, connects it
// to the server over a pipe and returns the probe's side of the server.
func (f *serveFixture) peer(onReceive func(p2p.Envelope)) p2p.Peer {
	f.t.Helper()
	f.peers++
	probe := p2ptest.NewProbe("PROBE", f.reactor.GetChannels(), onReceive)
	n := p2ptest.Start(f.t, p2ptest.Config(0), f.peers, map[string]p2p.Reactor{"PROBE": probe}, nil)
	p2ptest.ConnectPipe(f.t, f.node, n)
	p := n.Peer(f.node.ID())
	require.NotNil(f.t, p)
	return p
}

func (f *serveFixture) metric(name string) float64 {
	return metricValue(f.t, f.reg, "test_statesync_"+name, "")
}

func (f *serveFixture) chunkRequest(i int) p2p.Envelope {
	return p2p.Envelope{ChannelID: ChunkChannel, Message: &ssproto.ChunkRequest{
		Height: f.height, Format: kvapp.Format, Index: uint32(i) % f.chunks,
	}}
}

// slowReaderBound is how long the honest peer may wait for its chunk while
// four peers that never read keep every serving worker busy. Before
// responses went out with TrySend, each blocked worker held its chunk for
// CometBFT's full send timeout (10 s), and so did the honest request.
const slowReaderBound = 5 * time.Second

// honestPeer connects a peer that fetches chunks one at a time.
func (f *serveFixture) honestPeer() func(indices ...int) (ok bool, took time.Duration) {
	got := make(chan *ssproto.ChunkResponse, 1)
	p := f.peer(func(e p2p.Envelope) {
		if m, ok := e.Message.(*ssproto.ChunkResponse); ok {
			select {
			case got <- m:
			default: // not asked for
			}
		}
	})
	return func(indices ...int) (bool, time.Duration) {
		start := time.Now()
		for _, i := range indices {
			require.True(f.t, p.Send(f.chunkRequest(i)))
			select {
			case m := <-got:
				if m.Missing || m.Index != uint32(i)%f.chunks {
					return false, time.Since(start)
				}
			case <-time.After(3 * slowReaderBound):
				return false, time.Since(start)
			}
		}
		return true, time.Since(start)
	}
}

// eventually polls cond until it holds or d passes, and reports which.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polling a metric: there is no event to wait on
	}
	return true
}

// runSlowReaders: attackers peers ask for chunks and never read what they
// are sent (their receive routine blocks on the first message), then an
// honest peer asks for one chunk. Then the serving budgets' clock jumps
// past stallPunish, and the slow readers should be disconnected.
func runSlowReaders(t *testing.T, attackers int) serveAttackReport {
	rep := serveAttackReport{name: "slow reader"}
	clock := newFakeClock()
	f := newServeFixture(t, 256<<10, 8, clock)
	heap := heapPeak(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	const perAttacker = 128
	for a := 0; a < attackers; a++ {
		p := f.peer(func(p2p.Envelope) { <-release })
		for i := 0; i < perAttacker; i++ {
			require.True(t, p.Send(f.chunkRequest(i)))
		}
	}
	// Every slow reader's send queue is full: responses to them are being
	// dropped. (Before TrySend, this is where every worker was stuck in a
	// blocking Send, and nothing was counted.)
	waitFor(t, "the slow readers' send queues to fill", func() bool {
		return f.metric("responses_dropped_total") >= float64(attackers)
	})
	rep.completed, rep.took = f.honestPeer()(3)
	// Time passes for the serving budgets: every stallBackoff each slow
	// reader gets another chance to take a response, and fails.
	punished := func() bool { return f.metric("peers_punished_total") >= float64(attackers) }
	for i := 0; attackers > 0 && i < 4*int(stallPunish/stallBackoff) && !rep.punished; i++ {
		clock.advance(stallBackoff + time.Millisecond)
		rep.punished = eventually(50*time.Millisecond, punished)
	}
	rep.heapGrowth = heap()
	rep.throttled = f.metric("responses_dropped_total")+f.metric("requests_throttled_total") > 0
	return rep
}

// TestServeSlowReadersCannotMonopoliseWorkers: four peers that never read
// cannot delay an honest peer's chunk beyond a small bound; the responses
// their full send queues cannot take are dropped and counted, and once
// they have taken nothing for stallPunish they are disconnected.
func TestServeSlowReadersCannotMonopoliseWorkers(t *testing.T) {
	rep := runSlowReaders(t, 4)
	rep.alone = runSlowReaders(t, 0).took
	rep.log(t)
	require.True(t, rep.completed, "the honest peer got no chunk")
	require.Less(t, rep.took, slowReaderBound, "the slow readers delayed the honest peer")
	require.True(t, rep.throttled, "no response to a slow reader was dropped and counted")
	require.True(t, rep.punished, "the slow readers were not disconnected")
}

// runRequestFlooder: one peer sends 4096 chunk requests as fast as its
// connection takes them (32 times its queue cap) while an honest peer
// fetches every chunk of the snapshot, one at a time. Without flood, the
// honest peer alone.
func runRequestFlooder(t *testing.T, flood bool) serveAttackReport {
	rep := serveAttackReport{name: "request flooder"}
	f := newServeFixture(t, 64<<10, 16, nil)
	heap := heapPeak(t)
	honest := f.honestPeer()
	all := make([]int, f.chunks)
	for i := range all {
		all[i] = i
	}
	if !flood {
		rep.completed, rep.took = honest(all...)
		return rep
	}
	flooder := f.peer(nil)
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		for i := 0; i < 4096; i++ {
			if !flooder.Send(f.chunkRequest(i)) {
				return // disconnected
			}
		}
	}()
	rep.completed, rep.took = honest(all...)
	<-floodDone
	waitFor(t, "the flooder disconnected", func() bool { return !flooder.IsRunning() })
	rep.heapGrowth = heap()
	rep.punished = f.metric("peers_punished_total") > 0
	rep.throttled = f.metric("requests_dropped_total")+f.metric("requests_throttled_total") > 0
	return rep
}

// TestServeRequestFlooderPunished: a peer sending far more requests than
// its queue cap is disconnected for cause; an honest peer asking at the
// same time gets every chunk.
func TestServeRequestFlooderPunished(t *testing.T) {
	rep := runRequestFlooder(t, true)
	rep.alone = runRequestFlooder(t, false).took
	rep.log(t)
	require.True(t, rep.completed, "the honest peer was not served")
	require.True(t, rep.punished, "the flooder was not punished")
	require.True(t, rep.throttled)
}
