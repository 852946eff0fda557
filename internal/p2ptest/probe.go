package p2ptest

import (
	"github.com/cometbft/cometbft/p2p"
)

// Probe is a p2p.Reactor for tests and benchmarks that speaks whatever
// channels it is given and nothing else: the test sends through the
// switch's peers (Peer.Send, Peer.TrySend) and sees every message received
// through OnReceive. A probe plays a requester, an attacker or a load
// generator on a real MConnection without a reactor of its own.
type Probe struct {
	p2p.BaseReactor
	chans     []*p2p.ChannelDescriptor
	onReceive func(p2p.Envelope)
}

// NewProbe returns a probe registering chans. onReceive (may be nil) is
// called on the sending peer's receive routine, as the switch calls every
// reactor's Receive: while it blocks, nothing more is read from that
// peer's connection, which is how a test makes a peer that never reads.
func NewProbe(name string, chans []*p2p.ChannelDescriptor, onReceive func(p2p.Envelope)) *Probe {
	p := &Probe{chans: chans, onReceive: onReceive}
	p.BaseReactor = *p2p.NewBaseReactor(name, p)
	return p
}

// GetChannels implements p2p.Reactor.
func (p *Probe) GetChannels() []*p2p.ChannelDescriptor { return p.chans }

// Receive implements p2p.Reactor.
func (p *Probe) Receive(e p2p.Envelope) {
	if p.onReceive != nil {
		p.onReceive(e)
	}
}
