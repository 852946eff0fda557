package statesync

import (
	"fmt"
	"sort"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"
)

// queueLimits are the knobs of a blockQueue.
type queueLimits struct {
	window      int // most requests in flight per peer (the window grows to it)
	initWindow  int // a new peer's window
	maxAttempts int // failed fetches (timeouts, bad blocks) per height before giving up
	maxTimeouts int // timeout events without an answer after which a peer is no longer asked
	maxAhead    int // fetched-but-unverified blocks are kept within this many heights of the verify cursor
	maxInflight int // requests in flight over all peers
	// maxBytes bounds the bytes of fetched-but-unverified blocks (a block
	// that would exceed it is dropped and fetched again later, which costs
	// no attempt); 0: unbounded. Requests are handed out only while the
	// blocks held plus those in flight, each estimated at the recent
	// largest size, fit. The block at the verify cursor is always fetched
	// and kept, so the budget never stalls verification.
	maxBytes int64
}

// fetchAssignment is a request the queue wants sent.
type fetchAssignment struct {
	peer   p2p.ID
	height int64
}

type fetchedBlock struct {
	lb   *types.LightBlock
	peer p2p.ID
	size int64 // bytes on the wire
}

type queuePeer struct {
	id       p2p.ID
	window   window // cap on requests in flight (window.go)
	inflight int
	lacks    int64     // the peer lacks this height and every lower one (0: not known to lack any)
	timeouts int       // timeout events since the last answer
	lastCut  time.Time // when the window was last cut for a timeout
	benched  bool      // misbehaved, unreachable or silent: not asked again
	srtt     time.Duration
	rttvar   time.Duration
}

func (p *queuePeer) serves(h int64) bool {
	return !p.benched && (p.lacks == 0 || h > p.lacks)
}

// blockQueue schedules backfill: which heights to request from which peer,
// and in which order fetched blocks are released for verification. It is a
// plain value with step methods and no goroutines or locks; one loop owns
// it (Reactor.backfill).
//
// Heights are fetched from top down to the stop condition. Every usable
// peer keeps a window of requests in flight, growing by one per answer up
// to limits.window and halved by a timeout (AIMD), so fast peers carry more
// of the load and a peer whose serving queue overflows backs off. A peer
// that lacks a height is not asked for lower ones; a height is retried
// elsewhere when it times out, its block fails verification (the serving
// peer is benched) or its peer leaves. Blocks are released strictly in
// descending height order, so each can be checked against the hash chain
// anchored above it; fetching runs at most limits.maxAhead heights ahead
// of verification, which bounds memory.
//
// Every height from top down to the cursor is, at any time, in exactly one
// of: verified, fetched, in flight, waiting for a retry, or not yet handed
// out.
//
// What a peer can make it hold: fetched blocks only within limits.maxAhead
// heights of the cursor and limits.maxBytes bytes (a block beyond the
// budget is dropped and fetched again later); requests only within its
// window. A peer serving bad blocks is benched; one that does not answer
// loses its window and then is benched.
type blockQueue struct {
	lim        queueLimits
	top        int64
	floor      int64 // never fetched below (the chain's initial height)
	stopHeight int64
	stopTime   time.Time

	nextNew  int64 // highest height not yet handed out
	verifyAt int64 // next height to release for verification
	retry    []int64
	inflight map[int64]p2p.ID
	fetched  map[int64]fetchedBlock
	attempts map[int64]int
	failedBy map[int64]p2p.ID
	lastErr  map[int64]error

	peers map[p2p.ID]*queuePeer
	order []p2p.ID
	rr    int

	fetchedBytes int64 // bytes of the blocks in fetched
	estimate     int64 // the recent largest block: what one in flight may bring

	stopped BackfillStop // set when the queue is done or failed
	err     error        // why it failed
}

// newBlockQueue fetches from top down. It is done once a block at or below
// stopHeight and strictly older than stopTime, or the block at floor, is
// verified.
func newBlockQueue(top, floor, stopHeight int64, stopTime time.Time, lim queueLimits) *blockQueue {
	if lim.window < 1 {
		lim.window = 1
	}
	if lim.initWindow < 1 || lim.initWindow > lim.window {
		lim.initWindow = lim.window
	}
	if lim.maxAttempts < 1 {
		lim.maxAttempts = 1
	}
	if lim.maxTimeouts < 1 {
		lim.maxTimeouts = 1
	}
	if lim.maxAhead < 1 {
		lim.maxAhead = 1
	}
	if lim.maxInflight < 1 {
		lim.maxInflight = 1
	}
	q := &blockQueue{
		lim: lim, top: top, floor: floor, stopHeight: stopHeight, stopTime: stopTime,
		nextNew: top, verifyAt: top,
		inflight: make(map[int64]p2p.ID),
		fetched:  make(map[int64]fetchedBlock),
		attempts: make(map[int64]int),
		failedBy: make(map[int64]p2p.ID),
		lastErr:  make(map[int64]error),
		peers:    make(map[p2p.ID]*queuePeer),
		estimate: lim.maxBytes / 64, // before any block is seen
	}
	if top < floor {
		q.stopped = BackfillReachedInitialHeight
	}
	return q
}

// finished reports whether the queue is done (stopped is a success reason)
// or failed (err is set).
func (q *blockQueue) finished() bool { return q.stopped != "" }

// addPeer makes a peer available (no-op if known).
func (q *blockQueue) addPeer(id p2p.ID) {
	if _, ok := q.peers[id]; ok {
		return
	}
	q.peers[id] = &queuePeer{id: id, window: newWindow(q.lim.initWindow, q.lim.window)}
	q.order = append(q.order, id)
}

// removePeer forgets a peer. Its requests still in flight end through
// gone, timedOut or got as their responses arrive.
func (q *blockQueue) removePeer(id p2p.ID) {
	if _, ok := q.peers[id]; !ok {
		return
	}
	delete(q.peers, id)
	for i, o := range q.order {
		if o == id {
			q.order = append(q.order[:i:i], q.order[i+1:]...)
			break
		}
	}
}

// bench stops asking a peer (it stays known, so it is not re-added).
func (q *blockQueue) bench(id p2p.ID) {
	if p, ok := q.peers[id]; ok {
		p.benched = true
	}
}

// assign hands out heights to peers with room in their windows, round
// robin, highest heights first (retries before new heights).
func (q *blockQueue) assign() []fetchAssignment {
	if q.finished() || len(q.order) == 0 {
		return nil
	}
	var out []fetchAssignment
	n := len(q.order)
	for progressed := true; progressed; {
		progressed = false
		for i := 0; i < n && len(q.inflight) < q.lim.maxInflight; i++ {
			p := q.peers[q.order[(q.rr+i)%n]]
			if p.benched || p.window.full(p.inflight) {
				continue
			}
			h, ok := q.pick(p)
			if !ok {
				continue
			}
			q.inflight[h] = p.id
			p.inflight++
			out = append(out, fetchAssignment{peer: p.id, height: h})
			progressed = true
		}
	}
	q.rr = (q.rr + 1) % n
	return out
}

// overBudget reports whether one more request would take the unverified
// bytes past the budget.
func (q *blockQueue) overBudget() bool {
	if q.lim.maxBytes <= 0 {
		return false
	}
	return q.fetchedBytes+int64(len(q.inflight)+1)*q.estimate > q.lim.maxBytes
}

// pick chooses the next height for p, or false.
func (q *blockQueue) pick(p *queuePeer) (int64, bool) {
	over := q.overBudget()
	for i, h := range q.retry {
		if !p.serves(h) || (over && h != q.verifyAt) {
			continue
		}
		if q.failedBy[h] == p.id && q.someoneElseServes(h, p.id) {
			continue
		}
		q.retry = append(q.retry[:i:i], q.retry[i+1:]...)
		return h, true
	}
	h := q.nextNew
	if (over && h != q.verifyAt) || h < q.floor || h <= q.verifyAt-int64(q.lim.maxAhead) || !p.serves(h) {
		return 0, false
	}
	q.nextNew--
	return h, true
}

func (q *blockQueue) someoneElseServes(h int64, not p2p.ID) bool {
	for id, p := range q.peers {
		if id != not && p.serves(h) {
			return true
		}
	}
	return false
}

// requeue puts h back for another fetch, keeping retry sorted descending.
func (q *blockQueue) requeue(h int64) {
	if q.finished() || h > q.verifyAt {
		return
	}
	i := sort.Search(len(q.retry), func(i int) bool { return q.retry[i] <= h })
	if i < len(q.retry) && q.retry[i] == h {
		return
	}
	q.retry = append(q.retry, 0)
	copy(q.retry[i+1:], q.retry[i:])
	q.retry[i] = h
}

// settle ends the in-flight request for h by peer; false if there was none.
func (q *blockQueue) settle(peer p2p.ID, h int64) (*queuePeer, bool) {
	if q.inflight[h] != peer {
		return nil, false
	}
	delete(q.inflight, h)
	p := q.peers[peer]
	if p != nil {
		p.inflight--
	}
	return p, true
}

func (p *queuePeer) observe(rtt time.Duration) {
	if rtt <= 0 {
		return
	}
	if p.srtt == 0 {
		p.srtt, p.rttvar = rtt, rtt/2
		return
	}
	d := p.srtt - rtt
	if d < 0 {
		d = -d
	}
	p.rttvar = (3*p.rttvar + d) / 4
	p.srtt = (7*p.srtt + rtt) / 8
}

// timeout returns the request timeout for peer: its retransmission
// timeout (srtt + 4 rttvar, as TCP) within [floor, ceiling].
func (q *blockQueue) timeout(peer p2p.ID, floor, ceiling time.Duration) time.Duration {
	p := q.peers[peer]
	if p == nil || p.srtt == 0 {
		return ceiling
	}
	return min(ceiling, max(floor, p.srtt+4*p.rttvar))
}

// got records the block peer returned for h (already checked to be at h).
func (q *blockQueue) got(peer p2p.ID, h int64, lb *types.LightBlock, rtt time.Duration) {
	q.gotSized(peer, h, lb, 0, rtt)
}

// gotSized is got for a block of size bytes on the wire, counted against
// limits.maxBytes until it is verified or discarded.
func (q *blockQueue) gotSized(peer p2p.ID, h int64, lb *types.LightBlock, size int64, rtt time.Duration) {
	p, ok := q.settle(peer, h)
	if !ok {
		return
	}
	if p != nil {
		p.timeouts = 0
		p.window.grow()
		p.observe(rtt)
	}
	q.estimate = max(size, q.estimate-q.estimate/8) // follows a rise at once, a fall slowly
	if q.finished() || h > q.verifyAt {
		return
	}
	if q.lim.maxBytes > 0 && h != q.verifyAt && q.fetchedBytes+size > q.lim.maxBytes {
		q.requeue(h) // no room: fetch it again when the cursor gets closer
		return
	}
	if old, ok := q.fetched[h]; ok {
		q.fetchedBytes -= old.size
	}
	q.fetched[h] = fetchedBlock{lb: lb, peer: peer, size: size}
	q.fetchedBytes += size
}

// discard drops the fetched block at h, if any, from the byte count.
func (q *blockQueue) discard(h int64) {
	if b, ok := q.fetched[h]; ok {
		q.fetchedBytes -= b.size
		delete(q.fetched, h)
	}
}

// lacked records that peer does not have h (nor, presumably, anything
// lower); h goes to another peer. Not counted as a failed attempt.
func (q *blockQueue) lacked(peer p2p.ID, h int64, rtt time.Duration) {
	p, ok := q.settle(peer, h)
	if !ok {
		return
	}
	if p != nil {
		p.timeouts = 0
		p.lacks = max(p.lacks, h)
		p.observe(rtt)
	}
	q.requeue(h)
}

// timedOut records that peer did not answer for h, requested at sent, in
// time. Timeouts of requests sent before the peer's window was last cut
// belong to the same event (a burst of requests dropped by an overloaded
// peer): the window is halved once per event, and a peer is benched after
// maxTimeouts events without an answer in between.
func (q *blockQueue) timedOut(peer p2p.ID, h int64, sent, now time.Time, err error) {
	p, ok := q.settle(peer, h)
	if !ok {
		return
	}
	if p != nil && sent.After(p.lastCut) {
		p.lastCut = now
		p.timeouts++
		p.window.cut()
		if p.timeouts >= q.lim.maxTimeouts {
			p.benched = true
		}
	}
	q.failed(peer, h, err)
}

// gone records that the request for h could not complete because peer
// left or could not be sent to; h goes elsewhere, not counted as an
// attempt.
func (q *blockQueue) gone(peer p2p.ID, h int64) {
	if _, ok := q.settle(peer, h); ok {
		q.requeue(h)
	}
}

// failed counts a failed attempt at h and requeues it, or fails the queue.
func (q *blockQueue) failed(peer p2p.ID, h int64, err error) {
	if q.finished() || h > q.verifyAt {
		return
	}
	q.attempts[h]++
	q.failedBy[h] = peer
	q.lastErr[h] = err
	if q.attempts[h] >= q.lim.maxAttempts {
		q.stopped = BackfillRetriesExhausted
		q.err = fmt.Errorf("height %d failed %d times, last from peer %s: %w", h, q.attempts[h], peer, err)
		return
	}
	q.requeue(h)
}

// next returns the block to verify now: the one at the verify cursor.
func (q *blockQueue) next() (fetchedBlock, bool) {
	if q.finished() {
		return fetchedBlock{}, false
	}
	b, ok := q.fetched[q.verifyAt]
	return b, ok
}

// accept marks the block at the cursor verified (and stored); t is its
// time. It moves the cursor down and reports whether the queue is done.
func (q *blockQueue) accept(t time.Time) bool {
	h := q.verifyAt
	q.discard(h)
	delete(q.attempts, h)
	delete(q.failedBy, h)
	delete(q.lastErr, h)
	q.verifyAt--
	switch {
	case h <= q.floor:
		q.stopped = BackfillReachedInitialHeight
	case h <= q.stopHeight && t.Before(q.stopTime):
		q.stopped = BackfillComplete
	}
	if q.finished() {
		q.retry = nil
		clear(q.fetched)
		q.fetchedBytes = 0
	}
	return q.finished()
}

// reject discards the block at the cursor, which failed verification:
// its peer is benched and the height fetched elsewhere.
func (q *blockQueue) reject(err error) (p2p.ID, int64) {
	h := q.verifyAt
	b := q.fetched[h]
	q.discard(h)
	q.bench(b.peer)
	q.failed(b.peer, h, err)
	return b.peer, h
}

// recheck discards the block at the cursor, which checked out but must be
// confirmed by another peer: the height is fetched again, preferably from
// another peer. Its peer is not benched; the attempt counts (bounded by
// limits.maxAttempts, so a height only one peer serves cannot loop).
func (q *blockQueue) recheck(err error) (p2p.ID, int64) {
	h := q.verifyAt
	b := q.fetched[h]
	q.discard(h)
	q.failed(b.peer, h, err)
	return b.peer, h
}

// stalledAt reports the height nobody is fetching although it is needed:
// nothing in flight, nothing to verify, and no usable peer serves the
// cursor height.
func (q *blockQueue) stalledAt() (int64, bool) {
	if q.finished() || len(q.inflight) > 0 {
		return 0, false
	}
	if _, ok := q.fetched[q.verifyAt]; ok {
		return 0, false
	}
	return q.verifyAt, true
}

// lowestVerified returns the lowest verified height (top+1 if none).
func (q *blockQueue) lowestVerified() int64 { return q.verifyAt + 1 }

// outstanding lists the requests in flight, for cancelling them.
func (q *blockQueue) outstanding() []fetchAssignment {
	out := make([]fetchAssignment, 0, len(q.inflight))
	for h, peer := range q.inflight {
		out = append(out, fetchAssignment{peer: peer, height: h})
	}
	return out
}

// usablePeers counts the peers that are still asked.
func (q *blockQueue) usablePeers() int {
	n := 0
	for _, p := range q.peers {
		if !p.benched {
			n++
		}
	}
	return n
}
