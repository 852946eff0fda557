package statesync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/p2p"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	"github.com/cosmos/gogoproto/proto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	ssproto "github.com/statesync/statesync/proto"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mtx sync.Mutex
	t   time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	c.t = c.t.Add(d)
}

func TestServeLimiterChunkBudget(t *testing.T) {
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.ServeChunkRate = 1000
	l := newServeLimiter(cfg, clk.now)
	require.True(t, l.allowChunk("a"))
	l.chargeChunk("a", 1500) // one request may overdraw: the size is known after loading
	require.False(t, l.allowChunk("a"), "in debt")
	require.True(t, l.allowChunk("b"), "budgets are per peer")
	clk.advance(400 * time.Millisecond)
	require.False(t, l.allowChunk("a"), "still 100 bytes in debt")
	clk.advance(200 * time.Millisecond)
	require.True(t, l.allowChunk("a"))
	clk.advance(time.Hour)
	require.True(t, l.allowChunk("a"))
	l.chargeChunk("a", 1001)
	require.False(t, l.allowChunk("a"), "the burst is one second's worth, not an hour's")

	// A peer whose send queue was full is held back for stallBackoff.
	clk.advance(time.Hour)
	require.NoError(t, l.stall("a"))
	require.False(t, l.allowChunk("a"))
	clk.advance(stallBackoff)
	require.True(t, l.allowChunk("a"))

	// One that takes no response for stallPunish is reported, once; a
	// delivered response starts the count again.
	clk.advance(stallPunish - 2*stallBackoff) // since the first stall: just under stallPunish
	require.NoError(t, l.stall("a"))
	l.delivered("a")
	clk.advance(stallPunish)
	require.NoError(t, l.stall("a"))
	clk.advance(stallPunish)
	err := l.stall("a")
	require.ErrorIs(t, err, ErrPeerMisbehaved)
	require.NoError(t, l.stall("a"))
}

func TestServeLimiterFlood(t *testing.T) {
	clk := newFakeClock()
	cfg := DefaultConfig()
	l := newServeLimiter(cfg, clk.now)
	limit := floodFactor * cfg.ServeQueuePerPeer

	// An honest requester at the largest backfill window, halving it at
	// each timeout, is refused fewer times than the flood limit.
	for w := maxBackfillWindow; w > 0; w /= 2 {
		for i := 0; i < w; i++ {
			require.NoError(t, l.refused("honest"))
		}
		clk.advance(DefaultLightBlockTimeout)
	}
	// Refusals spread over time never add up to a flood.
	for i := 0; i < 3*limit; i++ {
		require.NoError(t, l.refused("slow"))
		if i%(limit/2) == 0 {
			clk.advance(floodWindow + time.Millisecond)
		}
	}
	// A flood is reported once.
	var errs int
	for i := 0; i < 2*limit; i++ {
		if err := l.refused("flooder"); err != nil {
			require.ErrorIs(t, err, ErrPeerMisbehaved)
			errs++
		}
	}
	require.Equal(t, 1, errs)
	l.removePeer("flooder")
	require.NotContains(t, l.peers, p2p.ID("flooder"))
}

func TestByteLRU(t *testing.T) {
	c := newByteLRU[int, string](10)
	c.put(1, "a", 4)
	c.put(2, "b", 4)
	_, ok := c.get(1) // 1 is now the most recent
	require.True(t, ok)
	c.put(3, "c", 4) // evicts 2
	_, ok = c.get(2)
	require.False(t, ok)
	_, ok = c.get(1)
	require.True(t, ok)
	c.put(4, "big", 11) // larger than the budget: not kept, nothing evicted
	_, ok = c.get(4)
	require.False(t, ok)
	require.Equal(t, 8, c.used)
	c.put(1, "a2", 6) // replacing an entry re-counts its size
	require.Equal(t, 10, c.used)
	v, _ := c.get(1)
	require.Equal(t, "a2", v)
}

// TestChunkCacheMergesLoads: peers asking for the same chunk at the same
// time cause one load; a chunk is kept once asked for again; errors and
// empty chunks are not cached.
func TestChunkCacheMergesLoads(t *testing.T) {
	c := newChunkCache(1 << 20)
	var loads atomic.Int64
	gate := make(chan struct{})
	fn := func() ([]byte, error) {
		loads.Add(1)
		<-gate
		return []byte("chunk"), nil
	}
	k := chunkKey{height: 1, format: 1, index: 2}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _, err := c.load(context.Background(), k, fn)
			require.NoError(t, err)
			require.Equal(t, "chunk", string(v))
		}()
	}
	waitFor(t, "the other 15 waiting on the first load", func() bool {
		c.mtx.Lock()
		defer c.mtx.Unlock()
		l := c.inflight[k]
		return l != nil && l.waiters == 15
	})
	close(gate)
	wg.Wait()
	require.EqualValues(t, 1, loads.Load())
	// Asked for again: loaded and now kept; the third time it is a hit.
	_, hit, _ := c.load(context.Background(), k, fn)
	require.False(t, hit)
	require.EqualValues(t, 2, loads.Load())
	_, hit, _ = c.load(context.Background(), k, fn)
	require.True(t, hit)
	require.EqualValues(t, 2, loads.Load())

	// A chunk asked for once is not kept.
	once := chunkKey{index: 9}
	_, _, err := c.load(context.Background(), once, func() ([]byte, error) { return []byte("x"), nil })
	require.NoError(t, err)
	_, ok := c.lru.get(once)
	require.False(t, ok)

	failing := chunkKey{index: 3}
	_, _, err = c.load(context.Background(), failing, func() ([]byte, error) { return nil, errors.New("disk") })
	require.Error(t, err)
	_, hit, err = c.load(context.Background(), failing, func() ([]byte, error) { return nil, nil })
	require.NoError(t, err)
	require.False(t, hit, "an error is not cached")
	_, hit, _ = c.load(context.Background(), failing, func() ([]byte, error) { return nil, nil })
	require.False(t, hit, "a missing chunk is not cached")
}

// costlyStore is a state store whose LoadValidators costs cost of the
// fake clock, as CometBFT's does far from a validator-set checkpoint
// (up to 100 000 proposer-priority increments: tens of milliseconds with
// 150 validators), and counts its calls.
type costlyStore struct {
	sm.Store
	clock *fakeClock
	cost  time.Duration
	loads atomic.Int64
}

func (s *costlyStore) LoadValidators(h int64) (*types.ValidatorSet, error) {
	s.loads.Add(1)
	s.clock.advance(s.cost)
	return s.Store.LoadValidators(h)
}

// recordingRouter records what is sent; TrySend always succeeds.
type recordingRouter struct {
	mtx  sync.Mutex
	sent map[p2p.ID][]proto.Message
}

func (r *recordingRouter) Send(id p2p.ID, _ byte, msg proto.Message) bool {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	if r.sent == nil {
		r.sent = map[p2p.ID][]proto.Message{}
	}
	r.sent[id] = append(r.sent[id], msg)
	return true
}

func (r *recordingRouter) TrySend(id p2p.ID, ch byte, msg proto.Message) bool {
	return r.Send(id, ch, msg)
}

func (r *recordingRouter) Punish(p2p.ID, error) {}

func (r *recordingRouter) count(id p2p.ID) int {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return len(r.sent[id])
}

// newLightServer is a started Reactor serving a 50-block chain from
// stores whose LoadValidators costs cost on clk (tune edits its config), sending through a
// recording router.
func newLightServer(t *testing.T, clk *fakeClock, cost time.Duration, tune func(*Config)) (*Reactor, *costlyStore, *recordingRouter, *prometheus.Registry) {
	t.Helper()
	chain, err := chaingen.New(chaingen.Options{ChainID: "serve", Height: 50, Validators: 4,
		StartTime: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	ss := &costlyStore{Store: sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{}), clock: clk, cost: cost}
	bs := store.NewBlockStore(dbm.NewMemDB())
	require.NoError(t, chain.Populate(bs, ss.Store, 1, 50))
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "test")
	require.NoError(t, err)
	conns := newAppConns(t, kvapp.New(kvapp.Options{}))
	cfg := testConfig()
	if tune != nil {
		tune(&cfg)
	}
	r, err := NewReactor(cfg, Deps{Snapshots: conns.Snapshot(), StateStore: ss, BlockStore: bs, Metrics: m})
	require.NoError(t, err)
	r.serveLim = newServeLimiter(r.cfg, clk.now)
	rt := &recordingRouter{}
	r.AttachRouter(rt)
	require.NoError(t, r.Start())
	t.Cleanup(func() { _ = r.Stop() })
	return r, ss, rt, reg
}

// TestServeLightBlocksCached: sixteen peers asking for the same height
// (a snapshot's h+1, say) cost one LoadValidators.
func TestServeLightBlocksCached(t *testing.T) {
	r, ss, rt, _ := newLightServer(t, newFakeClock(), 0, nil)
	for i := 0; i < 16; i++ {
		id := p2p.ID(rune('a' + i))
		r.PeerUp(id, nil)
		r.Deliver(id, LightBlockChannel, &ssproto.LightBlockRequest{Height: 21})
		waitFor(t, "the light block", func() bool { return rt.count(id) == 1 })
		lb := rt.sent[id][0].(*ssproto.LightBlockResponse).LightBlock
		require.NotNil(t, lb)
		require.EqualValues(t, 21, lb.SignedHeader.Header.Height)
	}
	require.EqualValues(t, 1, ss.loads.Load())
}

// TestServeLightBlockBudget: a peer asking for light blocks whose
// validator sets are expensive to load is served only its load-time
// budget's worth per second; the rest waits in its queue, unloaded and
// counted, while another peer is served.
func TestServeLightBlockBudget(t *testing.T) {
	clk := newFakeClock()
	// One request at a time per peer, so that the fake clock charges
	// each load to its own request.
	r, ss, rt, reg := newLightServer(t, clk, 60*time.Millisecond, func(c *Config) { c.ServePerPeer = 1 })
	r.PeerUp("flooder", nil)
	r.PeerUp("honest", nil)
	const asked = 40
	for h := 1; h <= asked; h++ {
		r.Deliver("flooder", LightBlockChannel, &ssproto.LightBlockRequest{Height: uint64(h)})
	}
	// The budget is 250 ms a second; each load costs 60 ms of the clock,
	// during which 15 ms of budget come back: 45 ms net, so 6 are served
	// (the sixth overdraws), then the flooder's next request is held.
	throttled := func() float64 { return metricValue(t, reg, "test_statesync_requests_throttled_total", "") }
	waitFor(t, "the flooder held back", func() bool { return throttled() == 1 })
	require.Equal(t, 6, rt.count("flooder"))
	r.Deliver("honest", LightBlockChannel, &ssproto.LightBlockRequest{Height: 45})
	waitFor(t, "the honest peer served", func() bool { return rt.count("honest") == 1 })
	require.Equal(t, 6, rt.count("flooder"), "the flooder was served over its budget")
	require.EqualValues(t, 7, ss.loads.Load())

	// A second later the flooder has budget again.
	clk.advance(time.Second)
	waitFor(t, "the flooder served again", func() bool { return rt.count("flooder") > 6 })
}

// TestServeLimiterForgetsDepartedPeers: serving a peer that is gone (or
// was never announced) leaves no budget record behind, so churning peer
// IDs cannot grow the limiter.
func TestServeLimiterForgetsDepartedPeers(t *testing.T) {
	r, _, rt, _ := newLightServer(t, newFakeClock(), 0, nil)
	records := func() int {
		r.serveLim.mtx.Lock()
		defer r.serveLim.mtx.Unlock()
		return len(r.serveLim.peers)
	}
	for i := 0; i < 50; i++ {
		id := p2p.ID(fmt.Sprintf("ghost%d", i))
		r.Deliver(id, LightBlockChannel, &ssproto.LightBlockRequest{Height: 3})
		waitFor(t, "the answer", func() bool { return rt.count(id) == 1 })
	}
	waitFor(t, "no records left", func() bool { return records() == 0 })
	r.PeerUp("stays", nil)
	r.Deliver("stays", LightBlockChannel, &ssproto.LightBlockRequest{Height: 3})
	waitFor(t, "the answer", func() bool { return rt.count("stays") == 1 })
	r.PeerDown("stays")
	waitFor(t, "no records left", func() bool { return records() == 0 })
}

// TestLightCacheMergesLoads: concurrent requests for one height share one
// load, and only the loader is told it loaded.
func TestLightCacheMergesLoads(t *testing.T) {
	c := newLightCache(1 << 20)
	gate := make(chan struct{})
	var loads atomic.Int64
	fn := func() (*cmtproto.LightBlock, error) {
		loads.Add(1)
		<-gate
		return &cmtproto.LightBlock{}, nil
	}
	var wg sync.WaitGroup
	var loaders atomic.Int64
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lb, loaded, err := c.load(7, fn)
			require.NoError(t, err)
			require.NotNil(t, lb)
			if loaded {
				loaders.Add(1)
			}
		}()
	}
	waitFor(t, "the first load", func() bool { return loads.Load() == 1 })
	close(gate)
	wg.Wait()
	require.EqualValues(t, 1, loads.Load())
	require.EqualValues(t, 1, loaders.Load())
	_, loaded, _ := c.load(7, fn)
	require.False(t, loaded, "cached")

	// "Not available" is not cached.
	_, loaded, _ = c.load(8, func() (*cmtproto.LightBlock, error) { return nil, nil })
	require.True(t, loaded)
	_, loaded, _ = c.load(8, func() (*cmtproto.LightBlock, error) { return nil, nil })
	require.True(t, loaded)
}
