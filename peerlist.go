package statesync

import (
	"bytes"
	"sort"
	"sync"

	"github.com/cometbft/cometbft/p2p"
)

// peerList tracks the connected peers and the channels each advertises.
//
// A peer whose channel list is unknown (libp2p peers carry none) is assumed
// to speak every channel; a send on a channel it lacks simply fails.
// Waiters learn about changes through changed(), a channel closed on the next
// add or remove, so nobody polls.
type peerList struct {
	mtx    sync.Mutex
	peers  map[p2p.ID][]byte // nil = unknown: assume all channels
	notify chan struct{}
}

func newPeerList() *peerList {
	return &peerList{peers: make(map[p2p.ID][]byte), notify: make(chan struct{})}
}

// add records a peer (replacing an earlier record) and wakes waiters.
func (l *peerList) add(id p2p.ID, channels []byte) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	if channels != nil {
		channels = bytes.Clone(channels)
	}
	l.peers[id] = channels
	l.wakeLocked()
}

// remove forgets a peer and wakes waiters; it reports whether it was known.
func (l *peerList) remove(id p2p.ID) bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	if _, ok := l.peers[id]; !ok {
		return false
	}
	delete(l.peers, id)
	l.wakeLocked()
	return true
}

func (l *peerList) wakeLocked() {
	close(l.notify)
	l.notify = make(chan struct{})
}

// changed returns a channel closed on the next add or remove.
func (l *peerList) changed() <-chan struct{} {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return l.notify
}

// has reports whether the peer is connected and speaks ch.
func (l *peerList) has(id p2p.ID, ch byte) bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	chans, ok := l.peers[id]
	return ok && speaks(chans, ch)
}

// connected reports whether id is in the list, whatever it speaks.
func (l *peerList) connected(id p2p.ID) bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	_, ok := l.peers[id]
	return ok
}

// capable returns the peers that speak every one of chs, sorted by ID.
func (l *peerList) capable(chs ...byte) []p2p.ID {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	out := make([]p2p.ID, 0, len(l.peers))
	for id, chans := range l.peers {
		ok := true
		for _, ch := range chs {
			if !speaks(chans, ch) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// len returns the number of connected peers.
func (l *peerList) len() int {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return len(l.peers)
}

func speaks(chans []byte, ch byte) bool {
	return chans == nil || bytes.IndexByte(chans, ch) >= 0
}

// peerChannels extracts the channel list a CometBFT peer advertised in its
// handshake, or nil when the transport does not carry one (libp2p).
func peerChannels(p p2p.Peer) []byte {
	switch ni := p.NodeInfo().(type) {
	case p2p.DefaultNodeInfo:
		if len(ni.Channels) == 0 {
			return nil
		}
		return ni.Channels
	case *p2p.DefaultNodeInfo:
		if ni == nil || len(ni.Channels) == 0 {
			return nil
		}
		return ni.Channels
	default:
		return nil
	}
}
