package statesync

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/cometbft/cometbft/p2p"
)

// chunkQueue spools one snapshot's chunks to disk under its own directory,
// so memory stays bounded whatever the snapshot size. It remembers who sent
// each chunk (for RejectSenders). Not safe for concurrent use: the syncer
// loop owns it; the applier only reads files whose index it was handed.
type chunkQueue struct {
	dir    string
	have   []bool
	sender []p2p.ID
	count  uint32 // chunks on disk
	bytes  int64  // bytes on disk
}

// newChunkQueue creates a spool directory under tempDir (the OS default when
// empty) for s.
func newChunkQueue(tempDir string, s *snapshot) (*chunkQueue, error) {
	if tempDir != "" {
		if err := os.MkdirAll(tempDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating chunk spool directory: %w", err)
		}
	}
	dir, err := os.MkdirTemp(tempDir, fmt.Sprintf("statesync-%d-%d-", s.Height, s.Format))
	if err != nil {
		return nil, fmt.Errorf("creating chunk spool directory: %w", err)
	}
	return &chunkQueue{
		dir:    dir,
		have:   make([]bool, s.Chunks),
		sender: make([]p2p.ID, s.Chunks),
	}, nil
}

func (q *chunkQueue) size() uint32 { return uint32(len(q.have)) }

func (q *chunkQueue) path(index uint32) string {
	return filepath.Join(q.dir, strconv.FormatUint(uint64(index), 10))
}

// has reports whether chunk index is on disk.
func (q *chunkQueue) has(index uint32) bool {
	return index < q.size() && q.have[index]
}

// put spools a chunk. It returns false without writing if the chunk is
// already on disk. The write is atomic (temp file and rename), so a crash
// never leaves a torn chunk behind.
func (q *chunkQueue) put(index uint32, data []byte, sender p2p.ID) (bool, error) {
	if index >= q.size() {
		return false, fmt.Errorf("chunk index %d out of range (%d chunks)", index, q.size())
	}
	if q.have[index] {
		return false, nil
	}
	tmp := q.path(index) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return false, fmt.Errorf("spooling chunk %d: %w", index, err)
	}
	if err := os.Rename(tmp, q.path(index)); err != nil {
		return false, fmt.Errorf("spooling chunk %d: %w", index, err)
	}
	q.have[index] = true
	q.sender[index] = sender
	q.count++
	q.bytes += int64(len(data))
	return true, nil
}

// load reads a spooled chunk. Safe to call from another goroutine for an
// index that is on disk and not being discarded.
func (q *chunkQueue) load(index uint32) ([]byte, error) {
	return os.ReadFile(q.path(index))
}

// senderOf returns who sent chunk index ("" if not on disk).
func (q *chunkQueue) senderOf(index uint32) p2p.ID {
	if !q.has(index) {
		return ""
	}
	return q.sender[index]
}

// discard deletes chunk index from disk so it is fetched again.
func (q *chunkQueue) discard(index uint32) error {
	if !q.has(index) {
		return nil
	}
	info, statErr := os.Stat(q.path(index))
	if err := os.Remove(q.path(index)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("discarding chunk %d: %w", index, err)
	}
	if statErr == nil {
		q.bytes -= info.Size()
	}
	q.have[index] = false
	q.sender[index] = ""
	q.count--
	return nil
}

// discardSender discards every chunk from peer with index >= from (chunks
// below from are applied already) and returns their indexes.
func (q *chunkQueue) discardSender(peer p2p.ID, from uint32) ([]uint32, error) {
	var out []uint32
	for i := from; i < q.size(); i++ {
		if q.have[i] && q.sender[i] == peer {
			if err := q.discard(i); err != nil {
				return out, err
			}
			out = append(out, i)
		}
	}
	return out, nil
}

// close removes the spool directory and everything in it.
func (q *chunkQueue) close() error {
	return os.RemoveAll(q.dir)
}

// chunkRequest is a chunk request the scheduler wants sent.
type chunkRequest struct {
	peer  p2p.ID
	index uint32
}

// fetchPeer is the scheduler's view of one peer serving the snapshot.
type fetchPeer struct {
	window   int                  // current cap on requests in flight
	inflight map[uint32]time.Time // index -> deadline
	lacks    map[uint32]struct{}  // indexes the peer said it does not have
	asked    map[uint32]struct{}  // indexes ever requested (late replies are accepted)
	strikes  int                  // timeouts in a row without any answer
}

// maxSilentStrikes is how many timeouts in a row, with no answer between
// them, make the scheduler stop asking a peer for this snapshot.
const maxSilentStrikes = 3

// fetchScheduler decides which chunk to request from which peer. Every peer
// serving the snapshot keeps its own window of requests in flight, filled
// lowest index first so applying (strictly in order) is never starved. A
// request times out when its peer delivers nothing for the timeout: each
// delivery from a peer pushes back the deadlines of its other requests,
// because a peer serves its window one chunk after another. A timed-out
// request is re-requested elsewhere and halves the peer's window; each
// delivery grows it back by one up to the configured window.
//
// Goroutine-free and not safe for concurrent use: the syncer loop owns it.
type fetchScheduler struct {
	n         uint32
	silent    map[p2p.ID]struct{} // peers dropped for answering nothing
	maxWindow int
	timeout   time.Duration
	done      []bool            // spooled (or applied)
	owner     map[uint32]p2p.ID // in-flight index -> peer
	peers     map[p2p.ID]*fetchPeer
	cursor    uint32 // every index below is done
}

func newFetchScheduler(n uint32, window int, timeout time.Duration) *fetchScheduler {
	if window < 1 {
		window = 1
	}
	return &fetchScheduler{
		n:         n,
		maxWindow: window,
		timeout:   timeout,
		done:      make([]bool, n),
		owner:     make(map[uint32]p2p.ID),
		peers:     make(map[p2p.ID]*fetchPeer),
		silent:    make(map[p2p.ID]struct{}),
	}
}

// addPeer starts using peer (no-op if known).
func (f *fetchScheduler) addPeer(peer p2p.ID) {
	if _, ok := f.peers[peer]; ok {
		return
	}
	delete(f.silent, peer)
	f.peers[peer] = &fetchPeer{
		window:   f.maxWindow,
		inflight: make(map[uint32]time.Time),
		lacks:    make(map[uint32]struct{}),
		asked:    make(map[uint32]struct{}),
	}
}

// hasPeer reports whether peer is in use.
func (f *fetchScheduler) hasPeer(peer p2p.ID) bool {
	_, ok := f.peers[peer]
	return ok
}

// numPeers returns the number of peers in use.
func (f *fetchScheduler) numPeers() int { return len(f.peers) }

// removePeer stops using peer; its in-flight chunks become needed again.
func (f *fetchScheduler) removePeer(peer p2p.ID) {
	p, ok := f.peers[peer]
	if !ok {
		return
	}
	for index := range p.inflight {
		delete(f.owner, index)
	}
	delete(f.peers, peer)
}

// assign fills every peer's window and returns the requests to send.
func (f *fetchScheduler) assign(now time.Time) []chunkRequest {
	ids := make([]p2p.ID, 0, len(f.peers))
	for id := range f.peers {
		ids = append(ids, id)
	}
	// Fewest in flight first, so the lowest indexes are spread over peers.
	sort.Slice(ids, func(i, j int) bool {
		a, b := len(f.peers[ids[i]].inflight), len(f.peers[ids[j]].inflight)
		if a != b {
			return a < b
		}
		return ids[i] < ids[j]
	})
	var out []chunkRequest
	for progress := true; progress; {
		progress = false
		for _, id := range ids {
			p := f.peers[id]
			if len(p.inflight) >= p.window {
				continue
			}
			index, ok := f.nextFor(p)
			if !ok {
				continue
			}
			p.inflight[index] = now.Add(f.timeout)
			p.asked[index] = struct{}{}
			f.owner[index] = id
			out = append(out, chunkRequest{peer: id, index: index})
			progress = true
		}
	}
	return out
}

// nextFor returns the lowest needed index not in flight that p may have.
func (f *fetchScheduler) nextFor(p *fetchPeer) (uint32, bool) {
	for i := f.cursor; i < f.n; i++ {
		if f.done[i] {
			continue
		}
		if _, busy := f.owner[i]; busy {
			continue
		}
		if _, lacks := p.lacks[i]; lacks {
			continue
		}
		return i, true
	}
	return 0, false
}

// unassign withdraws a request that could not be sent; the chunk is
// assigned again on the next call to assign.
func (f *fetchScheduler) unassign(peer p2p.ID, index uint32) {
	if p, ok := f.peers[peer]; ok && f.owner[index] == peer {
		delete(p.inflight, index)
		delete(f.owner, index)
	}
}

// received records a chunk from peer. It reports whether the chunk was
// solicited (requested from this peer now or earlier) and still needed.
func (f *fetchScheduler) received(peer p2p.ID, index uint32, now time.Time) (solicited bool) {
	p, ok := f.peers[peer]
	if !ok || index >= f.n {
		return false
	}
	if _, asked := p.asked[index]; !asked {
		return false
	}
	f.progressed(p, now)
	if f.done[index] {
		return false
	}
	if owner, busy := f.owner[index]; busy {
		delete(f.peers[owner].inflight, index)
		delete(f.owner, index)
	}
	f.markDone(index)
	if p.window < f.maxWindow {
		p.window++
	}
	return true
}

// missing records that peer does not have chunk index; it is not asked for
// it again. It reports whether the answer was solicited.
func (f *fetchScheduler) missing(peer p2p.ID, index uint32, now time.Time) bool {
	p, ok := f.peers[peer]
	if !ok || index >= f.n {
		return false
	}
	if _, asked := p.asked[index]; !asked {
		return false
	}
	f.progressed(p, now)
	p.lacks[index] = struct{}{}
	if f.owner[index] == peer {
		delete(p.inflight, index)
		delete(f.owner, index)
	}
	return true
}

// progressed pushes back the deadlines of p's requests: it is delivering.
func (f *fetchScheduler) progressed(p *fetchPeer, now time.Time) {
	p.strikes = 0
	d := now.Add(f.timeout)
	for index, old := range p.inflight {
		if old.Before(d) {
			p.inflight[index] = d
		}
	}
}

func (f *fetchScheduler) markDone(index uint32) {
	f.done[index] = true
	for f.cursor < f.n && f.done[f.cursor] {
		f.cursor++
	}
}

// refetch marks index needed again (its chunk was discarded).
func (f *fetchScheduler) refetch(index uint32) {
	if index >= f.n {
		return
	}
	f.done[index] = false
	if index < f.cursor {
		f.cursor = index
	}
}

// expire times out requests past their deadline, returns them, and halves
// the windows of their peers. A peer that timed out maxSilentStrikes times
// in a row without answering anything is no longer asked (see unhelpful).
func (f *fetchScheduler) expire(now time.Time) []chunkRequest {
	var out []chunkRequest
	for id, p := range f.peers {
		timedOut := false
		for index, deadline := range p.inflight {
			if now.Before(deadline) {
				continue
			}
			delete(p.inflight, index)
			delete(f.owner, index)
			out = append(out, chunkRequest{peer: id, index: index})
			timedOut = true
		}
		if timedOut {
			p.window = max(1, p.window/2)
			p.strikes++
			if p.strikes >= maxSilentStrikes {
				f.removePeer(id)
				f.silent[id] = struct{}{}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out
}

// nextDeadline returns the earliest deadline of any request in flight.
func (f *fetchScheduler) nextDeadline() (time.Time, bool) {
	var next time.Time
	found := false
	for _, p := range f.peers {
		for _, d := range p.inflight {
			if !found || d.Before(next) {
				next, found = d, true
			}
		}
	}
	return next, found
}

// inflight returns the number of requests in flight.
func (f *fetchScheduler) inflight() int { return len(f.owner) }

// complete reports whether every chunk is done.
func (f *fetchScheduler) complete() bool { return f.cursor >= f.n }

// stalled reports whether some needed chunk cannot be requested from any
// peer in use (all lack it, or there are no peers) and nothing is in flight.
func (f *fetchScheduler) stalled() bool {
	if f.complete() || len(f.owner) > 0 {
		return false
	}
	for _, p := range f.peers {
		if _, ok := f.nextFor(p); ok {
			return false
		}
	}
	return true
}

// unhelpful returns, sorted, the peers that said they lack a needed chunk
// and the peers dropped for silence: the ones to blame for a stall.
func (f *fetchScheduler) unhelpful() []p2p.ID {
	var out []p2p.ID
	for id := range f.silent {
		out = append(out, id)
	}
	for id, p := range f.peers {
		for index := range p.lacks {
			if !f.done[index] {
				out = append(out, id)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// forget stops using peer and clears what is known of it, so that if it
// advertises the snapshot again it starts afresh.
func (f *fetchScheduler) forget(peer p2p.ID) {
	f.removePeer(peer)
	delete(f.silent, peer)
}
