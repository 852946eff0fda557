package statesync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/p2p"

	ssproto "github.com/statesync/statesync/proto"
)

// applyJob hands the applier the next chunk to apply.
type applyJob struct {
	index  uint32
	sender p2p.ID
}

// applyResult is the applier's report on one chunk.
type applyResult struct {
	index uint32
	resp  *abci.ResponseApplySnapshotChunk
	err   error
	took  time.Duration
}

// restore fetches snap's chunks from every peer advertising it and applies
// them in order. The loop (this goroutine) owns the chunk queue and the fetch
// scheduler; one applier goroutine feeds the app, so fetching continues
// while a chunk is being applied. Fetched chunks survive a failed attempt
// (they stay spooled until Sync ends).
//
// It returns nil when every chunk was applied, ErrRetrySnapshot,
// ErrRejectSnapshot, ErrAbort or ErrNoPeers (wrapped) as the app or the
// network decide, or ctx.Err().
func (s *syncer) restore(ctx context.Context, snap *snapshot) (err error) {
	r := s.r
	q, ok := s.queues[snap.key]
	if !ok {
		q, err = newChunkQueue(s.cfg.TempDir, snap)
		if err != nil {
			return err
		}
		s.queues[snap.key] = q
	}
	sched, ok := s.scheds[snap.key]
	if !ok {
		sched = newFetchScheduler(snap.Chunks, s.cfg.ChunkWindow, s.cfg.ChunkRequestTimeout)
		s.scheds[snap.key] = sched
	}
	for _, peer := range s.pool.peersOf(snap) {
		if r.peers.has(peer, ChunkChannel) {
			sched.addPeer(peer)
		}
	}

	target := &restoreTarget{height: snap.Height, format: snap.Format, done: make(chan struct{})}
	s.setTarget(target)
	attemptCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	jobs := make(chan applyJob)
	results := make(chan applyResult)
	defer func() {
		s.setTarget(nil)
		close(target.done)
		cancel()
		wg.Wait()
	}()
	wg.Add(1)
	if !r.goFunc(func(context.Context) {
		defer wg.Done()
		s.applier(attemptCtx, q, jobs, results)
	}) {
		wg.Done()
		return ErrStopped
	}

	started := time.Now()
	var (
		nextApply  uint32
		applying   bool
		retries    = make(map[uint32]int)
		stallSince time.Time
		bytesRecv  int64
	)
	r.progress.update(func(p *Progress) {
		p.Phase, p.ChunksFetched, p.ChunksApplied = PhaseRestore, q.count, 0
	})
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		now := time.Now()
		// Fill every peer's window. A request whose send queue is full is
		// withdrawn and retried shortly.
		retrySoon := false
		for _, req := range sched.assign(now) {
			msg := &ssproto.ChunkRequest{Height: snap.Height, Format: snap.Format, Index: req.index}
			if r.trySend(req.peer, ChunkChannel, msg) {
				continue
			}
			if !r.peers.has(req.peer, ChunkChannel) {
				sched.removePeer(req.peer)
			} else {
				sched.unassign(req.peer, req.index)
				retrySoon = true
			}
		}
		// Feed the applier.
		if !applying && nextApply < snap.Chunks && q.has(nextApply) {
			select {
			case jobs <- applyJob{index: nextApply, sender: q.senderOf(nextApply)}:
				applying = true
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !applying && nextApply >= snap.Chunks {
			r.logger.Info("All chunks applied", "height", snap.Height, "chunks", snap.Chunks,
				"bytes", q.bytes, "took", time.Since(started))
			return nil
		}
		// Stalled: no peer can provide a missing chunk. Wait a while for
		// peers to come back, then give the snapshot up (deferred).
		if sched.stalled() && !applying {
			if stallSince.IsZero() {
				stallSince = now
				r.logger.Info("No peer can serve the missing chunks; waiting", "peers", sched.numPeers())
			} else if now.Sub(stallSince) >= s.cfg.ChunkRequestTimeout {
				return fmt.Errorf("%w: no peer served the chunks of height %d for %v",
					ErrNoPeers, snap.Height, now.Sub(stallSince))
			}
		} else {
			stallSince = time.Time{}
		}

		wakeAt := now.Add(time.Hour)
		if d, ok := sched.nextDeadline(); ok {
			wakeAt = minTime(wakeAt, d)
		}
		if !stallSince.IsZero() {
			wakeAt = minTime(wakeAt, stallSince.Add(s.cfg.ChunkRequestTimeout))
		}
		if retrySoon {
			wakeAt = minTime(wakeAt, now.Add(10*time.Millisecond))
		}
		timer.Reset(max(time.Until(wakeAt), time.Millisecond))

		select {
		case <-ctx.Done():
			return ctx.Err()

		case <-s.wake:
			s.handleInbox(func(peer p2p.ID, adv *snapshot) {
				if adv == snap && r.peers.has(peer, ChunkChannel) {
					sched.addPeer(peer)
				}
			}, sched.removePeer)

		case <-timer.C:
			for _, req := range sched.expire(time.Now()) {
				r.metrics.ChunkTimeout()
				r.logger.Debug("Chunk request timed out", "peer", req.peer, "chunk", req.index)
			}

		case in := <-s.chunkCh:
			n, err := s.handleChunk(snap, q, sched, in)
			if err != nil {
				return err
			}
			if n > 0 {
				bytesRecv += int64(n)
				s.totalRecv += int64(n)
				fetched, total := q.count, s.totalRecv
				rate := float64(bytesRecv) / max(time.Since(started).Seconds(), 1e-3)
				r.progress.update(func(p *Progress) {
					p.ChunksFetched, p.Bytes, p.Rate = fetched, total, rate
					if fetched > 0 && fetched < snap.Chunks {
						perChunk := float64(bytesRecv) / float64(fetched)
						p.ETA = time.Duration(float64(snap.Chunks-fetched) * perChunk / max(rate, 1) * float64(time.Second))
					}
				})
			}

		case res := <-results:
			applying = false
			next, err := s.handleApplied(snap, q, sched, res, nextApply, retries)
			if err != nil {
				return err
			}
			nextApply = next
			applied := nextApply
			r.progress.update(func(p *Progress) { p.ChunksApplied, p.ChunksFetched = applied, q.count })
		}
	}
}

// handleChunk judges one received chunk and spools it if it is progress;
// it returns the bytes spooled. A peer whose strikes run out is punished.
func (s *syncer) handleChunk(snap *snapshot, q *chunkQueue, sched *fetchScheduler, in inChunk) (int, error) {
	m := in.msg
	now := time.Now()
	var v fetchVerdict
	switch {
	case m.Height != snap.Height || m.Format != snap.Format || m.Index >= snap.Chunks:
		v = sched.strike(in.peer)
	case m.Missing:
		v = sched.missing(in.peer, m.Index, now)
	default:
		v = sched.received(in.peer, m.Index, len(m.Chunk), now)
	}
	switch v {
	case verdictStale:
		return 0, nil
	case verdictStrike:
		s.r.metrics.Unsolicited()
		s.r.logger.Debug("Unsolicited chunk response", "peer", in.peer, "height", m.Height, "chunk", m.Index,
			"missing", m.Missing)
		return 0, nil
	case verdictPunish:
		s.r.metrics.Unsolicited()
		s.rejectPeer(in.peer, fmt.Errorf("%w: more than %d unsolicited, duplicate or repeated chunk responses",
			ErrPeerMisbehaved, maxChunkStrikes))
		return 0, nil
	}
	added, err := q.put(m.Index, m.Chunk, in.peer)
	if err != nil {
		return 0, err
	}
	if !added {
		return 0, nil
	}
	s.r.metrics.ChunkFetched(len(m.Chunk))
	return len(m.Chunk), nil
}

// handleApplied acts on the app's answer for one chunk: RefetchChunks and
// RejectSenders first, then the result. It returns the next index to apply.
func (s *syncer) handleApplied(snap *snapshot, q *chunkQueue, sched *fetchScheduler, res applyResult,
	nextApply uint32, retries map[uint32]int,
) (uint32, error) {
	r := s.r
	if res.err != nil {
		return nextApply, fmt.Errorf("applying chunk %d of height %d: %w", res.index, snap.Height, res.err)
	}
	resp := res.resp
	accepted := resp.Result == abci.ResponseApplySnapshotChunk_ACCEPT

	for _, index := range resp.RefetchChunks {
		if index >= snap.Chunks {
			continue
		}
		if err := q.discard(index); err != nil {
			return nextApply, err
		}
		sched.refetch(index)
		if index < nextApply {
			nextApply = index
		}
		if index == res.index {
			accepted = false
		}
	}
	for _, sender := range resp.RejectSenders {
		if sender == "" {
			continue
		}
		peer := p2p.ID(sender)
		s.rejectPeer(peer, fmt.Errorf("%w: the app rejected its chunks of height %d", ErrPeerMisbehaved, snap.Height))
		from := res.index
		if accepted {
			from = res.index + 1
		}
		discarded, err := q.discardSender(peer, from)
		if err != nil {
			return nextApply, err
		}
		for _, index := range discarded {
			sched.refetch(index)
			if index == res.index {
				accepted = false
			}
		}
	}

	switch resp.Result {
	case abci.ResponseApplySnapshotChunk_ACCEPT:
		r.metrics.ChunkApplied(res.took)
		if accepted && res.index == nextApply {
			nextApply++
		}
		return nextApply, nil
	case abci.ResponseApplySnapshotChunk_RETRY:
		retries[res.index]++
		if retries[res.index] > maxChunkRetries {
			return nextApply, fmt.Errorf("%w: chunk %d retried %d times", ErrRejectSnapshot, res.index, maxChunkRetries)
		}
		return nextApply, nil
	case abci.ResponseApplySnapshotChunk_RETRY_SNAPSHOT:
		return nextApply, fmt.Errorf("%w: at chunk %d", ErrRetrySnapshot, res.index)
	case abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT:
		return nextApply, fmt.Errorf("%w: the app rejected it at chunk %d", ErrRejectSnapshot, res.index)
	case abci.ResponseApplySnapshotChunk_ABORT:
		return nextApply, fmt.Errorf("%w: ApplySnapshotChunk %d of height %d", ErrAbort, res.index, snap.Height)
	default:
		return nextApply, fmt.Errorf("ApplySnapshotChunk %d of height %d: unknown result %v",
			res.index, snap.Height, resp.Result)
	}
}

// applier applies the chunks it is handed, one at a time, reading each from
// the spool. It exits when ctx ends.
func (s *syncer) applier(ctx context.Context, q *chunkQueue, jobs <-chan applyJob, results chan<- applyResult) {
	for {
		var job applyJob
		select {
		case <-ctx.Done():
			return
		case job = <-jobs:
		}
		res := applyResult{index: job.index}
		data, err := q.load(job.index)
		if err != nil {
			res.err = fmt.Errorf("reading spooled chunk: %w", err)
		} else {
			start := time.Now()
			res.resp, res.err = s.r.deps.Snapshots.ApplySnapshotChunk(ctx, &abci.RequestApplySnapshotChunk{
				Index: job.index, Chunk: data, Sender: string(job.sender),
			})
			res.took = time.Since(start)
			if res.err == nil && res.resp == nil {
				res.err = errors.New("the app returned no response")
			}
		}
		select {
		case results <- res:
		case <-ctx.Done():
			return
		}
	}
}
