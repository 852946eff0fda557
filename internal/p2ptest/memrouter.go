package p2ptest

import (
	"container/heap"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cosmos/gogoproto/proto"
)

// MemRouter is an in-memory network between one node under test and
// scripted peers, in the spirit of etcd's rafttest network: no sockets, no
// switch, per-link delay and loss, and peers that are functions. It
// implements the library's Router and TrySender (statesync.Router: Send,
// TrySend, Punish) and drives the node through its Endpoint (PeerUp,
// PeerDown, Deliver), as a p2p layer does.
//
// Each connected peer has its own delivery goroutine, as each MConnection
// has its own receive routine: the node's Deliver may block one peer (a
// chunk handed over with backpressure) without stalling the others.
// Messages of one peer are delivered in order of due time (send time plus
// the link's delay), ties in send order.
//
// Failure model of a link (Link): a message from the node to the peer, or
// a reply, is lost with probability DropPercent/100 (decided by a
// generator seeded in NewMemRouter, so a run is reproducible as far as
// goroutine scheduling allows), and arrives after Delay. A peer's queue of
// undelivered messages holds at most QueueCap (default 256): Send and
// TrySend return false when it is full, never blocking.
//
// Punish disconnects the peer (PeerDown, as a switch does) and records the
// reason; it never waits for the peer's goroutine, so the node may call it
// from inside Deliver. Close disconnects every peer and waits for every
// goroutine the router started. Safe for concurrent use.
//
// A peer is either a Script (Connect) or a real node, a serving Reactor
// say, behind a Remote (see MemRouter.Remote): what the node under test
// sends it is handed to its Deliver, and it answers through the Remote,
// its end of the link.
type MemRouter struct {
	ep Endpoint

	mtx      sync.Mutex
	rng      *rand.Rand
	peers    map[p2p.ID]*memPeer
	punished map[p2p.ID]error
	sent     map[p2p.ID][]Msg // what the node sent each peer, in order (RecordSent)
	tried    map[p2p.ID]int   // Send and TrySend calls naming each peer
	record   bool
	seq      uint64
	closed   bool

	wg sync.WaitGroup
}

// Endpoint is the node under test as a p2p layer drives it; the library's
// Reactor implements it.
type Endpoint interface {
	PeerUp(id p2p.ID, channels []byte)
	PeerDown(id p2p.ID)
	Deliver(peer p2p.ID, chID byte, msg proto.Message)
}

// Script is a scripted peer. It is called, with the router's lock not
// held, on the goroutine of the node's Send, with each message the node
// sends it that the link did not lose, and returns the peer's replies. It
// must not block and must be safe for concurrent use.
type Script func(ch byte, msg proto.Message) []Msg

// Msg is one message on a link: its channel, the message, and (for
// replies and injections) an extra delay on top of the link's.
type Msg struct {
	Ch    byte
	Msg   proto.Message
	Delay time.Duration
}

// Link is how a peer's connection behaves.
type Link struct {
	Delay       time.Duration // added to every message to the node
	DropPercent int           // 0..100: each message either way is lost with this probability
	QueueCap    int           // undelivered messages held (default 256)
}

type memPeer struct {
	id       p2p.ID
	channels map[byte]bool
	script   Script
	link     Link
	queue    memQueue
	wake     chan struct{} // capacity 1
	stop     chan struct{} // closed on disconnect
	remote   Endpoint      // the real node playing the peer (Remote.Connect), or nil
	self     p2p.ID        // the node under test's ID as remote knows it
}

// NewMemRouter returns a router delivering to ep; seed seeds the loss
// decisions.
func NewMemRouter(ep Endpoint, seed uint64) *MemRouter {
	return &MemRouter{ep: ep, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		peers: make(map[p2p.ID]*memPeer), punished: make(map[p2p.ID]error), sent: make(map[p2p.ID][]Msg),
		tried: make(map[p2p.ID]int)}
}

// RecordSent makes the router keep every message the node sends (see
// Sent). Off by default: a long run would hold them all.
func (r *MemRouter) RecordSent() {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	r.record = true
}

// Connect connects peer id speaking channels, answering with script
// (nil: a peer that never answers), over link, and tells the node
// (PeerUp). Connecting a connected peer replaces it (a reconnection: the
// old connection is closed first). It does nothing after Close.
func (r *MemRouter) Connect(id p2p.ID, channels []byte, script Script, link Link) {
	r.connect(&memPeer{id: id, script: script, link: link}, channels)
}

func (r *MemRouter) connect(p *memPeer, channels []byte) {
	r.Disconnect(p.id)
	if p.link.QueueCap <= 0 {
		p.link.QueueCap = 256
	}
	p.channels = make(map[byte]bool, len(channels))
	p.wake, p.stop = make(chan struct{}, 1), make(chan struct{})
	for _, ch := range channels {
		p.channels[ch] = true
	}
	r.mtx.Lock()
	if r.closed {
		r.mtx.Unlock()
		return
	}
	r.peers[p.id] = p
	r.wg.Add(1)
	r.mtx.Unlock()
	go r.pump(p)
	if p.remote != nil {
		p.remote.PeerUp(p.self, channels) // the peer knows the node before the node asks it anything
	}
	r.ep.PeerUp(p.id, channels)
}

// Disconnect closes peer id's connection (undelivered messages are lost)
// and tells the node (PeerDown). It does not wait for the peer's
// goroutine (Close does). Unknown peers are ignored.
func (r *MemRouter) Disconnect(id p2p.ID) {
	r.mtx.Lock()
	p := r.peers[id]
	if p != nil {
		delete(r.peers, id)
		close(p.stop)
	}
	r.mtx.Unlock()
	if p != nil {
		r.ep.PeerDown(id)
		if p.remote != nil {
			p.remote.PeerDown(p.self)
		}
	}
}

// Connected reports whether id is connected.
func (r *MemRouter) Connected(id p2p.ID) bool {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return r.peers[id] != nil
}

// Inject queues a message from peer id to the node, as if the peer had
// sent it on its own (unsolicited, duplicated, late...). It returns false
// if the peer is not connected, the link lost it, or its queue is full.
func (r *MemRouter) Inject(id p2p.ID, m Msg) bool {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	p := r.peers[id]
	return p != nil && r.enqueueLocked(p, m)
}

// Punished returns the peers the node punished and why.
func (r *MemRouter) Punished() map[p2p.ID]error {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	out := make(map[p2p.ID]error, len(r.punished))
	for id, err := range r.punished {
		out[id] = err
	}
	return out
}

// Sent returns the messages the node sent id that reached it (with
// RecordSent).
func (r *MemRouter) Sent(id p2p.ID) []Msg {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return append([]Msg(nil), r.sent[id]...)
}

// Tried returns how many times the node called Send or TrySend for id,
// whatever came of it (a peer gone or lacking the channel included).
func (r *MemRouter) Tried(id p2p.ID) int {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return r.tried[id]
}

// Send implements statesync.Router. It never blocks.
func (r *MemRouter) Send(id p2p.ID, ch byte, msg proto.Message) bool {
	r.mtx.Lock()
	r.tried[id]++
	p := r.peers[id]
	switch {
	case p == nil || !p.channels[ch]:
		r.mtx.Unlock()
		return false
	case p.queue.Len() >= p.link.QueueCap:
		r.mtx.Unlock()
		return false
	case r.lostLocked(p):
		r.mtx.Unlock()
		return true // sent, lost on the way
	}
	if r.record {
		r.sent[id] = append(r.sent[id], Msg{Ch: ch, Msg: msg})
	}
	script := p.script
	r.mtx.Unlock()
	if script == nil {
		return true
	}
	replies := script(ch, msg)
	r.mtx.Lock()
	defer r.mtx.Unlock()
	if r.peers[id] != p {
		return true // disconnected meanwhile: the replies are lost
	}
	for _, m := range replies {
		r.enqueueLocked(p, m)
	}
	return true
}

// TrySend implements statesync.TrySender: the same as Send, which never
// blocks.
func (r *MemRouter) TrySend(id p2p.ID, ch byte, msg proto.Message) bool { return r.Send(id, ch, msg) }

// Punish implements statesync.Router.
func (r *MemRouter) Punish(id p2p.ID, reason error) {
	r.mtx.Lock()
	if r.peers[id] != nil {
		r.punished[id] = reason
	}
	r.mtx.Unlock()
	r.Disconnect(id)
}

// Close disconnects every peer and waits for the router's goroutines.
// Idempotent.
func (r *MemRouter) Close() {
	r.mtx.Lock()
	r.closed = true
	ids := make([]p2p.ID, 0, len(r.peers))
	for id := range r.peers {
		ids = append(ids, id)
	}
	r.mtx.Unlock()
	for _, id := range ids {
		r.Disconnect(id)
	}
	r.wg.Wait()
}

func (r *MemRouter) lostLocked(p *memPeer) bool {
	return p.link.DropPercent > 0 && r.rng.IntN(100) < p.link.DropPercent
}

func (r *MemRouter) enqueueLocked(p *memPeer, m Msg) bool {
	if p.queue.Len() >= p.link.QueueCap || r.lostLocked(p) {
		return false
	}
	r.pushLocked(p, m)
	return true
}

func (r *MemRouter) pushLocked(p *memPeer, m Msg) {
	r.seq++
	heap.Push(&p.queue, memItem{due: time.Now().Add(p.link.Delay + m.Delay), seq: r.seq, msg: m})
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// pump delivers p's messages when due, until p is disconnected.
func (r *MemRouter) pump(p *memPeer) {
	defer r.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mtx.Lock()
		var next *memItem
		wait := time.Hour
		if p.queue.Len() > 0 {
			if d := time.Until(p.queue[0].due); d <= 0 {
				it := heap.Pop(&p.queue).(memItem)
				next = &it
			} else {
				wait = d
			}
		}
		r.mtx.Unlock()
		if next != nil {
			select {
			case <-p.stop:
				return
			default:
			}
			r.ep.Deliver(p.id, next.msg.Ch, next.msg.Msg)
			continue
		}
		timer.Reset(wait)
		select {
		case <-p.wake:
		case <-timer.C:
		case <-p.stop:
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

type memItem struct {
	due time.Time
	seq uint64
	msg Msg
}

type memQueue []memItem

func (q memQueue) Len() int { return len(q) }
func (q memQueue) Less(i, j int) bool {
	return q[i].due.Before(q[j].due) || (q[i].due.Equal(q[j].due) && q[i].seq < q[j].seq)
}
func (q memQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *memQueue) Push(x any)   { *q = append(*q, x.(memItem)) }
func (q *memQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// Remote is peer id's end of its link on a MemRouter, for a real node (a
// serving Reactor, say) playing id: attach it to that node as its Router
// (it has Send, TrySend and Punish) before starting the node, then Connect.
// The node under test is known to the peer as self. Remote is valid
// across reconnections. Safe for concurrent use.
type Remote struct {
	r        *MemRouter
	id, self p2p.ID
}

// Remote returns the end of peer id's link, the node under test being
// self to it.
func (r *MemRouter) Remote(id, self p2p.ID) *Remote { return &Remote{r: r, id: id, self: self} }

// Connect connects the peer, played by peer, speaking channels, over link
// (or reconnects it): peer is told PeerUp(self) first and the node under
// test PeerUp(id); every message the node sends id that the link does not
// lose is handed to peer.Deliver(self, ...) on the node's Send goroutine
// (peer's Deliver must not block: a Reactor's does not); when the link
// closes, both are told PeerDown.
func (x *Remote) Connect(channels []byte, peer Endpoint, link Link) {
	self := x.self
	script := func(ch byte, msg proto.Message) []Msg {
		peer.Deliver(self, ch, msg)
		return nil
	}
	x.r.connect(&memPeer{id: x.id, script: script, link: link, remote: peer, self: self}, channels)
}

// Send queues msg for the node under test, as from the peer, with the
// link's loss and delay. It never blocks and returns false if to is not
// the node under test, the link is closed or the queue is full (true if
// the link lost it).
func (x *Remote) Send(to p2p.ID, ch byte, msg proto.Message) bool {
	if to != x.self {
		return false
	}
	r := x.r
	r.mtx.Lock()
	defer r.mtx.Unlock()
	p := r.peers[x.id]
	switch {
	case p == nil || p.remote == nil || p.queue.Len() >= p.link.QueueCap:
		return false
	case r.lostLocked(p):
		return true
	}
	r.pushLocked(p, Msg{Ch: ch, Msg: msg})
	return true
}

// TrySend is Send, which never blocks.
func (x *Remote) TrySend(to p2p.ID, ch byte, msg proto.Message) bool { return x.Send(to, ch, msg) }

// Punish closes the link, as the peer's switch would, on a goroutine of
// the router (so that the peer may punish from inside its Deliver, which
// runs on the node's Send). The router does not record it in Punished.
func (x *Remote) Punish(to p2p.ID, _ error) {
	r := x.r
	r.mtx.Lock()
	defer r.mtx.Unlock()
	if to != x.self || r.closed || r.peers[x.id] == nil {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.Disconnect(x.id)
	}()
}
