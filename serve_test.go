package statesync

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
	ssproto "github.com/statesync/statesync/proto"
)

func TestServeQueueCapsAndFairness(t *testing.T) {
	q := newServeQueue(3, 1)
	job := func(peer p2p.ID, i uint32) serveJob {
		return serveJob{peer: peer, ch: ChunkChannel, msg: &ssproto.ChunkRequest{Height: 1, Index: i}}
	}
	for i := uint32(0); i < 3; i++ {
		require.True(t, q.push(job("greedy", i)))
	}
	require.False(t, q.push(job("greedy", 3)), "a peer cannot queue more than its cap")
	require.True(t, q.push(job("polite", 0)))

	// One running per peer; peers alternate.
	j1, ok, _ := q.pop()
	require.True(t, ok)
	j2, ok, _ := q.pop()
	require.True(t, ok)
	require.NotEqual(t, j1.peer, j2.peer)
	_, ok, _ = q.pop()
	require.False(t, ok, "both peers are at their running cap")
	q.done("greedy")
	j3, ok, _ := q.pop()
	require.True(t, ok)
	require.Equal(t, p2p.ID("greedy"), j3.peer)

	// A departed peer's queue is dropped.
	q.dropPeer("greedy")
	q.done("greedy")
	q.done("polite")
	_, ok, _ = q.pop()
	require.False(t, ok)

	// next returns when ctx ends.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, ok = q.next(ctx)
	require.False(t, ok)
}

// blockingRouter is a Router whose Send blocks for a second (a p2p layer
// whose queues stay full) and that has no TrySend. It counts Sends.
type blockingRouter struct {
	sends atomic.Int64
}

func (b *blockingRouter) Send(p2p.ID, byte, proto.Message) bool {
	b.sends.Add(1)
	t := time.NewTimer(time.Second)
	defer t.Stop()
	<-t.C
	return false
}

func (b *blockingRouter) Punish(p2p.ID, error) {}

// TestServeStopDropsQueuedWork: with 512 requests queued behind workers
// stuck in a blocking Send, Stop waits only for the requests being served
// (one Send per worker), not for the whole queue (before: 512 Sends, a
// minute).
func TestServeStopDropsQueuedWork(t *testing.T) {
	r := newBareReactor(t, nil)
	rt := &blockingRouter{}
	r.AttachRouter(rt)
	require.NoError(t, r.Start())
	const peers, perPeer = 4, 128
	for p := 0; p < peers; p++ {
		id := p2p.ID(fmt.Sprintf("peer%d", p))
		r.PeerUp(id, nil)
		for i := 0; i < perPeer; i++ {
			r.Deliver(id, ChunkChannel, &ssproto.ChunkRequest{Height: 1, Index: uint32(i)})
		}
	}
	workers := int64(r.cfg.ServeWorkers)
	waitFor(t, "every worker stuck in Send", func() bool { return rt.sends.Load() >= workers })
	require.NoError(t, r.Stop())
	require.Equal(t, workers, rt.sends.Load(), "Stop served queued requests")
	require.Error(t, r.Stop(), "Stop is idempotent (BaseService reports already stopped)")
}

// consensusPriorities are CometBFT v0.40's consensus channel priorities
// (consensus/reactor.go, GetChannels): State, Data, Vote, VoteSetBits.
// Constructing a consensus reactor needs a running consensus state, so
// they are written down here.
var consensusPriorities = map[string]int{"State": 6, "Data": 10, "Vote": 7, "VoteSetBits": 1}

// TestChannelsYieldToConsensus checks the descriptors GetChannels declares
// against CometBFT's: no channel of ours outranks the built-in state sync
// reactor's (or, for the light-block and params channels it lacks, its
// chunk channel), every one is below the busy consensus channels (State,
// Data, Vote), a chunk send queue holds no more than the built-in's, and
// the queues fit what honest requesters keep in flight now that responses
// are sent with TrySend.
func TestChannelsYieldToConsensus(t *testing.T) {
	r := newBareReactor(t, nil)
	stock := map[byte]*p2p.ChannelDescriptor{}
	for _, d := range stockReactor(t, kvapp.New(kvapp.Options{})).GetChannels() {
		stock[d.ID] = d
	}
	ours := map[byte]*p2p.ChannelDescriptor{}
	for _, d := range r.GetChannels() {
		ours[d.ID] = d
		ref, ok := stock[d.ID]
		if !ok {
			ref = stock[ChunkChannel]
		}
		require.LessOrEqual(t, d.Priority, ref.Priority, "channel %#x outranks CometBFT's state sync", d.ID)
		for name, p := range consensusPriorities {
			if name != "VoteSetBits" {
				require.Less(t, d.Priority, p, "channel %#x does not yield to consensus %s", d.ID, name)
			}
		}
	}
	require.LessOrEqual(t, ours[ChunkChannel].SendQueueCapacity, stock[ChunkChannel].SendQueueCapacity)
	require.GreaterOrEqual(t, ours[ChunkChannel].SendQueueCapacity+1, DefaultChunkWindow,
		"a requester's default window of chunks does not fit the queue")
	require.GreaterOrEqual(t, ours[SnapshotChannel].SendQueueCapacity, recentSnapshots)
	require.GreaterOrEqual(t, ours[LightBlockChannel].SendQueueCapacity, r.cfg.ServeQueuePerPeer,
		"a backfilling peer's window of light blocks does not fit the queue")
}

// TestServeQueueReadyGate: a peer whose next job the gate holds back keeps
// it queued (marked deferred) while other peers are served; once the gate
// opens it runs.
func TestServeQueueReadyGate(t *testing.T) {
	q := newServeQueue(4, 2)
	var open atomic.Bool
	var seenDeferred atomic.Bool
	q.ready = func(j serveJob) bool {
		if j.peer != "held" {
			return true
		}
		if j.deferred {
			seenDeferred.Store(true)
		}
		return open.Load()
	}
	require.True(t, q.push(serveJob{peer: "held", msg: &ssproto.ChunkRequest{Height: 1}}))
	require.True(t, q.push(serveJob{peer: "other", msg: &ssproto.ChunkRequest{Height: 1}}))
	j, ok, held := q.pop()
	require.True(t, ok)
	require.True(t, held)
	require.Equal(t, p2p.ID("other"), j.peer)
	_, ok, held = q.pop()
	require.False(t, ok)
	require.True(t, held)
	require.True(t, seenDeferred.Load(), "a held job is marked deferred")
	// With no wake-up pending, next finds the job once the gate opens: it
	// looks again every deferRetry while jobs are held.
	select {
	case <-q.wake:
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan serveJob, 1)
	go func() {
		j, _ := q.next(ctx)
		got <- j
	}()
	open.Store(true)
	require.Equal(t, p2p.ID("held"), (<-got).peer)
}
