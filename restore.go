package statesync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/p2p"

	ssproto "github.com/statesync/statesync/proto"
)

// The chunk inbox: Receive hands chunk responses to the restore loop
// through syncer.chunkCh (unbuffered, so each connection holds at most the
// chunk it is handing over), only while an attempt runs. The loop judges
// each one and answers; a chunk it keeps is written to the spool by the
// delivering connection's goroutine, as CometBFT's own reactor does: the
// peers' chunks are written in parallel, each dropped from memory once
// written (but the one the applier needs next, handed to it without a
// read back), and the loop never touches the disk.

// inChunk is a chunk response waiting for the restore loop.
type inChunk struct {
	peer  p2p.ID
	msg   *ssproto.ChunkResponse
	reply chan chunkGrant // buffered (1): the loop answers every inChunk it takes
}

// chunkGrant is the loop's answer to a chunk response: write op to the
// spool and report it to the attempt, or drop the chunk (a nil attempt).
type chunkGrant struct {
	a  *restoreAttempt
	op spoolOp
}

// restoreTarget is what the loop is fetching chunks for right now.
type restoreTarget struct {
	height uint64
	format uint32
	done   chan struct{} // closed when the attempt ends
}

// addChunk hands a chunk response to the loop while a restore attempt
// runs (the loop judges it: one for another snapshot is a strike) and,
// when the loop keeps it, writes it to the spool on the caller's
// goroutine. It waits while the loop is busy, but never past the end of
// the attempt (a write is bounded by the disk). Between attempts a
// response is only counted (it may be a late answer to the previous
// attempt).
func (s *syncer) addChunk(peer p2p.ID, m *ssproto.ChunkResponse) {
	s.inMtx.Lock()
	t := s.target
	s.inMtx.Unlock()
	if t == nil {
		s.r.metrics.unsolicited()
		return
	}
	in := inChunk{peer: peer, msg: m, reply: make(chan chunkGrant, 1)}
	select {
	case s.chunkCh <- in:
	case <-t.done:
		return
	}
	if g := <-in.reply; g.a != nil {
		g.a.spoolChunk(g.op)
	}
}

func (s *syncer) setTarget(t *restoreTarget) {
	s.inMtx.Lock()
	defer s.inMtx.Unlock()
	s.target = t
}

// applyJob hands the applier the next chunk to apply: data when the
// chunk was kept in memory after it was spooled (the hand-off, see
// spoolOp.keep), else it is read back from the spool at path.
type applyJob struct {
	index  uint32
	sender p2p.ID
	path   string
	data   []byte
}

// applyResult is the applier's report on one chunk.
type applyResult struct {
	index uint32
	resp  *abci.ResponseApplySnapshotChunk
	err   error
	took  time.Duration
}

// spoolOp is a chunk file to write (by the goroutine that delivered it),
// or to remove (by the writer).
type spoolOp struct {
	index  uint32
	remove bool   // remove the file (the writer's job), else write data
	data   []byte // the chunk to write; dropped once written unless keep
	size   int64  // len(data)
	sender p2p.ID
	path   string
	// keep: the chunk is the one the applier needs next; once written
	// it is handed to the applier as it is, instead of being dropped and
	// read back from the spool (one chunk-sized allocation, a read and a
	// checksum less per chunk delivered in order).
	keep bool
}

// spoolDone is the writer's report on one spoolOp.
type spoolDone struct {
	op  spoolOp
	err error
}

// errAppRejected means the app answered REJECT_SNAPSHOT to a chunk: the
// snapshot's content is forged (or broken); its peers are punished.
var errAppRejected = errors.New("the app rejected the snapshot")

// restoreAttempt is one attempt at restoring a snapshot: fetch its chunks
// from every peer advertising it, spool them, apply them in order. Its loop
// (run, on Sync's goroutine) owns the fetch scheduler, the spool's
// bookkeeping; it never touches the disk and holds at most one chunk: each
// chunk it keeps is written by the goroutine that delivered it
// (spoolChunk; the peers' writes run in parallel, and a chunk is dropped
// from memory once written, except the one the applier needs next, which
// is handed to it as it is: hot), one writer goroutine removes chunk
// files, one applier goroutine reads the others back and feeds the app
// (as CometBFT's reactor does), so fetching goes on while chunks are
// written or applied. The
// bytes being written stay within the memory budget; beyond it the loop
// stops taking chunks from the inbox, which holds the peers' connections
// back.
type restoreAttempt struct {
	s      *syncer
	r      *Reactor
	snap   *snapshot
	spool  *chunkSpool
	sched  *fetchScheduler
	target *restoreTarget

	jobs    chan applyJob
	results chan applyResult
	ops     chan spoolOp
	done    chan spoolDone

	writing   map[uint32]int // writes and removals queued or running, per index
	queued    []spoolOp      // removals waiting for the writer
	writes    sync.WaitGroup // spoolChunk calls granted and not finished
	memBytes  int64          // bytes granted to spoolChunk, not yet reported written
	maxChunk  int64
	nextApply uint32
	applying  bool
	hot       applyJob // the next chunk to apply, kept in memory after it was spooled (data nil: none)
	retries   map[uint32]int
	stallAt   time.Time
	pausedAt  time.Time // the memory budget is full since
	recv      int64
	started   time.Time
	retrySoon bool
	better    bool // a better snapshot was advertised before any chunk was applied
}

// restore runs one attempt at snap. Fetched chunks stay spooled across
// attempts (and across a crash) until the snapshot is restored or
// rejected.
//
// It returns nil when every chunk was applied, ErrRetrySnapshot,
// ErrRejectSnapshot, ErrAbort, ErrNoPeers or ErrDiskBudget (wrapped) as
// the app, the network or the disk decide, errBetterSnapshot, or
// ctx.Err().
func (s *syncer) restore(ctx context.Context, snap *snapshot) error {
	a, err := s.newAttempt(snap)
	if err != nil {
		return err
	}
	attemptCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		s.setTarget(nil)
		close(a.target.done)
		cancel()
		wg.Wait()
		a.writes.Wait()
		a.abandon()
	}()
	s.setTarget(a.target)
	for _, f := range []func(context.Context){a.applier, a.writer} {
		wg.Add(1)
		if !s.r.goFunc(func(context.Context) { defer wg.Done(); f(attemptCtx) }) {
			wg.Done()
			return ErrStopped
		}
	}
	return a.run(ctx)
}

// newAttempt opens (or reuses) snap's spool and scheduler.
func (s *syncer) newAttempt(snap *snapshot) (*restoreAttempt, error) {
	q, ok := s.queues[snap.key]
	if !ok {
		var err error
		if q, err = openChunkSpool(s.cfg.TempDir, snap); err != nil {
			return nil, err
		}
		s.queues[snap.key] = q
		if q.count > 0 {
			s.r.logger.Info("Resuming from chunks spooled before", "height", snap.Height, "chunks", q.count,
				"bytes", q.bytes, "dir", q.dir)
		}
	}
	sched, ok := s.scheds[snap.key]
	if !ok {
		sched = newFetchScheduler(snap.Chunks, s.cfg.ChunkWindow, s.cfg.ChunkRequestTimeout)
		sched.height, sched.format = snap.Height, snap.Format
		sched.startWindow = 1
		for i := uint32(0); i < snap.Chunks; i++ {
			if q.has(i) {
				sched.have(i)
			}
		}
		s.scheds[snap.key] = sched
	}
	for _, peer := range s.pool.peersOf(snap) {
		if s.r.peers.has(peer, ChunkChannel) {
			sched.addPeer(peer)
		}
	}
	return &restoreAttempt{
		s: s, r: s.r, snap: snap, spool: q, sched: sched,
		target:  &restoreTarget{height: snap.Height, format: snap.Format, done: make(chan struct{})},
		jobs:    make(chan applyJob),
		results: make(chan applyResult),
		ops:     make(chan spoolOp),
		done:    make(chan spoolDone),
		writing: make(map[uint32]int),
		retries: make(map[uint32]int),
		started: time.Now(),
	}, nil
}

// lateAnswer reports whether m answers a request that an earlier attempt,
// at another snapshot, sent to peer (not a strike then).
func (s *syncer) lateAnswer(peer p2p.ID, m *ssproto.ChunkResponse) bool {
	for _, sched := range s.scheds {
		if sched.height == m.Height && sched.format == m.Format && sched.late(peer, m.Index) {
			return true
		}
	}
	return false
}

// run is the attempt's loop.
func (a *restoreAttempt) run(ctx context.Context) error {
	a.r.progress.update(func(p *Progress) {
		p.Phase, p.ChunksFetched, p.ChunksApplied = PhaseRestore, a.spool.count, 0
	})
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		full := a.memBytes >= a.memBudget()
		a.pause(full, now)
		a.request(now, !full)
		if a.nextApply >= a.snap.Chunks && !a.applying {
			a.r.logger.Info("All chunks applied", "height", a.snap.Height, "chunks", a.snap.Chunks,
				"bytes", a.spool.bytes, "took", time.Since(a.started), "timeouts", a.sched.timeouts,
				"hedges", a.sched.hedges, "peers", a.sched.numPeers())
			return nil
		}
		if a.better {
			return fmt.Errorf("%w: over height %d", errBetterSnapshot, a.snap.Height)
		}
		if err := a.checkStall(now); err != nil {
			return err
		}
		if full { // the writer's progress wakes the loop
			timer.Reset(time.Hour)
		} else {
			timer.Reset(max(time.Until(a.wakeAt(now)), time.Millisecond))
		}

		var jobs chan<- applyJob
		job, ready := a.nextJob()
		if ready {
			jobs = a.jobs
		}
		var ops chan<- spoolOp
		var op spoolOp
		if len(a.queued) > 0 {
			ops, op = a.ops, a.queued[0]
		}
		var chunks <-chan inChunk
		if !full {
			chunks = a.s.chunkCh
		}

		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.s.wake:
			a.onInbox()
		case <-timer.C:
			if full {
				break // the peers' answers wait for us: no deadline runs
			}
			for _, req := range a.sched.expire(time.Now()) {
				a.r.metrics.chunkTimeout()
				a.r.logger.Debug("Chunk request timed out", "peer", req.peer, "chunk", req.index)
			}
		case jobs <- job:
			a.applying = true
			if a.hot.data != nil && a.hot.index <= job.index {
				a.hot = applyJob{} // handed over, or passed by
			}
		case ops <- op:
			a.queued[0] = spoolOp{} // the backing array must not keep the op
			a.queued = a.queued[1:]
		case d := <-a.done:
			if err := a.onSpooled(d); err != nil {
				return err
			}
		case in := <-chunks:
			g, err := a.onChunk(in)
			in.reply <- g
			if err != nil {
				return err
			}
		case res := <-a.results:
			if err := a.onApplied(res); err != nil {
				return err
			}
		}
	}
}

// pause stops the clock of the requests in flight while the memory budget
// is full (the loop takes no chunk from the inbox, so the peers' answers
// wait in their connections), and restarts it, later by the pause, when
// there is room again.
func (a *restoreAttempt) pause(full bool, now time.Time) {
	switch {
	case full && a.pausedAt.IsZero():
		a.pausedAt = now
	case !full && !a.pausedAt.IsZero():
		a.sched.shift(now.Sub(a.pausedAt))
		a.pausedAt = time.Time{}
	}
}

// memBudget is how many chunk bytes may be being written at once:
// Config.ChunkMemoryBudget, or 4 of the largest chunk seen when 0.
func (a *restoreAttempt) memBudget() int64 {
	if b := a.s.cfg.ChunkMemoryBudget; b > 0 {
		return b
	}
	return max(defaultMemChunks*a.maxChunk, 1)
}

// defaultMemChunks is the memory budget in chunks when
// Config.ChunkMemoryBudget is 0: four peers writing at once.
const defaultMemChunks = 4

// request sends the requests the scheduler hands out (hedges too unless
// the loop holds answers back). One whose send queue is full is withdrawn
// and retried shortly.
func (a *restoreAttempt) request(now time.Time, hedge bool) {
	a.retrySoon = false
	var reqs []chunkRequest
	if hedge {
		reqs = a.sched.assign(now)
	} else {
		reqs = a.sched.fill(now)
	}
	for _, req := range reqs {
		msg := &ssproto.ChunkRequest{Height: a.snap.Height, Format: a.snap.Format, Index: req.index}
		if a.r.trySend(req.peer, ChunkChannel, msg) {
			continue
		}
		if !a.r.peers.has(req.peer, ChunkChannel) {
			a.sched.removePeer(req.peer)
		} else {
			a.sched.unassign(req.peer, req.index)
			a.retrySoon = true
		}
	}
}

// checkStall gives the snapshot up (deferred) when no peer has been able
// to provide a missing chunk for ChunkRequestTimeout.
func (a *restoreAttempt) checkStall(now time.Time) error {
	if !a.sched.stalled() || a.applying {
		a.stallAt = time.Time{}
		return nil
	}
	if a.stallAt.IsZero() {
		a.stallAt = now
		a.r.logger.Info("No peer can serve the missing chunks; waiting", "peers", a.sched.numPeers())
		return nil
	}
	if now.Sub(a.stallAt) >= a.s.cfg.ChunkRequestTimeout {
		return fmt.Errorf("%w: no peer served the chunks of height %d for %v",
			ErrNoPeers, a.snap.Height, now.Sub(a.stallAt))
	}
	return nil
}

// wakeAt is when the loop must look again without news.
func (a *restoreAttempt) wakeAt(now time.Time) time.Time {
	at := now.Add(time.Hour)
	if d, ok := a.sched.nextDeadline(); ok {
		at = minTime(at, d)
	}
	if !a.stallAt.IsZero() {
		at = minTime(at, a.stallAt.Add(a.s.cfg.ChunkRequestTimeout))
	}
	if a.retrySoon {
		at = minTime(at, now.Add(10*time.Millisecond))
	}
	return at
}

// nextJob returns the job for the next chunk to apply, if it is ready.
func (a *restoreAttempt) nextJob() (applyJob, bool) {
	i := a.nextApply
	if a.applying || i >= a.snap.Chunks {
		return applyJob{}, false
	}
	if !a.spool.has(i) {
		return applyJob{}, false
	}
	if a.hot.data != nil && a.hot.index == i {
		return a.hot, true
	}
	return applyJob{index: i, sender: a.spool.senderOf(i), path: a.spool.path(i)}, true
}

// onInbox takes new advertisements and peer events: a peer advertising
// the snapshot is used; a better snapshot is taken while nothing has been
// applied.
func (a *restoreAttempt) onInbox() {
	a.s.handleInbox(func(peer p2p.ID, adv *snapshot) {
		if adv == a.snap && a.r.peers.has(peer, ChunkChannel) {
			a.sched.addPeer(peer)
		}
		if adv != a.snap && adv.Height > a.snap.Height && a.nextApply == 0 && !a.applying &&
			a.s.pool.best(time.Now()) == adv {
			a.better = true
		}
	}, a.sched.removePeer)
}

// onChunk judges one received chunk; a chunk that is progress is granted
// to its delivering goroutine to be written to the spool. A peer whose
// strikes run out is punished.
func (a *restoreAttempt) onChunk(in inChunk) (chunkGrant, error) {
	m := in.msg
	now := time.Now()
	var v fetchVerdict
	switch {
	case m.Height != a.snap.Height || m.Format != a.snap.Format || m.Index >= a.snap.Chunks:
		v = verdictStale
		if !a.s.lateAnswer(in.peer, m) {
			v = a.sched.strike(in.peer)
		}
	case m.Missing:
		v = a.sched.missing(in.peer, m.Index, now)
	default:
		v = a.sched.received(in.peer, m.Index, len(m.Chunk), now)
	}
	switch v {
	case verdictStale:
		return chunkGrant{}, nil
	case verdictStrike:
		a.r.metrics.unsolicited()
		a.r.logger.Debug("Unsolicited chunk response", "peer", in.peer, "height", m.Height, "chunk", m.Index,
			"missing", m.Missing)
		return chunkGrant{}, nil
	case verdictPunish:
		a.r.metrics.unsolicited()
		a.s.rejectPeer(in.peer, fmt.Errorf("%w: more than %d unsolicited, duplicate or repeated chunk responses",
			ErrPeerMisbehaved, maxChunkStrikes))
		return chunkGrant{}, nil
	}
	size := int64(len(m.Chunk))
	if err := a.checkDisk(size); err != nil {
		return chunkGrant{}, err
	}
	a.recv += size
	a.s.totalRecv += size
	a.r.metrics.chunkFetched(len(m.Chunk))
	if a.writing[m.Index] > 0 {
		// The file of an earlier copy, discarded since, is still being
		// written or removed: two writers must not race on one file.
		// Rare (a refetch answered within a write); ask again.
		a.sched.refetch(m.Index)
		return chunkGrant{}, nil
	}
	a.maxChunk = max(a.maxChunk, size)
	a.memBytes += size
	a.writing[m.Index]++
	a.writes.Add(1)
	a.reportFetch()
	return chunkGrant{a: a, op: spoolOp{index: m.Index, data: m.Chunk, size: size, sender: in.peer,
		path: a.spool.path(m.Index), keep: a.neededNext(m.Index)}}, nil
}

// neededNext reports whether chunk index is the one the applier is to
// apply next: it is kept in memory for the applier once spooled (one at a
// time, so the hand-off holds at most one chunk beyond what the built-in
// pipeline holds).
func (a *restoreAttempt) neededNext(index uint32) bool {
	next := a.nextApply
	if a.applying {
		next++
	}
	return index == next && a.hot.data == nil
}

// spoolChunk writes one granted chunk to the spool, on the goroutine that
// delivered it, and reports it to the loop (unless the attempt has ended).
// The report keeps the chunk only if the applier is to have it (op.keep);
// it may wait for the loop.
func (a *restoreAttempt) spoolChunk(op spoolOp) {
	defer a.writes.Done()
	err := writeSpoolFile(op.path, op.index, op.data, op.sender)
	if !op.keep || err != nil {
		op.data = nil
	}
	d := spoolDone{op: op, err: err}
	select {
	case a.done <- d:
	case <-a.target.done:
	}
}

// checkDisk fails the attempt with ErrDiskBudget when the spool cannot
// take size more bytes within Config.ChunkDiskBudget.
func (a *restoreAttempt) checkDisk(size int64) error {
	budget := a.s.cfg.ChunkDiskBudget
	if budget <= 0 {
		return nil
	}
	if a.spool.bytes+a.memBytes+size <= budget {
		return nil
	}
	need := int64(a.snap.Chunks) * max(a.maxChunk, size)
	return fmt.Errorf("%w: snapshot at height %d needs about %d bytes (%d chunks of up to %d), "+
		"statesync.chunk_disk_budget is %d", ErrDiskBudget, a.snap.Height, need, a.snap.Chunks,
		max(a.maxChunk, size), budget)
}

// onSpooled records a chunk file written by spoolChunk or removed by the
// writer.
func (a *restoreAttempt) onSpooled(d spoolDone) error {
	i := d.op.index
	if a.writing[i]--; a.writing[i] <= 0 {
		delete(a.writing, i)
	}
	if d.op.remove {
		return nil // removed
	}
	size := d.op.size
	a.memBytes -= size
	if d.err != nil {
		return fmt.Errorf("spooling chunk %d of height %d: %w", i, a.snap.Height, d.err)
	}
	if !a.sched.done[i] || a.writing[i] > 0 { // discarded (or fetched again) meanwhile
		if a.writing[i] == 0 {
			a.queue(spoolOp{index: i, path: d.op.path, remove: true})
		}
		return nil
	}
	a.spool.mark(i, d.op.sender, size)
	if d.op.data != nil && a.hot.data == nil && i >= a.nextApply {
		a.hot = applyJob{index: i, sender: d.op.sender, path: d.op.path, data: d.op.data}
	}
	a.reportFetch()
	return nil
}

// queue hands a removal to the writer (in order).
func (a *restoreAttempt) queue(op spoolOp) {
	a.queued = append(a.queued, op)
	a.writing[op.index]++
}

// abandon makes the chunks not yet on disk needed again when the attempt
// ends without restoring the snapshot: a chunk still being written (or
// whose write was not reported before the end) is not known to be on
// disk; its file, if whole, is overwritten when it is fetched again.
func (a *restoreAttempt) abandon() {
	for i := range a.writing {
		if !a.spool.has(i) {
			a.sched.refetch(i)
		}
	}
}

// discard forgets chunk index and has its file removed; it is fetched
// again.
func (a *restoreAttempt) discard(index uint32) {
	if a.hot.index == index {
		a.hot = applyJob{}
	}
	if a.spool.unmark(index) {
		a.queue(spoolOp{index: index, path: a.spool.path(index), remove: true})
	}
	a.sched.refetch(index)
}

// reportFetch updates the progress with the bytes received.
func (a *restoreAttempt) reportFetch() {
	fetched, total, recv, chunks := a.spool.count, a.s.totalRecv, a.recv, a.snap.Chunks
	rate := float64(recv) / max(time.Since(a.started).Seconds(), 1e-3)
	a.r.progress.update(func(p *Progress) {
		p.ChunksFetched, p.Bytes, p.Rate = fetched, total, rate
		if fetched > 0 && fetched < chunks {
			perChunk := float64(recv) / float64(fetched)
			p.ETA = time.Duration(float64(chunks-fetched) * perChunk / max(rate, 1) * float64(time.Second))
		}
	})
}

// onApplied acts on the app's answer for one chunk: RefetchChunks and
// RejectSenders first, then the result.
func (a *restoreAttempt) onApplied(res applyResult) error {
	a.applying = false
	if errors.Is(res.err, errSpoolCorrupt) {
		a.r.logger.Info("Spooled chunk corrupt; fetching it again", "chunk", res.index)
		a.discard(res.index)
		return nil
	}
	if res.err != nil {
		return fmt.Errorf("applying chunk %d of height %d: %w", res.index, a.snap.Height, res.err)
	}
	accepted := res.resp.Result == abci.ResponseApplySnapshotChunk_ACCEPT
	for _, index := range res.resp.RefetchChunks {
		if index >= a.snap.Chunks {
			continue
		}
		a.discard(index)
		a.nextApply = min(a.nextApply, index)
		if index == res.index {
			accepted = false
		}
	}
	if a.rejectSenders(res, accepted) {
		accepted = false
	}
	if err := a.result(res, accepted); err != nil {
		return err
	}
	applied, fetched := a.nextApply, a.spool.count
	a.r.progress.update(func(p *Progress) { p.ChunksApplied, p.ChunksFetched = applied, fetched })
	return nil
}

// rejectSenders punishes the senders the app rejected and discards their
// chunks not yet applied; it reports whether res.index was discarded.
func (a *restoreAttempt) rejectSenders(res applyResult, accepted bool) bool {
	hit := false
	for _, sender := range res.resp.RejectSenders {
		if sender == "" {
			continue
		}
		peer := p2p.ID(sender)
		a.s.rejectPeer(peer, fmt.Errorf("%w: the app rejected its chunks of height %d", ErrPeerMisbehaved, a.snap.Height))
		from := res.index
		if accepted {
			from = res.index + 1
		}
		for _, index := range a.spool.fromSender(peer, from) {
			a.discard(index)
			hit = hit || index == res.index
		}
	}
	return hit
}

// result acts on the app's result for one chunk.
func (a *restoreAttempt) result(res applyResult, accepted bool) error {
	switch res.resp.Result {
	case abci.ResponseApplySnapshotChunk_ACCEPT:
		a.r.metrics.chunkApplied(res.took)
		if accepted && res.index == a.nextApply {
			a.nextApply++
		}
		return nil
	case abci.ResponseApplySnapshotChunk_RETRY:
		a.retries[res.index]++
		if a.retries[res.index] > maxChunkRetries {
			return fmt.Errorf("%w: chunk %d retried %d times", ErrRejectSnapshot, res.index, maxChunkRetries)
		}
		return nil
	case abci.ResponseApplySnapshotChunk_RETRY_SNAPSHOT:
		return fmt.Errorf("%w: at chunk %d", ErrRetrySnapshot, res.index)
	case abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT:
		return fmt.Errorf("%w: %w at chunk %d", ErrRejectSnapshot, errAppRejected, res.index)
	case abci.ResponseApplySnapshotChunk_ABORT:
		return fmt.Errorf("%w: ApplySnapshotChunk %d of height %d", ErrAbort, res.index, a.snap.Height)
	default:
		return fmt.Errorf("ApplySnapshotChunk %d of height %d: unknown result %v",
			res.index, a.snap.Height, res.resp.Result)
	}
}

// applier applies the chunks it is handed, one at a time, reading each
// from the spool. It exits when ctx ends.
func (a *restoreAttempt) applier(ctx context.Context) {
	for {
		var job applyJob
		select {
		case <-ctx.Done():
			return
		case job = <-a.jobs:
		}
		res := applyResult{index: job.index}
		data, err := job.data, error(nil)
		if data == nil {
			data, err = readSpool(job.path, job.index)
		}
		res.err = err
		if res.err == nil {
			start := time.Now()
			res.resp, res.err = a.r.deps.Snapshots.ApplySnapshotChunk(ctx, &abci.RequestApplySnapshotChunk{
				Index: job.index, Chunk: data, Sender: string(job.sender),
			})
			res.took = time.Since(start)
			if res.err == nil && res.resp == nil {
				res.err = errors.New("the app returned no response")
			}
		}
		select {
		case a.results <- res:
		case <-ctx.Done():
			return
		}
	}
}

// readSpool reads a chunk back from the spool for the applier (a variable
// so that tests can count the reads).
var readSpool = readSpoolFile

// writer removes chunk files (writes are spoolChunk's), in the order it is
// handed them. It exits when ctx ends.
func (a *restoreAttempt) writer(ctx context.Context) {
	for {
		var op spoolOp
		select {
		case <-ctx.Done():
			return
		case op = <-a.ops:
		}
		d := spoolDone{op: op}
		if err := os.Remove(op.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.err = err
		}
		select {
		case a.done <- d:
		case <-ctx.Done():
			return
		}
	}
}
