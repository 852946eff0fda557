package statesync

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/cometbft/cometbft/p2p"

	ssproto "github.com/statesync/statesync/proto"
)

// maxSnapshotsPerPeer caps how many snapshots one peer can make us hold. It
// matches what honest peers send per request (recentSnapshots).
const maxSnapshotsPerPeer = recentSnapshots

// snapshotKey identifies a snapshot by everything a peer advertised about it,
// so two peers advertising different chunk counts or hashes for the same
// height and format are two different snapshots.
type snapshotKey [sha256.Size]byte

// snapshot is a snapshot advertised by one or more peers.
type snapshot struct {
	Height   uint64
	Format   uint32
	Chunks   uint32
	Hash     []byte
	Metadata []byte

	key snapshotKey
}

func newSnapshot(m *ssproto.SnapshotsResponse) *snapshot {
	s := &snapshot{
		Height:   m.Height,
		Format:   m.Format,
		Chunks:   m.Chunks,
		Hash:     append([]byte(nil), m.Hash...),
		Metadata: append([]byte(nil), m.Metadata...),
	}
	h := sha256.New()
	var buf [16]byte
	binary.BigEndian.PutUint64(buf[0:8], s.Height)
	binary.BigEndian.PutUint32(buf[8:12], s.Format)
	binary.BigEndian.PutUint32(buf[12:16], s.Chunks)
	h.Write(buf[:])
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(s.Hash)))
	h.Write(buf[:4])
	h.Write(s.Hash)
	h.Write(s.Metadata)
	copy(s.key[:], h.Sum(nil))
	return s
}

func (s *snapshot) String() string {
	return fmt.Sprintf("snapshot{height: %d, format: %d, chunks: %d, hash: %X}", s.Height, s.Format, s.Chunks, s.Hash)
}

// snapshotPool is the goroutine-free record of advertised snapshots: who
// advertises what, what was rejected, and what must wait. Not safe for
// concurrent use: the syncer loop owns it.
type snapshotPool struct {
	snapshots map[snapshotKey]*snapshot
	peers     map[snapshotKey]map[p2p.ID]struct{}
	byPeer    map[p2p.ID]map[snapshotKey]struct{}

	rejected        map[snapshotKey]error
	rejectedFormats map[uint32]struct{}
	rejectedPeers   map[p2p.ID]struct{}
	deferred        map[snapshotKey]time.Time // not to be tried before
}

func newSnapshotPool() *snapshotPool {
	return &snapshotPool{
		snapshots:       make(map[snapshotKey]*snapshot),
		peers:           make(map[snapshotKey]map[p2p.ID]struct{}),
		byPeer:          make(map[p2p.ID]map[snapshotKey]struct{}),
		rejected:        make(map[snapshotKey]error),
		rejectedFormats: make(map[uint32]struct{}),
		rejectedPeers:   make(map[p2p.ID]struct{}),
		deferred:        make(map[snapshotKey]time.Time),
	}
}

// add records that peer advertises m. It returns the pooled snapshot and
// whether the snapshot was new to the pool. Advertisements from rejected
// peers, and beyond maxSnapshotsPerPeer per peer, are ignored (nil).
func (p *snapshotPool) add(peer p2p.ID, m *ssproto.SnapshotsResponse) (*snapshot, bool) {
	if _, ok := p.rejectedPeers[peer]; ok {
		return nil, false
	}
	s := newSnapshot(m)
	if _, ok := p.byPeer[peer][s.key]; ok {
		return p.snapshots[s.key], false
	}
	if len(p.byPeer[peer]) >= maxSnapshotsPerPeer {
		return nil, false
	}
	isNew := false
	if existing, ok := p.snapshots[s.key]; ok {
		s = existing
	} else {
		p.snapshots[s.key] = s
		p.peers[s.key] = make(map[p2p.ID]struct{})
		isNew = true
	}
	p.peers[s.key][peer] = struct{}{}
	if p.byPeer[peer] == nil {
		p.byPeer[peer] = make(map[snapshotKey]struct{})
	}
	p.byPeer[peer][s.key] = struct{}{}
	return s, isNew
}

// usable reports whether s may still be tried (ignoring deferral).
func (p *snapshotPool) usable(s *snapshot) bool {
	if _, ok := p.rejected[s.key]; ok {
		return false
	}
	if _, ok := p.rejectedFormats[s.Format]; ok {
		return false
	}
	return len(p.peers[s.key]) > 0
}

// ranked returns the usable, non-deferred snapshots best first: advertised
// by more peers, then higher, then newer format; ties broken by key so the
// order is total.
func (p *snapshotPool) ranked(now time.Time) []*snapshot {
	out := make([]*snapshot, 0, len(p.snapshots))
	for _, s := range p.snapshots {
		if !p.usable(s) {
			continue
		}
		if until, ok := p.deferred[s.key]; ok && now.Before(until) {
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if na, nb := len(p.peers[a.key]), len(p.peers[b.key]); na != nb {
			return na > nb
		}
		if a.Height != b.Height {
			return a.Height > b.Height
		}
		if a.Format != b.Format {
			return a.Format > b.Format
		}
		return string(a.key[:]) < string(b.key[:])
	})
	return out
}

// best returns the best snapshot to try now, or nil.
func (p *snapshotPool) best(now time.Time) *snapshot {
	if r := p.ranked(now); len(r) > 0 {
		return r[0]
	}
	return nil
}

// nextDeferred returns when the earliest deferred usable snapshot becomes
// available again, and false if none is deferred.
func (p *snapshotPool) nextDeferred() (time.Time, bool) {
	var next time.Time
	found := false
	for key, until := range p.deferred {
		if !p.usable(p.snapshots[key]) {
			continue
		}
		if !found || until.Before(next) {
			next, found = until, true
		}
	}
	return next, found
}

// deferUntil keeps s out of best until t (e.g. its height+2 does not exist
// yet, or the state provider had a transient failure).
func (p *snapshotPool) deferUntil(s *snapshot, t time.Time) {
	p.deferred[s.key] = t
}

// reject rules s out for good.
func (p *snapshotPool) reject(s *snapshot, reason error) {
	p.rejected[s.key] = reason
	delete(p.deferred, s.key)
}

// rejectFormat rules out every snapshot of format f.
func (p *snapshotPool) rejectFormat(f uint32) {
	p.rejectedFormats[f] = struct{}{}
}

// rejectPeer forgets peer's advertisements and ignores it from now on.
func (p *snapshotPool) rejectPeer(peer p2p.ID) {
	p.rejectedPeers[peer] = struct{}{}
	p.removePeer(peer)
}

// isRejectedPeer reports whether peer was rejected.
func (p *snapshotPool) isRejectedPeer(peer p2p.ID) bool {
	_, ok := p.rejectedPeers[peer]
	return ok
}

// removePeer forgets peer's advertisements (it disconnected).
func (p *snapshotPool) removePeer(peer p2p.ID) {
	for key := range p.byPeer[peer] {
		delete(p.peers[key], peer)
	}
	delete(p.byPeer, peer)
}

// forget drops peer's advertisement of s (the peer turned out not to have
// it); a later advertisement adds it back.
func (p *snapshotPool) forget(peer p2p.ID, s *snapshot) {
	delete(p.peers[s.key], peer)
	delete(p.byPeer[peer], s.key)
}

// peersOf returns the peers advertising s, sorted by ID.
func (p *snapshotPool) peersOf(s *snapshot) []p2p.ID {
	out := make([]p2p.ID, 0, len(p.peers[s.key]))
	for id := range p.peers[s.key] {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// advertises reports whether peer advertises s.
func (p *snapshotPool) advertises(peer p2p.ID, s *snapshot) bool {
	_, ok := p.peers[s.key][peer]
	return ok
}

// size returns how many distinct snapshots were ever advertised.
func (p *snapshotPool) size() int { return len(p.snapshots) }

// rejectedCount returns how many snapshots were rejected.
func (p *snapshotPool) rejectedCount() int { return len(p.rejected) }
