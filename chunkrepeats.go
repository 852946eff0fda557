package statesync

import (
	"fmt"
	"sync"

	"github.com/cometbft/cometbft/p2p"
)

// A request flood's signature, independent of time: asking again for
// chunks already delivered. An honest restorer asks for each chunk of a
// snapshot once; it asks again only when its request timed out (the answer
// was late, or dropped on a full send queue: not delivered) or when the
// app refetches a chunk (RefetchChunks, RETRY_SNAPSHOT keeps fetched
// chunks). A late answer and the re-ask it crossed make two deliveries at
// most. So a request for a chunk delivered to the same connection
// repeatDeliveries times already is a repeat; an honest peer makes one
// only by restoring the same snapshot from us more than twice over one
// connection, and maxRepeats of them are a flood: the peer is punished
// (once). Counts go with the connection (removePeer), so a restorer that
// reconnects after a drop starts clean. Refusals by the queue cap or
// the budget are counted apart (serveLimiter.refused); this rule catches
// a flooder that stays within them, within a few hundred requests.
const (
	repeatDeliveries = 3
	maxRepeats       = 16
	// maxTrackedChunks bounds the chunks remembered per peer; past it the
	// peer's record is cleared (a flooder then earns its repeats again; an
	// honest peer is never blamed for it).
	maxTrackedChunks = 2048
)

// repeatGuard counts, per peer, the chunks delivered to it and its
// requests for chunks already delivered repeatDeliveries times. A hostile
// peer can make it hold maxTrackedChunks small entries. Goroutine-free;
// safe for concurrent use.
type repeatGuard struct {
	mtx   sync.Mutex
	peers map[p2p.ID]*peerRepeats
}

type peerRepeats struct {
	delivered map[chunkKey]uint8
	repeats   int
	reported  bool
}

func newRepeatGuard() *repeatGuard {
	return &repeatGuard{peers: make(map[p2p.ID]*peerRepeats)}
}

// asked records a request of peer for key. It returns an error wrapping
// ErrPeerMisbehaved once, when the peer's repeats first exceed maxRepeats.
func (g *repeatGuard) asked(peer p2p.ID, key chunkKey) error {
	g.mtx.Lock()
	defer g.mtx.Unlock()
	p := g.peers[peer]
	if p == nil || p.delivered[key] < repeatDeliveries {
		return nil
	}
	p.repeats++
	if p.repeats <= maxRepeats || p.reported {
		return nil
	}
	p.reported = true
	return fmt.Errorf("%w: request flood: asked %d times for chunks already delivered to it %d times "+
		"(height %d format %d chunk %d the last)", ErrPeerMisbehaved, p.repeats, repeatDeliveries,
		key.height, key.format, key.index)
}

// delivered records that key was queued for sending to peer.
func (g *repeatGuard) delivered(peer p2p.ID, key chunkKey) {
	g.mtx.Lock()
	defer g.mtx.Unlock()
	p := g.peers[peer]
	if p == nil {
		p = &peerRepeats{delivered: make(map[chunkKey]uint8)}
		g.peers[peer] = p
	}
	if _, ok := p.delivered[key]; !ok && len(p.delivered) >= maxTrackedChunks {
		clear(p.delivered)
	}
	if n := p.delivered[key]; n < 255 {
		p.delivered[key] = n + 1
	}
}

// removePeer forgets peer.
func (g *repeatGuard) removePeer(peer p2p.ID) {
	g.mtx.Lock()
	defer g.mtx.Unlock()
	delete(g.peers, peer)
}
