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

const (
	// maxSnapshotsPerPeer caps how many snapshots one peer can make us
	// hold. It matches what honest peers send per request
	// (recentSnapshots).
	maxSnapshotsPerPeer = recentSnapshots
	// maxPeerSnapshotBytes caps the bytes of the snapshots (hash, metadata
	// and bookkeeping) one peer's advertisements make us hold.
	maxPeerSnapshotBytes = 1 << 20
	// maxPoolSnapshotBytes caps the bytes of every snapshot held by the
	// pool, whoever advertises it. With the per-peer caps it takes
	// maxPoolSnapshotBytes/maxPeerSnapshotBytes connected peers to reach.
	maxPoolSnapshotBytes = 16 << 20
	// snapshotOverhead is what one pooled snapshot costs beyond its hash
	// and metadata: the struct, its key, and its entries in the maps.
	snapshotOverhead = 256
)

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

// cost is what holding s costs, in bytes, for the budgets.
func (s *snapshot) cost() int64 {
	return int64(len(s.Hash)+len(s.Metadata)) + snapshotOverhead
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
//
// What a hostile peer can do to it, and what bounds it: a peer makes the
// pool hold at most maxSnapshotsPerPeer snapshots and maxPeerSnapshotBytes
// bytes (a further advertisement evicts the peer's lowest one: honest
// peers advertise their most recent snapshots, dropping pruned ones); all
// peers together at most maxPoolSnapshotBytes (further new snapshots are
// dropped). A snapshot is deleted when its last advertiser leaves or
// forgets it, and a rejected one is deleted at once: only its key and the
// reason stay, so that it is not tried again. Memory therefore follows the
// peers connected now, not the peers seen during the Sync.
type snapshotPool struct {
	snapshots map[snapshotKey]*snapshot
	peers     map[snapshotKey]map[p2p.ID]struct{}
	byPeer    map[p2p.ID]map[snapshotKey]struct{}
	peerBytes map[p2p.ID]int64
	bytes     int64 // cost of every held snapshot
	seen      int   // distinct snapshots ever advertised
	dropped   int   // advertisements dropped for the total budget

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
		peerBytes:       make(map[p2p.ID]int64),
		rejected:        make(map[snapshotKey]error),
		rejectedFormats: make(map[uint32]struct{}),
		rejectedPeers:   make(map[p2p.ID]struct{}),
		deferred:        make(map[snapshotKey]time.Time),
	}
}

// add records that peer advertises m. It returns the pooled snapshot and
// whether the snapshot was new to the pool. Advertisements from rejected
// peers, of rejected snapshots, and of new snapshots beyond the total
// budget are ignored (nil). A peer at its own caps makes room by giving up
// its lowest advertisement.
func (p *snapshotPool) add(peer p2p.ID, m *ssproto.SnapshotsResponse) (*snapshot, bool) {
	if _, ok := p.rejectedPeers[peer]; ok {
		return nil, false
	}
	s := newSnapshot(m)
	if _, ok := p.rejected[s.key]; ok {
		return nil, false
	}
	if _, ok := p.byPeer[peer][s.key]; ok {
		return p.snapshots[s.key], false
	}
	existing, held := p.snapshots[s.key]
	if !held && p.bytes+s.cost() > maxPoolSnapshotBytes {
		p.dropped++
		return nil, false
	}
	if s.cost() > maxPeerSnapshotBytes {
		return nil, false
	}
	for len(p.byPeer[peer]) >= maxSnapshotsPerPeer || p.peerBytes[peer]+s.cost() > maxPeerSnapshotBytes {
		lowest := p.lowestOf(peer)
		if lowest == nil || lowest.Height > s.Height {
			return nil, false // the new one is the lowest: keep the others
		}
		p.forget(peer, lowest)
	}
	isNew := false
	if held {
		s = existing
	} else {
		p.snapshots[s.key] = s
		p.peers[s.key] = make(map[p2p.ID]struct{})
		p.bytes += s.cost()
		p.seen++
		isNew = true
	}
	p.peers[s.key][peer] = struct{}{}
	if p.byPeer[peer] == nil {
		p.byPeer[peer] = make(map[snapshotKey]struct{})
	}
	p.byPeer[peer][s.key] = struct{}{}
	p.peerBytes[peer] += s.cost()
	return s, isNew
}

// lowestOf returns the lowest snapshot peer advertises (ties by key), or
// nil.
func (p *snapshotPool) lowestOf(peer p2p.ID) *snapshot {
	var low *snapshot
	for key := range p.byPeer[peer] {
		s := p.snapshots[key]
		if low == nil || s.Height < low.Height || (s.Height == low.Height && string(key[:]) < string(low.key[:])) {
			low = s
		}
	}
	return low
}

// unlink drops peer's advertisement of the snapshot keyed key, deleting
// the snapshot when nobody advertises it any more.
func (p *snapshotPool) unlink(peer p2p.ID, key snapshotKey) {
	if _, ok := p.byPeer[peer][key]; !ok {
		return
	}
	s := p.snapshots[key]
	delete(p.byPeer[peer], key)
	if len(p.byPeer[peer]) == 0 {
		delete(p.byPeer, peer)
	}
	if p.peerBytes[peer] -= s.cost(); p.peerBytes[peer] <= 0 {
		delete(p.peerBytes, peer)
	}
	delete(p.peers[key], peer)
	if len(p.peers[key]) == 0 {
		p.drop(key)
	}
}

// drop deletes the snapshot keyed key (its rejection, if any, stays).
func (p *snapshotPool) drop(key snapshotKey) {
	s, ok := p.snapshots[key]
	if !ok {
		return
	}
	for peer := range p.peers[key] {
		delete(p.byPeer[peer], key)
		if len(p.byPeer[peer]) == 0 {
			delete(p.byPeer, peer)
		}
		if p.peerBytes[peer] -= s.cost(); p.peerBytes[peer] <= 0 {
			delete(p.peerBytes, peer)
		}
	}
	delete(p.snapshots, key)
	delete(p.peers, key)
	delete(p.deferred, key)
	p.bytes -= s.cost()
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
	if _, ok := p.snapshots[s.key]; !ok {
		return // nobody advertises it any more
	}
	p.deferred[s.key] = t
}

// reject rules s out for good: it is deleted, only its key and the reason
// stay.
func (p *snapshotPool) reject(s *snapshot, reason error) {
	p.rejected[s.key] = reason
	p.drop(s.key)
}

// rejectFormat rules out every snapshot of format f (and deletes them).
func (p *snapshotPool) rejectFormat(f uint32) {
	p.rejectedFormats[f] = struct{}{}
	for key, s := range p.snapshots {
		if s.Format == f {
			p.drop(key)
		}
	}
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

// removePeer forgets peer's advertisements (it disconnected); snapshots
// nobody else advertises are deleted.
func (p *snapshotPool) removePeer(peer p2p.ID) {
	for key := range p.byPeer[peer] {
		p.unlink(peer, key)
	}
}

// forget drops peer's advertisement of s (the peer turned out not to have
// it); a later advertisement adds it back.
func (p *snapshotPool) forget(peer p2p.ID, s *snapshot) {
	p.unlink(peer, s.key)
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
func (p *snapshotPool) size() int { return p.seen }

// held returns how many snapshots the pool holds now, and their cost in
// bytes.
func (p *snapshotPool) held() (int, int64) { return len(p.snapshots), p.bytes }

// rejectedCount returns how many snapshots were rejected.
func (p *snapshotPool) rejectedCount() int { return len(p.rejected) }
