package statesync

import (
	"fmt"
	"sync"
	"time"

	"github.com/cometbft/cometbft/p2p"
)

// floodWindow and floodFactor define a request flood: more than
// floodFactor x serve_queue_per_peer of one peer's requests refused (over
// its queue cap or its serving budget) within floodWindow. An honest
// requester never gets there: it keeps at most its window of requests
// outstanding (chunk_window <= 64, backfill_window <= 256) and sends a
// refused one again only after its timeout, halving its backfill window
// at each; the sum 256+128+64+... stays below 2 x 256.
const (
	floodWindow = 10 * time.Second
	floodFactor = 8
)

// stallBackoff is how long a peer whose send queue was found full has its
// chunk requests refused. An honest requester never fills the queue (its
// window of chunk requests fits the chunk channel's send queue, see
// GetChannels); one that does not read would otherwise have every request
// loaded and encoded for nothing.
const stallBackoff = time.Second

// stallPunish is how long a peer may leave every response to it undelivered
// (its send queue full at each attempt) before it is disconnected as a
// reader that does not read. An honest requester whose answers do not come
// gives up on them after its chunk_request_timeout (10 s) and asks
// elsewhere; a peer that keeps asking and never reads holds our send
// queue, its connection's buffers and a serving slot for nothing.
const stallPunish = 30 * time.Second

// serveLimiter is the goroutine-free per-peer budget of the serving path.
// Each peer has two token buckets refilled continuously and allowed to go
// into debt by one request, so that the check is made before the cost is
// known (a chunk's size, a light block's load time) and charged after:
//
//   - chunk bytes: ServeChunkRate bytes per second (burst one second's
//     worth); a peer in debt gets its chunk requests refused without the
//     chunk being loaded;
//   - light-block time: ServeLightTime of load time per second for
//     light-block and params requests (burst one second's worth). A cache
//     hit costs microseconds, a LoadValidators far from a validator-set
//     checkpoint up to tens of milliseconds (CometBFT replays up to
//     100 000 proposer-priority increments): the budget bounds the rate of
//     expensive requests, not of cheap ones (loads under cheapLoad are
//     free).
//
// It also counts refusals (budget or queue cap) per peer and reports a
// flood (see floodFactor) so the peer can be punished.
//
// A hostile peer can make it hold one small record; records go with
// removePeer. Safe for concurrent use.
type serveLimiter struct {
	mtx        sync.Mutex
	now        func() time.Time
	chunkRate  float64 // bytes per second
	lightRate  float64 // seconds of load time per second
	floodLimit int
	peers      map[p2p.ID]*peerBudget
}

type peerBudget struct {
	chunk, light     bucket
	stalledUntil     time.Time // chunk requests are held back until then
	stalledSince     time.Time // first undelivered response since the last delivered one
	stallReported    bool
	refused          int
	refusedSince     time.Time
	floodingReported bool
}

// bucket is a token bucket whose level may go negative (debt).
type bucket struct {
	level float64
	at    time.Time
}

// fill refills b at rate up to burst as of now.
func (b *bucket) fill(now time.Time, rate, burst float64) {
	if b.at.IsZero() {
		b.level, b.at = burst, now
		return
	}
	if d := now.Sub(b.at); d > 0 {
		b.level = min(burst, b.level+d.Seconds()*rate)
		b.at = now
	}
}

func newServeLimiter(cfg Config, now func() time.Time) *serveLimiter {
	return &serveLimiter{
		now:        now,
		chunkRate:  float64(cfg.ServeChunkRate),
		lightRate:  cfg.ServeLightTime.Seconds(),
		floodLimit: floodFactor * cfg.ServeQueuePerPeer,
		peers:      make(map[p2p.ID]*peerBudget),
	}
}

func (l *serveLimiter) peer(id p2p.ID) *peerBudget {
	b, ok := l.peers[id]
	if !ok {
		b = &peerBudget{}
		l.peers[id] = b
	}
	return b
}

// allowChunk reports whether peer may have a chunk loaded now: it has
// budget left and is not stalled.
func (l *serveLimiter) allowChunk(peer p2p.ID) bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	b := l.peer(peer)
	now := l.now()
	b.chunk.fill(now, l.chunkRate, l.chunkRate)
	return b.chunk.level > 0 && !now.Before(b.stalledUntil)
}

// stall records that a response to peer was dropped because its send
// queue was full: its chunk requests are held back, without loading and
// encoding chunks it would not take, for stallBackoff. It returns an error
// wrapping ErrPeerMisbehaved, once, when no response has been delivered to
// the peer for stallPunish.
func (l *serveLimiter) stall(peer p2p.ID) error {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	b, now := l.peer(peer), l.now()
	b.stalledUntil = now.Add(stallBackoff)
	if b.stalledSince.IsZero() {
		b.stalledSince = now
	}
	if now.Sub(b.stalledSince) < stallPunish || b.stallReported {
		return nil
	}
	b.stallReported = true
	return fmt.Errorf("%w: does not read: no response delivered for %v while it kept asking",
		ErrPeerMisbehaved, now.Sub(b.stalledSince).Round(time.Second))
}

// delivered records that a response to peer was queued: it is reading.
func (l *serveLimiter) delivered(peer p2p.ID) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	if b, ok := l.peers[peer]; ok {
		b.stalledSince = time.Time{}
	}
}

// chargeChunk charges n loaded bytes to peer.
func (l *serveLimiter) chargeChunk(peer p2p.ID, n int) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	l.peer(peer).chunk.level -= float64(n)
}

// allowLight reports whether peer may have a light block or params loaded
// now.
func (l *serveLimiter) allowLight(peer p2p.ID) bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	b := l.peer(peer)
	b.light.fill(l.now(), l.lightRate, l.lightRate)
	return b.light.level > 0
}

// cheapLoad is the load time below which a light-block or params request
// is not charged: cache hits and validator sets stored at or near their
// height take microseconds, and under CPU contention their wall time
// says more about the scheduler than about the request. The budget is
// for the expensive ones (LoadValidators far from a checkpoint).
const cheapLoad = 10 * time.Millisecond

// chargeLight charges d of load time to peer, unless d is below cheapLoad.
func (l *serveLimiter) chargeLight(peer p2p.ID, d time.Duration) {
	if d < cheapLoad {
		return
	}
	l.mtx.Lock()
	defer l.mtx.Unlock()
	l.peer(peer).light.level -= d.Seconds()
}

// refused counts one of peer's requests refused (over budget or over its
// queue cap). It returns an error wrapping ErrPeerMisbehaved once, when
// the refusals within floodWindow first exceed the flood limit.
func (l *serveLimiter) refused(peer p2p.ID) error {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	b := l.peer(peer)
	now := l.now()
	if now.Sub(b.refusedSince) > floodWindow {
		b.refused, b.refusedSince = 0, now
	}
	b.refused++
	if b.refused <= l.floodLimit || b.floodingReported {
		return nil
	}
	b.floodingReported = true
	return fmt.Errorf("%w: request flood: %d requests over its serving budget or queue within %v",
		ErrPeerMisbehaved, b.refused, floodWindow)
}

// removePeer forgets peer.
func (l *serveLimiter) removePeer(peer p2p.ID) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	delete(l.peers, peer)
}
