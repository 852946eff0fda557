package statesync

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
	ssproto "github.com/statesync/statesync/proto"
)

// chunkFilter turns a serving Reactor into a misbehaving peer: every chunk
// response it would send goes through filter instead, which may drop,
// change or repeat it (send forwards one message to the peer). The rest of
// the Reactor (snapshot advertisements) is honest.
type chunkFilter struct {
	inner  Router
	filter func(peer p2p.ID, m *ssproto.ChunkResponse, send func(*ssproto.ChunkResponse))
}

func (c *chunkFilter) Send(peer p2p.ID, chID byte, msg proto.Message) bool {
	if m, ok := msg.(*ssproto.ChunkResponse); ok {
		c.filter(peer, m, func(out *ssproto.ChunkResponse) { c.inner.Send(peer, chID, out) })
		return true
	}
	return c.inner.Send(peer, chID, msg)
}

func (c *chunkFilter) Punish(peer p2p.ID, reason error) { c.inner.Punish(peer, reason) }

// misbehave installs filter on server i of tn.
func misbehave(tn *testNet, i int, filter func(peer p2p.ID, m *ssproto.ChunkResponse, send func(*ssproto.ChunkResponse))) {
	n := tn.servers[i]
	n.reactor.AttachRouter(&chunkFilter{inner: switchRouter{sw: n.p2p.Switch}, filter: filter})
}

// pinger re-sends, every interval until the test ends, a "missing" answer
// for each chunk it withheld: the hostile peer of issue 8, which looks busy
// and never delivers.
type pinger struct {
	mtx      sync.Mutex
	withheld map[uint32]*ssproto.ChunkResponse
	peer     p2p.ID
}

func startPinger(t *testing.T, send func(p2p.ID, *ssproto.ChunkResponse), every time.Duration) *pinger {
	p := &pinger{withheld: make(map[uint32]*ssproto.ChunkResponse)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			p.mtx.Lock()
			var out []*ssproto.ChunkResponse
			for _, m := range p.withheld {
				out = append(out, &ssproto.ChunkResponse{Height: m.Height, Format: m.Format, Index: m.Index, Missing: true})
			}
			peer := p.peer
			p.mtx.Unlock()
			for _, m := range out {
				send(peer, m)
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

// hostileTestNet is three servers at 16 kB chunks with a long chunk request
// timeout, so that only the scheduler's own deadlines and strikes can get
// a restore past a misbehaving server 0 in time.
func hostileTestNet(t *testing.T, server func(i int, app *kvapp.App)) *testNet {
	return newTestNet(t, netOpts{keys: 400, chunkSize: 16 << 10, server: server,
		cfg: func(c *Config) {
			c.ChunkRequestTimeout = 45 * time.Second
			c.DiscoveryTimeout = 50 * time.Second
		}})
}

// holdApplyUntilPunished pauses the restore at chunk 1 until server i is
// disconnected (or 20 s pass), so the test does not depend on the restore
// outlasting the misbehaviour: fetching goes on meanwhile.
func holdApplyUntilPunished(t *testing.T, tn *testNet, i int) {
	id := tn.servers[i].p2p.ID()
	tn.fresh.app.OnApply(func(index uint32) {
		if index == 1 {
			waitDisconnected(tn, id)
		}
	})
}

// waitDisconnected waits until peer id is no longer connected to the fresh
// node, it stops, or 20 s pass; it reports whether the fresh node is still
// running. It polls: the switch has no event for a peer's removal.
func waitDisconnected(tn *testNet, id p2p.ID) bool {
	deadline := time.Now().Add(20 * time.Second)
	for tn.fresh.p2p.Switch.Peers().Has(id) && time.Now().Before(deadline) {
		select {
		case <-tn.fresh.p2p.Switch.Quit():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
	return true
}

// holdHonestUntilPunished makes every server but i hold back each chunk
// from index 2 on until server i is disconnected from the fresh node (or
// 20 s pass). Under load, server i's advertisement can arrive after the
// honest servers have served every chunk, and a peer that is never asked
// for a chunk cannot misbehave: held back, the chunks still needed go to
// server i once it joins (unassigned ones at once, the others when their
// deadlines pass or the applier's next chunk is hedged).
func holdHonestUntilPunished(t *testing.T, tn *testNet, i int) {
	t.Helper()
	id := tn.servers[i].p2p.ID()
	for j := range tn.servers {
		if j == i {
			continue
		}
		misbehave(tn, j, func(_ p2p.ID, m *ssproto.ChunkResponse, send func(*ssproto.ChunkResponse)) {
			if m.Index < 2 || waitDisconnected(tn, id) {
				send(m)
			}
		})
	}
}

// requirePunished waits until peer i is disconnected from the fresh node
// and checks the others stay connected.
func requirePunished(t *testing.T, tn *testNet, i int) {
	t.Helper()
	waitFor(t, "hostile peer disconnected", func() bool {
		return !tn.fresh.p2p.Switch.Peers().Has(tn.servers[i].p2p.ID())
	})
	for j := range tn.servers {
		if j != i {
			require.True(t, tn.fresh.p2p.Switch.Peers().Has(tn.servers[j].p2p.ID()), "honest server %d kept", j)
		}
	}
}

// TestWithholdingPingerIsPunished: a peer advertises the snapshot,
// withholds every chunk it is asked for and keeps re-sending "missing" for
// them. Before issue 8 each ping pushed its deadlines back and the restore
// never finished; now the repeated answers are strikes, the peer is
// punished, and the honest peers finish the restore.
func TestWithholdingPingerIsPunished(t *testing.T) {
	tn := hostileTestNet(t, nil)
	hostile := tn.servers[0]
	p := startPinger(t, func(peer p2p.ID, m *ssproto.ChunkResponse) {
		switchRouter{sw: hostile.p2p.Switch}.Send(peer, ChunkChannel, m)
	}, 50*time.Millisecond)
	misbehave(tn, 0, func(peer p2p.ID, m *ssproto.ChunkResponse, _ func(*ssproto.ChunkResponse)) {
		p.mtx.Lock()
		defer p.mtx.Unlock()
		p.peer = peer
		p.withheld[m.Index] = m
	})
	holdApplyUntilPunished(t, tn, 0)
	holdHonestUntilPunished(t, tn, 0)
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 40*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
	requirePunished(t, tn, 0)
}

// TestDuplicateResenderIsPunished: a peer answers its first request, then
// withholds every other chunk and re-sends that first chunk again and
// again. Before issue 8 every duplicate counted as activity; now each is a
// strike and the peer is punished.
func TestDuplicateResenderIsPunished(t *testing.T) {
	tn := hostileTestNet(t, nil)
	var (
		mtx   sync.Mutex
		first *ssproto.ChunkResponse
	)
	misbehave(tn, 0, func(_ p2p.ID, m *ssproto.ChunkResponse, send func(*ssproto.ChunkResponse)) {
		mtx.Lock()
		if first == nil {
			first = m
		}
		dup := first
		mtx.Unlock()
		for i := 0; i < 2; i++ {
			send(dup)
		}
	})
	holdApplyUntilPunished(t, tn, 0)
	holdHonestUntilPunished(t, tn, 0)
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 40*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
	requirePunished(t, tn, 0)
}

// TestSilentPeerDoesNotHoldTheRestore: a peer answers a few requests and
// then nothing, staying connected. With chunk_request_timeout at 45 s the
// restore used to wait three timeouts (window 4 -> 2 -> 1) for the chunks
// it held; now its deadlines follow its measured rate and the chunk the
// applier needs is asked of another peer, so the restore finishes well
// within one timeout. A silent peer is not punished (it may be busy).
func TestSilentPeerDoesNotHoldTheRestore(t *testing.T) {
	tn := hostileTestNet(t, nil)
	var (
		mtx  sync.Mutex
		sent int
	)
	misbehave(tn, 0, func(_ p2p.ID, m *ssproto.ChunkResponse, send func(*ssproto.ChunkResponse)) {
		mtx.Lock()
		sent++
		n := sent
		mtx.Unlock()
		if n <= 3 {
			send(m)
		}
	})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 40*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
	require.True(t, tn.fresh.p2p.Switch.Peers().Has(tn.servers[0].p2p.ID()), "a silent peer is not punished")
}

// TestSlowPeerIsNotTheTail: one server takes 20 s to read each chunk (the
// others answer at once). It is honest and stays connected, but the
// chunks the applier needs are not left waiting on it: the ones it was
// given before its rate was known are asked of the fast peers as soon as
// they are overdue, so the restore completes before the slow peer has
// served a single chunk. Before issue 8 the applier waited for every
// chunk of its window.
func TestSlowPeerIsNotTheTail(t *testing.T) {
	tn := hostileTestNet(t, func(i int, app *kvapp.App) {
		if i == 0 {
			app.Misbehave(func(k *kvapp.Knobs) { k.LoadDelay = 20 * time.Second })
		}
	})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 40*time.Second)
	require.NoError(t, res.err)
	require.Zero(t, tn.servers[0].app.Stats().Loads, "no chunk of the slow peer was waited for")
	requireRestored(t, tn, tn.height)
	require.True(t, tn.fresh.p2p.Switch.Peers().Has(tn.servers[0].p2p.ID()), "a slow peer is not punished")
}
