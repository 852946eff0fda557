package statesync

import (
	"github.com/cometbft/cometbft/p2p"
	"github.com/cosmos/gogoproto/proto"
)

// Router is the part of a p2p layer the Reactor needs to talk to peers. The
// Reactor adapts CometBFT's p2p.Switcher (classic or libp2p) itself when it is
// added to a switch; any other p2p layer implements Router, passes it to
// Reactor.AttachRouter before Start, and drives the Reactor with PeerUp,
// PeerDown and Deliver.
//
// Implementations must be safe for concurrent use.
type Router interface {
	// Send queues msg for peer on channel chID. msg is one of the inner
	// messages of package ssproto (SnapshotsRequest, ChunkResponse, ...):
	// wrapping it into ssproto.Message (its Wrap method) is the router's job.
	// Send may block for a bounded time while the peer's queue is full; it
	// returns false when the peer is gone, lacks the channel, or the queue
	// stayed full.
	Send(peer p2p.ID, chID byte, msg proto.Message) bool

	// Punish disconnects peer for cause. reason wraps ErrPeerMisbehaved or
	// an ssproto validation error. It must not block on the peer.
	Punish(peer p2p.ID, reason error)
}

// TrySender is an optional Router capability: TrySend queues msg only if the
// peer's queue has room right now, never blocking. When a Router implements
// it, the Reactor uses it for small requests sent from its sync loop and
// for every response it serves (a full queue drops the response).
type TrySender interface {
	TrySend(peer p2p.ID, chID byte, msg proto.Message) bool
}

// switchRouter adapts CometBFT's p2p.Switcher to Router.
type switchRouter struct {
	sw p2p.Switcher
}

var (
	_ Router    = switchRouter{}
	_ TrySender = switchRouter{}
)

func (s switchRouter) Send(id p2p.ID, chID byte, msg proto.Message) bool {
	p := s.sw.Peers().Get(id)
	if p == nil {
		return false
	}
	return p.Send(p2p.Envelope{ChannelID: chID, Message: msg})
}

func (s switchRouter) TrySend(id p2p.ID, chID byte, msg proto.Message) bool {
	p := s.sw.Peers().Get(id)
	if p == nil {
		return false
	}
	return p.TrySend(p2p.Envelope{ChannelID: chID, Message: msg})
}

func (s switchRouter) Punish(id p2p.ID, reason error) {
	p := s.sw.Peers().Get(id)
	if p == nil {
		return
	}
	// Safe on the peer's own receive goroutine: stopping an MConnection
	// signals its routines and does not wait for them. The switch calls our
	// RemovePeer synchronously, which never blocks (see Reactor.PeerDown).
	s.sw.StopPeerForError(p, reason)
}
