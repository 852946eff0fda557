package statesync

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
	ssproto "github.com/statesync/statesync/proto"
)

// ---------------------------------------------------------------------------
// fakeNet: scripted peers for one Reactor under test.

var allChannels = []byte{SnapshotChannel, ChunkChannel, LightBlockChannel, ParamsChannel}

// fakePeer serves a chain, misbehaving on demand.
type fakePeer struct {
	chain     *chaingen.Chain
	base, top int64                   // light blocks served (0: the whole chain)
	delay     time.Duration           // added to every answer
	drop      bool                    // never answers light-block requests
	impostor  *chaingen.Chain         // serves this chain's blocks instead (same chain ID, other hashes)
	params    *types.ConsensusParams  // params served (nil: the chain's)
	noParams  bool                    // never answers params requests
	channels  []byte                  // advertised (nil: all four)
	forge     func(*types.LightBlock) // changes each light block served (a copy)
}

// fakeNet is the network of a Reactor under test: fakePeers on a
// p2ptest.MemRouter, each answering after its delay on its own link.
// Punish disconnects the peer (PeerDown), as a switch would.
type fakeNet struct {
	rt *p2ptest.MemRouter
}

func newFakeNet(t testing.TB, r *Reactor) *fakeNet {
	n := &fakeNet{rt: p2ptest.NewMemRouter(r, 1)}
	t.Cleanup(n.rt.Close)
	return n
}

// add connects a peer (a reconnection if id is connected).
func (n *fakeNet) add(id p2p.ID, p *fakePeer) {
	chans := p.channels
	if chans == nil {
		chans = allChannels
	}
	n.rt.Connect(id, chans, p.script, p2ptest.Link{Delay: p.delay})
}

// remove disconnects a peer.
func (n *fakeNet) remove(id p2p.ID) { n.rt.Disconnect(id) }

func (n *fakeNet) punishedPeers() map[p2p.ID]error { return n.rt.Punished() }

// requestsTo counts the messages the node tried to send id, on any
// channel, the peer connected or not.
func (n *fakeNet) requestsTo(id p2p.ID) int { return n.rt.Tried(id) }

// script answers light-block and params requests as p says (a
// p2ptest.Script); snapshots and chunks are not served.
func (p *fakePeer) script(_ byte, msg proto.Message) []p2ptest.Msg {
	switch m := msg.(type) {
	case *ssproto.LightBlockRequest:
		if !p.drop {
			return []p2ptest.Msg{{Ch: LightBlockChannel, Msg: p.lightBlock(int64(m.Height))}}
		}
	case *ssproto.ParamsRequest:
		if p.noParams {
			return nil
		}
		params := p.chain.Params()
		if p.params != nil {
			params = *p.params
		}
		return []p2ptest.Msg{{Ch: ParamsChannel,
			Msg: &ssproto.ParamsResponse{Height: m.Height, ConsensusParams: params.ToProto()}}}
	}
	return nil
}

func (p *fakePeer) lightBlock(h int64) *ssproto.LightBlockResponse {
	base, top := p.base, p.top
	if base == 0 {
		base = p.chain.InitialHeight()
	}
	if top == 0 {
		top = p.chain.Height()
	}
	src := p.chain
	if p.impostor != nil {
		src = p.impostor
	}
	lb := src.LightBlock(h)
	if h < base || h > top || lb == nil {
		return &ssproto.LightBlockResponse{}
	}
	if p.forge != nil {
		p.forge(lb)
	}
	pb, err := lb.ToProto()
	if err != nil {
		panic(err)
	}
	return &ssproto.LightBlockResponse{LightBlock: pb}
}

// ---------------------------------------------------------------------------
// A node to backfill.

type bfNode struct {
	r       *Reactor
	net     *fakeNet
	blockDB dbm.DB
	stateDB dbm.DB
}

func newBackfillNode(t testing.TB, chain *chaingen.Chain, cfg func(*Config)) *bfNode {
	t.Helper()
	return newBackfillNodeOn(t, chain, cfg, dbm.NewMemDB(), dbm.NewMemDB())
}

// newBackfillNodeOn is newBackfillNode over given databases (a restart).
func newBackfillNodeOn(t testing.TB, chain *chaingen.Chain, cfg func(*Config), blockDB, stateDB dbm.DB) *bfNode {
	t.Helper()
	conns := newAppConns(t, kvapp.New(kvapp.Options{}))
	n := &bfNode{blockDB: blockDB, stateDB: stateDB}
	c := testConfig()
	c.LightBlockTimeout = 300 * time.Millisecond
	if cfg != nil {
		cfg(&c)
	}
	r, err := NewReactor(c, Deps{
		Snapshots: conns.Snapshot(), Query: conns.Query(),
		StateStore: sm.NewStore(n.stateDB, sm.StoreOptions{}), BlockStore: store.NewBlockStore(n.blockDB),
		Backfill: NewDBBackfillStore(n.blockDB, n.stateDB),
		Genesis:  chain.GenesisState(), Logger: log.NewNopLogger(),
	})
	require.NoError(t, err)
	n.r = r
	n.net = newFakeNet(t, r)
	r.AttachRouter(n.net.rt)
	require.NoError(t, r.Start())
	t.Cleanup(func() { _ = r.Stop() })
	return n
}

// stateWithEvidence is the chain's state after height with the given
// evidence bounds.
func stateWithEvidence(chain *chaingen.Chain, height, maxAgeBlocks int64, maxAge time.Duration) sm.State {
	s := chain.State(height)
	s.ConsensusParams.Evidence.MaxAgeNumBlocks = maxAgeBlocks
	s.ConsensusParams.Evidence.MaxAgeDuration = maxAge
	return s
}

// requireBackfilled checks heights from..to through CometBFT's own
// loaders, against the chain.
func requireBackfilled(t *testing.T, n *bfNode, chain *chaingen.Chain, from, to int64) {
	t.Helper()
	bs := store.NewBlockStore(n.blockDB)
	ss := sm.NewStore(n.stateDB, sm.StoreOptions{})
	for h := from; h <= to; h++ {
		meta := bs.LoadBlockMeta(h)
		require.NotNil(t, meta, "meta at height %d", h)
		require.Equal(t, chain.Commit(h).BlockID, meta.BlockID, "height %d", h)
		require.Equal(t, chain.Block(h).Hash(), meta.Header.Hash(), "height %d", h)
		commit := bs.LoadBlockCommit(h)
		require.NotNil(t, commit, "commit at height %d", h)
		require.Equal(t, chain.Commit(h).Hash(), commit.Hash(), "height %d", h)
		require.Equal(t, h, bs.LoadBlockMetaByHash(meta.BlockID.Hash).Header.Height)
		vals, err := ss.LoadValidators(h)
		require.NoError(t, err, "validators at height %d", h)
		require.Equal(t, chain.ValidatorSet(h).Hash(), vals.Hash(), "validators at height %d", h)
		require.Equal(t, chain.ValidatorSet(h).ProposerPriorityHash(), vals.ProposerPriorityHash(),
			"priorities at height %d", h)
	}
	require.Nil(t, bs.LoadBlockMeta(from-1), "height %d must not be backfilled", from-1)
}

func backfillCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ---------------------------------------------------------------------------

// TestBackfillValidatorSetChanges backfills a chain whose validator set
// changes at several heights in the range, down to the initial height,
// from three peers, and reads everything back through CometBFT's loaders.
func TestBackfillValidatorSetChanges(t *testing.T) {
	for _, initial := range []int64{1, 1000} {
		t.Run(fmt.Sprintf("initial_height=%d", initial), func(t *testing.T) {
			chain := testChain(t, chaingen.Options{
				InitialHeight: initial, Height: initial + 130,
				ValSetChanges: map[int64]int{initial + 30: 6, initial + 55: 3, initial + 56: 5, initial + 90: 7},
			})
			n := newBackfillNode(t, chain, nil)
			for i, delay := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond} {
				n.net.add(p2p.ID(fmt.Sprintf("peer%d", i)), &fakePeer{chain: chain, delay: delay})
			}
			top := initial + 120
			res, err := n.r.Backfill(backfillCtx(t), chain.State(top)) // default evidence params: whole chain
			require.NoError(t, err)
			require.Equal(t, BackfillReachedInitialHeight, res.Stopped)
			require.Equal(t, top, res.From)
			require.Equal(t, initial, res.To)
			require.Equal(t, int(top-initial+1), res.Blocks)
			require.NoError(t, res.Err)
			requireBackfilled(t, n, chain, initial, top)
			require.Empty(t, n.net.punishedPeers())
			require.Equal(t, int64(res.Blocks), n.r.metrics.BackFilledBlocks())
			require.Equal(t, int64(res.Blocks), n.r.metrics.BackFillBlocksTotal())
			require.Equal(t, int64(res.Blocks), n.r.Progress().BackfillDone)

			// The node now serves the backfilled heights as light blocks.
			lb, err := n.r.loadLightBlock(initial + 40)
			require.NoError(t, err)
			require.NotNil(t, lb)
			got, err := types.LightBlockFromProto(lb)
			require.NoError(t, err)
			require.NoError(t, got.ValidateBasic(chain.ChainID()))
			require.Equal(t, chain.Block(initial+40).Hash(), got.Hash())
		})
	}
}

// TestBackfillStopsByHeightAndTime: the backfill ends at the first height
// meeting both evidence bounds.
func TestBackfillStopsByHeightAndTime(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 130, BlockInterval: time.Second,
		ValSetChanges: map[int64]int{75: 5}})
	for _, tc := range []struct {
		name      string
		maxBlocks int64
		maxAge    time.Duration
		lowest    int64
	}{
		{"height_bound", 50, time.Nanosecond, 70},    // time bound met at once
		{"time_bound", 50, 80 * time.Second, 39},     // block 39 is the first older than time(120)-80s
		{"both_at_once", 10, 10 * time.Second, 109},  // both met at 110? time(110) is not before time(110): 109
		{"initial_height", 500, time.Nanosecond, 1},  // the height bound is below the chain
		{"time_beyond_chain", 5, 24 * time.Hour, 1},  // the time bound is before the chain
		{"max_age_zero", 0, time.Nanosecond, 119},    // the top is never older than itself
		{"one_below", 1, time.Nanosecond, 119},       // one height below
		{"time_only_near_top", 1, time.Second, 118},  // time(118) < time(120)-1s
		{"time_at_initial", 500, 500 * time.Hour, 1}, // never older: stops at the initial height
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newBackfillNode(t, chain, nil)
			n.net.add("a", &fakePeer{chain: chain})
			n.net.add("b", &fakePeer{chain: chain, delay: time.Millisecond})
			res, err := n.r.Backfill(backfillCtx(t), stateWithEvidence(chain, 120, tc.maxBlocks, tc.maxAge))
			require.NoError(t, err)
			require.Equal(t, tc.lowest, res.To)
			if tc.lowest == 1 {
				require.Equal(t, BackfillReachedInitialHeight, res.Stopped)
			} else {
				require.Equal(t, BackfillComplete, res.Stopped)
			}
			requireBackfilled(t, n, chain, tc.lowest, 120)
		})
	}
}

// TestBackfillMisbehavingPeers: peers that never answer, that have
// nothing, and that serve blocks of another chain (wrong hashes). The
// liar is punished, the others are not; the backfill completes from the
// good peers (two: the validator-set change at 40 needs a second peer to
// confirm the set below it).
func TestBackfillMisbehavingPeers(t *testing.T) {
	chain := testChain(t, chaingen.Options{ChainID: "chain", Height: 90, ValSetChanges: map[int64]int{40: 6}})
	impostor := testChain(t, chaingen.Options{ChainID: "chain", Height: 90,
		AppHash: func(h int64) []byte { return []byte(fmt.Sprintf("forged-%032d", h)) }})
	n := newBackfillNode(t, chain, func(c *Config) { c.LightBlockTimeout = 100 * time.Millisecond })
	n.net.add("silent", &fakePeer{chain: chain, drop: true})
	n.net.add("empty", &fakePeer{chain: chain, base: 1000})
	n.net.add("liar", &fakePeer{chain: chain, impostor: impostor})
	n.net.add("good", &fakePeer{chain: chain, delay: 2 * time.Millisecond})
	n.net.add("good2", &fakePeer{chain: chain, delay: 2 * time.Millisecond})

	res, err := n.r.Backfill(backfillCtx(t), chain.State(80))
	require.NoError(t, err)
	require.Equal(t, BackfillReachedInitialHeight, res.Stopped)
	requireBackfilled(t, n, chain, 1, 80)

	punished := n.net.punishedPeers()
	require.Contains(t, punished, p2p.ID("liar"))
	require.ErrorIs(t, punished["liar"], ErrPeerMisbehaved)
	require.ErrorIs(t, punished["liar"], ErrVerifyFailed)
	require.NotContains(t, punished, p2p.ID("silent"), "not answering is not misbehaving")
	require.NotContains(t, punished, p2p.ID("empty"), "not having blocks is not misbehaving")
	require.NotContains(t, punished, p2p.ID("good"))
	require.LessOrEqual(t, n.net.requestsTo("empty"), 8, "a peer lacking the top is not asked for lower heights")
	for _, id := range []p2p.ID{"silent", "empty", "liar", "good"} {
		require.Zero(t, n.r.dispatcher.pending(id), "requests to %s left pending", id)
	}
}

// TestBackfillNoPeerHasOldHeights: every peer pruned below height 100. The
// backfill stops within its stall bound, reports how far it got, and the
// heights it did verify are stored.
func TestBackfillNoPeerHasOldHeights(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 130})
	n := newBackfillNode(t, chain, func(c *Config) {
		c.LightBlockTimeout = 100 * time.Millisecond
		c.DiscoveryTime = 100 * time.Millisecond
	})
	n.net.add("a", &fakePeer{chain: chain, base: 100})
	n.net.add("b", &fakePeer{chain: chain, base: 100})
	start := time.Now()
	res, err := n.r.Backfill(backfillCtx(t), chain.State(120))
	require.ErrorIs(t, err, ErrBackfill)
	require.ErrorIs(t, err, ErrNoPeers)
	require.Less(t, time.Since(start), 5*time.Second, "bounded")
	require.Equal(t, BackfillNoPeers, res.Stopped)
	require.Equal(t, err, res.Err)
	require.Equal(t, int64(120), res.From)
	require.Equal(t, int64(100), res.To)
	require.Equal(t, 21, res.Blocks)
	requireBackfilled(t, n, chain, 100, 120)
	require.Empty(t, n.net.punishedPeers())
}

// TestBackfillPeerJoinsLate: the only peer having the old heights connects
// while the backfill waits for one.
func TestBackfillPeerJoinsLate(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 70})
	n := newBackfillNode(t, chain, func(c *Config) { c.LightBlockTimeout = 5 * time.Second })
	n.net.add("recent", &fakePeer{chain: chain, base: 50})
	done := make(chan error, 1)
	go func() {
		_, err := n.r.Backfill(backfillCtx(t), chain.State(60))
		done <- err
	}()
	waitFor(t, "the backfill to reach the pruned heights", func() bool {
		return n.r.metrics.BackFilledBlocks() == 11
	})
	n.net.add("archive", &fakePeer{chain: chain})
	require.NoError(t, <-done)
	requireBackfilled(t, n, chain, 1, 60)
}

// TestBackfillPeerLeaves: a peer disconnects mid-way; its requests fail at
// once and go to the other.
func TestBackfillPeerLeaves(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 400})
	n := newBackfillNode(t, chain, func(c *Config) { c.LightBlockTimeout = 10 * time.Second })
	n.net.add("leaves", &fakePeer{chain: chain, delay: 5 * time.Millisecond})
	n.net.add("stays", &fakePeer{chain: chain, delay: 5 * time.Millisecond})
	done := make(chan error, 1)
	go func() {
		_, err := n.r.Backfill(backfillCtx(t), chain.State(390))
		done <- err
	}()
	waitFor(t, "some progress", func() bool { return n.r.metrics.BackFilledBlocks() >= 50 })
	n.net.remove("leaves")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the departed peer's requests were not released at once")
	}
	requireBackfilled(t, n, chain, 1, 390)
}

// TestBackfillCancelAndStop: cancelling the context, or stopping the
// Reactor, ends a running backfill promptly, with the reason, the heights
// done so far stored, and no goroutine or pending request left behind.
func TestBackfillCancelAndStop(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 3000})
	for _, how := range []string{"cancel", "stop"} {
		t.Run(how, func(t *testing.T) {
			n := newBackfillNode(t, chain, nil)
			n.net.add("a", &fakePeer{chain: chain, delay: 20 * time.Millisecond})
			n.net.add("b", &fakePeer{chain: chain, delay: 20 * time.Millisecond})
			ignore := goleak.IgnoreCurrent()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				res BackfillResult
				err error
			}
			done := make(chan result, 1)
			go func() {
				res, err := n.r.Backfill(ctx, chain.State(2990))
				done <- result{res, err}
			}()
			waitFor(t, "some progress", func() bool { return n.r.metrics.BackFilledBlocks() >= 30 })
			if how == "cancel" {
				cancel()
			} else {
				require.NoError(t, n.r.Stop())
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("backfill did not stop")
			}
			require.ErrorIs(t, r.err, ErrBackfill)
			require.Equal(t, BackfillCancelled, r.res.Stopped)
			if how == "cancel" {
				require.ErrorIs(t, r.err, context.Canceled)
			} else {
				require.ErrorIs(t, r.err, ErrStopped)
			}
			require.GreaterOrEqual(t, r.res.Blocks, 30)
			requireBackfilled(t, n, chain, r.res.To, 2990)
			require.Zero(t, n.r.dispatcher.pending("a"))
			require.Zero(t, n.r.dispatcher.pending("b"))
			goleak.VerifyNone(t, ignore)
		})
	}
}

func TestBackfillRefusesBadInput(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 10})
	n := newBackfillNode(t, chain, nil)
	bad := chain.State(5)
	bad.LastBlockID = types.BlockID{}
	res, err := n.r.Backfill(context.Background(), bad)
	require.ErrorIs(t, err, ErrBackfill)
	require.Equal(t, BackfillInvalidState, res.Stopped)

	require.NoError(t, n.r.Stop())
	res, err = n.r.Backfill(context.Background(), chain.State(5))
	require.ErrorIs(t, err, ErrStopped)
	require.Equal(t, BackfillCancelled, res.Stopped)
}

// TestBackfillWithoutStore verifies but stores nothing when Deps.Backfill
// is nil.
func TestBackfillWithoutStore(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 40})
	n := newBackfillNode(t, chain, nil)
	n.r.deps.Backfill = nil
	n.net.add("a", &fakePeer{chain: chain})
	res, err := n.r.Backfill(backfillCtx(t), chain.State(30))
	require.NoError(t, err)
	require.Equal(t, 30, res.Blocks)
	require.Nil(t, store.NewBlockStore(n.blockDB).LoadBlockMeta(30))
}

// ---------------------------------------------------------------------------
// Over real MConnections.

// delayRouter delays every request the node sends by a fixed time: with
// answers coming straight back, that adds the delay to every round trip.
// One goroutine delivers the requests in order; Send never blocks and
// always reports success.
type delayRouter struct {
	inner Router
	delay time.Duration

	mtx   sync.Mutex
	queue []delayedSend
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

type delayedSend struct {
	due  time.Time
	peer p2p.ID
	ch   byte
	msg  proto.Message
}

func newDelayRouter(tb testing.TB, inner Router, delay time.Duration) *delayRouter {
	d := &delayRouter{inner: inner, delay: delay, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		done: make(chan struct{})}
	go d.run()
	tb.Cleanup(func() {
		close(d.stop)
		<-d.done
	})
	return d
}

func (d *delayRouter) Send(peer p2p.ID, ch byte, msg proto.Message) bool {
	d.mtx.Lock()
	d.queue = append(d.queue, delayedSend{due: time.Now().Add(d.delay), peer: peer, ch: ch, msg: msg})
	d.mtx.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return true
}

func (d *delayRouter) Punish(peer p2p.ID, reason error) { d.inner.Punish(peer, reason) }

func (d *delayRouter) run() {
	defer close(d.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		d.mtx.Lock()
		var next *delayedSend
		var wait time.Duration
		if len(d.queue) > 0 {
			if wait = time.Until(d.queue[0].due); wait <= 0 {
				s := d.queue[0]
				d.queue = d.queue[1:]
				next = &s
			}
		}
		pending := len(d.queue) > 0
		d.mtx.Unlock()
		if next != nil {
			d.inner.Send(next.peer, next.ch, next.msg)
			continue
		}
		var timerC <-chan time.Time
		if pending {
			timer.Reset(wait)
			timerC = timer.C
		}
		select {
		case <-d.wake:
		case <-timerC:
		case <-d.stop:
			return
		}
	}
}

// mconnNet is serving nodes holding a chain in CometBFT's stores and a
// fresh node to backfill, on switches over real MConnections.
type mconnNet struct {
	chain   *chaingen.Chain
	servers []*Reactor
	fresh   *Reactor
	blockDB dbm.DB
	stateDB dbm.DB
	nodes   p2ptest.Net
}

type mconnOpts struct {
	servers    int
	serverBase []int64       // lowest height each server has (default: the initial height)
	rtt        time.Duration // delay added to every request of the fresh node
	rate       int64         // per-connection rate; 0 = CometBFT's default
	fresh      func(*Config)
	server     func(*Config)
}

func newMConnNet(tb testing.TB, chain *chaingen.Chain, o mconnOpts) *mconnNet {
	tb.Helper()
	m := &mconnNet{chain: chain, blockDB: dbm.NewMemDB(), stateDB: dbm.NewMemDB()}
	reactors := make([]map[string]p2p.Reactor, 0, o.servers+1)
	for i := 0; i < o.servers; i++ {
		bs := store.NewBlockStore(dbm.NewMemDB())
		ss := sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
		from := chain.InitialHeight()
		if i < len(o.serverBase) {
			from = o.serverBase[i]
		}
		require.NoError(tb, chain.Populate(bs, ss, from, chain.Height()-1))
		conns := newAppConns(tb, kvapp.New(kvapp.Options{}))
		cfg := testConfig()
		if o.server != nil {
			o.server(&cfg)
		}
		r, err := NewReactor(cfg, Deps{Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: ss, BlockStore: bs, Genesis: chain.GenesisState(), Logger: log.NewNopLogger()})
		require.NoError(tb, err)
		m.servers = append(m.servers, r)
		reactors = append(reactors, map[string]p2p.Reactor{"STATESYNC": r})
	}
	conns := newAppConns(tb, kvapp.New(kvapp.Options{}))
	cfg := testConfig()
	if o.fresh != nil {
		o.fresh(&cfg)
	}
	r, err := NewReactor(cfg, Deps{Snapshots: conns.Snapshot(), Query: conns.Query(),
		StateStore: sm.NewStore(m.stateDB, sm.StoreOptions{}), BlockStore: store.NewBlockStore(m.blockDB),
		Backfill: NewDBBackfillStore(m.blockDB, m.stateDB), Genesis: chain.GenesisState(),
		Logger: log.NewNopLogger()})
	require.NoError(tb, err)
	m.fresh = r
	reactors = append(reactors, map[string]p2p.Reactor{"STATESYNC": r})
	m.nodes = p2ptest.Network(tb, p2ptest.Config(o.rate), reactors)
	if o.rtt > 0 {
		r.AttachRouter(newDelayRouter(tb, switchRouter{sw: m.nodes[o.servers].Switch}, o.rtt))
	}
	return m
}

// TestBackfillOverMConnections backfills across validator-set changes
// from three CometBFT switches, one of which has pruned the older heights,
// and checks the result through CometBFT's loaders.
func TestBackfillOverMConnections(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 305, ValSetChanges: map[int64]int{50: 6, 120: 3, 121: 5, 250: 7}})
	m := newMConnNet(t, chain, mconnOpts{servers: 3, serverBase: []int64{200}})
	res, err := m.fresh.Backfill(backfillCtx(t), chain.State(300))
	require.NoError(t, err)
	require.Equal(t, BackfillReachedInitialHeight, res.Stopped)
	require.Equal(t, 300, res.Blocks)
	requireBackfilled(t, &bfNode{blockDB: m.blockDB, stateDB: m.stateDB}, chain, 1, 300)
}

// BenchmarkBackfill measures backfill throughput — blocks verified and
// stored per second — from 4 serving peers over real MConnections with
// CometBFT's default p2p config (5 120 000 B/s, 10 ms flush throttle),
// with a simulated round trip of 50 ms (every request of the backfilling
// node delayed by a Router wrapper) and with none. Each iteration
// backfills 2000 blocks (4 to 5 validators) into fresh databases.
//
// The cases: the default backfill_window against the default
// serve_queue_per_peer, then windows of 16, 32 and 64 against servers
// whose serve_queue_per_peer admits them. A window above the servers'
// queue gets requests dropped, and every drop costs a timeout. The
// cpu-util metric is the share of the machine the whole process (serving
// nodes included) used: near 1, throughput is bound by computation; well
// below, by waiting (round trips, and the MConnection's 10 ms flush
// throttle on both sides of each one).
func BenchmarkBackfill(b *testing.B) {
	const blocks = 2000
	chain := testChain(b, chaingen.Options{Height: blocks + 5, ValSetChanges: map[int64]int{500: 5, 1500: 4}})
	for _, tc := range []struct {
		rtt    time.Duration
		window int
		queue  int
	}{
		{50 * time.Millisecond, DefaultBackfillWindow, DefaultServeQueuePerPeer},
		{50 * time.Millisecond, 16, 16},
		{50 * time.Millisecond, 32, 64},
		{50 * time.Millisecond, 64, 128},
		{0, DefaultBackfillWindow, DefaultServeQueuePerPeer},
		{0, 16, 16},
		{0, 32, 64},
		{0, 64, 128},
	} {
		name := fmt.Sprintf("peers=4/rtt=%v/window=%d/serve_queue=%d", tc.rtt, tc.window, tc.queue)
		b.Run(name, func(b *testing.B) {
			m := newMConnNet(b, chain, mconnOpts{
				servers: 4, rtt: tc.rtt,
				fresh:  func(c *Config) { c.BackfillWindow = tc.window },
				server: func(c *Config) { c.ServeQueuePerPeer = tc.queue },
			})
			state := stateWithEvidence(chain, blocks, blocks-1, time.Nanosecond)
			var total int
			var took, cpu time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.fresh.deps.Backfill = NewDBBackfillStore(dbm.NewMemDB(), dbm.NewMemDB())
				start, cpu0 := time.Now(), processCPU()
				res, err := m.fresh.Backfill(context.Background(), state)
				took += time.Since(start)
				cpu += processCPU() - cpu0
				if err != nil {
					b.Fatal(err)
				}
				if res.Blocks != blocks {
					b.Fatalf("backfilled %d blocks, want %d", res.Blocks, blocks)
				}
				total += res.Blocks
			}
			b.ReportMetric(float64(total)/took.Seconds(), "blocks/s")
			b.ReportMetric(cpu.Seconds()/(took.Seconds()*float64(runtime.NumCPU())), "cpu-util")
		})
	}
}

// processCPU returns the CPU time (user and system) the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
