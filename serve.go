package statesync

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cosmos/gogoproto/proto"

	ssproto "github.com/statesync/statesync/proto"
)

// recentSnapshots is how many snapshots we advertise per SnapshotsRequest
// (the same number CometBFT uses).
const recentSnapshots = 10

// serveJob is one inbound request waiting to be served.
type serveJob struct {
	peer     p2p.ID
	ch       byte
	msg      proto.Message
	deferred bool // the queue's ready gate held it back at least once
}

// deferRetry is how often workers look again at jobs held back by the
// ready gate (a peer over its serving budget) when nothing else is
// runnable.
const deferRetry = 10 * time.Millisecond

// serveQueue is the goroutine-free scheduler of the serving path: per-peer
// FIFO queues, a cap on what one peer may have queued, a cap on how many of
// one peer's requests run at once, and round-robin between peers so one
// greedy peer cannot starve the others. An optional ready gate holds back
// a peer's next job (its serving budget is spent, or it does not read):
// the job stays queued, unloaded, and the peer's further requests are
// refused at push once its queue is full. Workers pull with next and
// report with done. Safe for concurrent use.
type serveQueue struct {
	mtx        sync.Mutex
	queues     map[p2p.ID][]serveJob
	running    map[p2p.ID]int
	order      []p2p.ID // round-robin order of peers with queued jobs
	maxQueued  int
	maxRunning int
	wake       chan struct{} // capacity 1: a job may be runnable
	// ready, if set, says whether a peer's next job may run now. It is
	// called under the queue's lock and must not call back into it.
	ready func(serveJob) bool
}

func newServeQueue(maxQueued, maxRunning int) *serveQueue {
	return &serveQueue{
		queues:     make(map[p2p.ID][]serveJob),
		running:    make(map[p2p.ID]int),
		maxQueued:  maxQueued,
		maxRunning: maxRunning,
		wake:       make(chan struct{}, 1),
	}
}

// push queues a job; it returns false (dropping it) when the peer already
// has maxQueued jobs queued or running.
func (q *serveQueue) push(j serveJob) bool {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	if len(q.queues[j.peer])+q.running[j.peer] >= q.maxQueued {
		return false
	}
	if len(q.queues[j.peer]) == 0 {
		q.order = append(q.order, j.peer)
	}
	q.queues[j.peer] = append(q.queues[j.peer], j)
	q.signal()
	return true
}

func (q *serveQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop returns the next runnable job, if any, and marks it running.
// held reports that a job was held back by the ready gate (so it is worth
// looking again later even if nothing wakes the queue).
func (q *serveQueue) pop() (serveJob, bool, bool) {
	held := false
	q.mtx.Lock()
	defer q.mtx.Unlock()
	for i, id := range q.order {
		if q.running[id] >= q.maxRunning {
			continue
		}
		jobs := q.queues[id]
		if q.ready != nil && !q.ready(jobs[0]) {
			jobs[0].deferred = true
			held = true
			continue
		}
		j := jobs[0]
		jobs[0] = serveJob{}
		jobs = jobs[1:]
		q.order = append(q.order[:i:i], q.order[i+1:]...)
		if len(jobs) == 0 {
			delete(q.queues, id)
		} else {
			q.queues[id] = jobs
			q.order = append(q.order, id) // back of the line
		}
		q.running[id]++
		if len(q.order) > 0 {
			q.signal() // let another worker look too
		}
		return j, true, held
	}
	return serveJob{}, false, held
}

// next blocks until a job is runnable or ctx ends. Shutdown is checked
// before every pop: once ctx ends, queued jobs are dropped (and their
// memory released), never served, so Stop waits only for the jobs
// already running.
func (q *serveQueue) next(ctx context.Context) (serveJob, bool) {
	for {
		if ctx.Err() != nil {
			q.clear()
			return serveJob{}, false
		}
		j, ok, held := q.pop()
		if ok {
			return j, true
		}
		if !held {
			select {
			case <-q.wake:
			case <-ctx.Done():
			}
			continue
		}
		retry := time.NewTimer(deferRetry)
		select {
		case <-q.wake:
		case <-retry.C:
		case <-ctx.Done():
		}
		retry.Stop()
	}
}

// clear drops every queued job (running ones finish and call done).
func (q *serveQueue) clear() {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	clear(q.queues)
	q.order = nil
}

// done marks one of peer's jobs finished.
func (q *serveQueue) done(peer p2p.ID) {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	if q.running[peer] <= 1 {
		delete(q.running, peer)
	} else {
		q.running[peer]--
	}
	if len(q.order) > 0 {
		q.signal()
	}
}

// dropPeer discards a departed peer's queued jobs.
func (q *serveQueue) dropPeer(peer p2p.ID) {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	if _, ok := q.queues[peer]; !ok {
		return
	}
	delete(q.queues, peer)
	for i, id := range q.order {
		if id == peer {
			q.order = append(q.order[:i:i], q.order[i+1:]...)
			break
		}
	}
}

// serveWorker runs jobs until ctx ends. It is one of cfg.ServeWorkers
// goroutines owned by the Reactor.
func (r *Reactor) serveWorker(ctx context.Context) {
	for {
		j, ok := r.serveQ.next(ctx)
		if !ok {
			return
		}
		r.serve(ctx, j)
		r.serveQ.done(j.peer)
		if !r.peers.has(j.peer, j.ch) {
			// The peer left while its request ran (or never said it
			// came): forget the budget record serving it created.
			r.serveLim.removePeer(j.peer)
			r.repeats.removePeer(j.peer)
		}
	}
}

// enqueueRequest queues an inbound request for the workers. A request
// over the peer's queue cap is dropped and counted as a refusal; a peer
// that keeps sending requests it is refused is flooding
// (serveLimiter.refused) and is disconnected.
func (r *Reactor) enqueueRequest(peer p2p.ID, chID byte, msg proto.Message) {
	if m, ok := msg.(*ssproto.ChunkRequest); ok {
		if err := r.repeats.asked(peer, chunkKey{height: m.Height, format: m.Format, index: m.Index}); err != nil {
			r.punish(peer, err) // a request flood (chunkrepeats.go)
			return
		}
	}
	if r.serveQ.push(serveJob{peer: peer, ch: chID, msg: msg}) {
		return
	}
	r.metrics.requestDropped()
	r.logger.Debug("Dropping request: peer has too many queued", "peer", peer, "msg", fmt.Sprintf("%T", msg))
	if err := r.serveLim.refused(peer); err != nil {
		r.punish(peer, err)
	}
}

// jobReady is the serving queue's ready gate: a chunk request waits while
// its peer is over its chunk byte budget or stalled (its send queue was
// full), a light-block or params request while its peer is over its
// load-time budget. Held-back requests are counted once each.
func (r *Reactor) jobReady(j serveJob) bool {
	var ok bool
	switch j.msg.(type) {
	case *ssproto.ChunkRequest:
		ok = r.serveLim.allowChunk(j.peer)
	case *ssproto.LightBlockRequest, *ssproto.ParamsRequest:
		ok = r.serveLim.allowLight(j.peer)
	default:
		ok = true
	}
	if !ok && !j.deferred {
		r.metrics.requestThrottled()
	}
	return ok
}

// serve answers one request. Missing data is answered as the protocol says
// (an empty light block, a missing chunk) or not at all (params).
func (r *Reactor) serve(ctx context.Context, j serveJob) {
	switch msg := j.msg.(type) {
	case *ssproto.SnapshotsRequest:
		snapshots, err := r.recentSnapshots(ctx)
		if err != nil {
			r.logger.Error("Failed to list snapshots", "peer", j.peer, "err", err)
			return
		}
		for _, s := range snapshots {
			if !r.respond(j.peer, ssproto.SnapshotChannel, s) {
				return
			}
		}
	case *ssproto.ChunkRequest:
		r.serveChunk(ctx, j.peer, msg)
	case *ssproto.LightBlockRequest:
		r.serveLightBlock(j.peer, msg)
	case *ssproto.ParamsRequest:
		r.serveParams(j.peer, msg)
	}
}

// serveChunk answers a chunk request from the shared chunk cache or the
// app, and charges its bytes to the peer's budget.
func (r *Reactor) serveChunk(ctx context.Context, peer p2p.ID, msg *ssproto.ChunkRequest) {
	key := chunkKey{height: msg.Height, format: msg.Format, index: msg.Index}
	chunk, _, err := r.chunks.load(ctx, key, func() ([]byte, error) {
		resp, err := r.deps.Snapshots.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{
			Height: msg.Height, Format: msg.Format, Chunk: msg.Index,
		})
		if err != nil {
			return nil, err
		}
		return resp.Chunk, nil
	})
	if err != nil {
		r.logger.Error("Failed to load chunk", "peer", peer, "height", msg.Height, "format", msg.Format,
			"chunk", msg.Index, "err", err)
		return
	}
	r.serveLim.chargeChunk(peer, len(chunk))
	out := &ssproto.ChunkResponse{Height: msg.Height, Format: msg.Format, Index: msg.Index}
	switch {
	case len(chunk) == 0:
		// Typically a snapshot the app has pruned since it was
		// advertised: CometBFT's restorer ignores a missing chunk and asks
		// again until its 2-minute chunk timeout, so a restorer stuck on
		// a pruned snapshot shows here first.
		r.logger.Debug("App has no such chunk; answering missing", "peer", peer, "height", msg.Height,
			"format", msg.Format, "chunk", msg.Index)
		out.Missing = true
	case len(chunk) > r.limits.MaxChunkSize:
		r.logger.Error("App chunk exceeds the wire limit; answering missing",
			"chunk", msg.Index, "size", len(chunk), "limit", r.limits.MaxChunkSize)
		out.Missing = true
	default:
		out.Chunk = chunk
	}
	if r.respond(peer, ssproto.ChunkChannel, out) && !out.Missing {
		r.repeats.delivered(peer, key)
	}
}

// serveLightBlock answers a light-block request from the light-block cache
// or the stores, and charges its load time to the peer's budget.
func (r *Reactor) serveLightBlock(peer p2p.ID, msg *ssproto.LightBlockRequest) {
	start := r.serveLim.now()
	lb, loaded, err := r.cachedLightBlock(int64(msg.Height))
	if loaded { // a cache hit, or another peer's load, costs this peer nothing
		r.serveLim.chargeLight(peer, r.serveLim.now().Sub(start))
	}
	if err != nil {
		r.logger.Error("Failed to load light block", "peer", peer, "height", msg.Height, "err", err)
		return
	}
	r.respond(peer, ssproto.LightBlockChannel, &ssproto.LightBlockResponse{LightBlock: lb})
}

// serveParams answers a params request and charges its load time to the
// peer's budget; params the node does not have are not answered.
func (r *Reactor) serveParams(peer p2p.ID, msg *ssproto.ParamsRequest) {
	start := r.serveLim.now()
	params, err := r.loadParams(int64(msg.Height))
	r.serveLim.chargeLight(peer, r.serveLim.now().Sub(start))
	if err != nil {
		r.logger.Error("Failed to load consensus params", "peer", peer, "height", msg.Height, "err", err)
		return
	}
	if params == nil {
		return
	}
	r.respond(peer, ssproto.ParamsChannel, &ssproto.ParamsResponse{Height: msg.Height, ConsensusParams: *params})
}

// respond queues a response for peer without waiting for room: when the
// peer's send queue on ch is full (a peer that reads slowly, or not at
// all), the response is dropped and counted, the peer's chunk requests
// are held back for a while (serveLimiter.stall; a peer that takes none
// for stallPunish is disconnected), and the worker moves on,
// releasing what it loaded. The requester times out and asks again, here
// or elsewhere. A blocking send would hold the worker, and the chunk, for
// up to the p2p layer's send timeout (10 s on an MConnection): a handful
// of peers that never read would hold every worker. It returns whether
// the response was queued.
func (r *Reactor) respond(peer p2p.ID, ch byte, msg proto.Message) bool {
	if r.trySend(peer, ch, msg) {
		r.serveLim.delivered(peer)
		return true
	}
	r.metrics.responseDropped()
	if r.peers.has(peer, ch) {
		if err := r.serveLim.stall(peer); err != nil {
			r.punish(peer, err)
		}
	}
	r.logger.Debug("Dropped response: the peer's send queue is full or the peer is gone",
		"peer", peer, "channel", ch, "msg", fmt.Sprintf("%T", msg))
	return false
}

// recentSnapshots lists the app's snapshots, most recent first (height
// descending, then format descending), at most recentSnapshots of them,
// skipping any that would not pass our own validation.
func (r *Reactor) recentSnapshots(ctx context.Context) ([]*ssproto.SnapshotsResponse, error) {
	resp, err := r.deps.Snapshots.ListSnapshots(ctx, &abci.RequestListSnapshots{})
	if err != nil {
		return nil, err
	}
	list := make([]*ssproto.SnapshotsResponse, 0, len(resp.Snapshots))
	for _, s := range resp.Snapshots {
		if s == nil {
			continue
		}
		m := &ssproto.SnapshotsResponse{
			Height: s.Height, Format: s.Format, Chunks: s.Chunks, Hash: s.Hash, Metadata: s.Metadata,
		}
		if err := ssproto.Validate(m, r.limits); err != nil {
			r.logger.Error("Not advertising an invalid app snapshot", "height", s.Height,
				"format", s.Format, "err", err)
			continue
		}
		list = append(list, m)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Height != list[j].Height {
			return list[i].Height > list[j].Height
		}
		return list[i].Format > list[j].Format
	})
	if len(list) > recentSnapshots {
		list = list[:recentSnapshots]
	}
	return list, nil
}
