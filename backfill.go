package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
)

// BackfillStop says why a backfill ended (BackfillResult.Stopped).
type BackfillStop string

const (
	// BackfillComplete: a block at or below the height bound and older than
	// the time bound of the evidence params was stored; every height evidence
	// can still refer to is backfilled.
	BackfillComplete BackfillStop = "complete"
	// BackfillReachedInitialHeight: the chain's initial height was stored.
	BackfillReachedInitialHeight BackfillStop = "initial_height"
	// BackfillNoPeers: no connected peer served the next height needed
	// within the stall bound.
	BackfillNoPeers BackfillStop = "no_peers"
	// BackfillRetriesExhausted: one height failed too often (timeouts, bad
	// blocks).
	BackfillRetriesExhausted BackfillStop = "retries_exhausted"
	// BackfillCancelled: the context ended or the Reactor stopped.
	BackfillCancelled BackfillStop = "cancelled"
	// BackfillStoreFailed: persisting verified blocks failed.
	BackfillStoreFailed BackfillStop = "store_failed"
	// BackfillInvalidState: the state given to Backfill cannot anchor it.
	BackfillInvalidState BackfillStop = "invalid_state"
)

// BackfillResult reports what Backfill did.
type BackfillResult struct {
	// From is the height backfill started at: the state's LastBlockHeight.
	From int64
	// To is the lowest height verified and stored (0 if none).
	To int64
	// Blocks is the number of heights verified and stored.
	Blocks int
	// Duration is how long Backfill ran.
	Duration time.Duration
	// Stopped says why it ended: BackfillComplete and
	// BackfillReachedInitialHeight are successes, anything else a failure.
	Stopped BackfillStop
	// Err is nil on success, else the error Backfill returned.
	Err error
}

// backfillSettings are the knobs of one backfill run.
type backfillSettings struct {
	window        int           // per-peer requests in flight, at most
	timeout       time.Duration // ceiling of one request's timeout
	minTimeout    time.Duration // floor of the RTT-adaptive timeout
	stallTimeout  time.Duration // how long to wait for a peer that has the next height
	maxAttempts   int           // failed fetches of one height before giving up
	maxTimeouts   int           // timeout events without an answer before a peer is no longer asked
	maxAhead      int           // heights fetched ahead of verification
	maxBytes      int64         // bytes of unverified blocks held or expected, at most
	flushEvery    int           // blocks between flushes
	flushInterval time.Duration // longest time between flushes
	maxSegment    int64         // heights per validator-set record at most
}

const (
	backfillMaxInflight = 1024 // sink capacity: requests in flight over all peers
	backfillInitWindow  = 4
	// backfillMaxBytes bounds the unverified blocks backfill holds (see
	// queueLimits.maxBytes): light blocks are a few KB, but a peer may
	// send up to 10 MB for each.
	backfillMaxBytes = 32 << 20
)

func (r *Reactor) backfillSettings() backfillSettings {
	timeout := r.cfg.lightBlockTimeout()
	window := r.cfg.BackfillWindow
	if window <= 0 {
		window = DefaultBackfillWindow
	}
	return backfillSettings{
		window:        window,
		timeout:       timeout,
		minTimeout:    min(timeout, 500*time.Millisecond),
		stallTimeout:  max(2*timeout, r.cfg.DiscoveryTime),
		maxAttempts:   10,
		maxTimeouts:   3,
		maxAhead:      2048,
		maxBytes:      backfillMaxBytes,
		flushEvery:    256,
		flushInterval: time.Second,
		maxSegment:    10_000,
	}
}

// Backfill fetches, verifies and stores the light blocks below a restored
// state, from state.LastBlockHeight down until both bounds of the evidence
// params are met — a height at most LastBlockHeight - MaxAgeNumBlocks whose
// block is older than LastBlockTime - MaxAgeDuration — or the chain's
// initial height is reached. Sync runs it after a restore when
// Config.Backfill is set; it can also be called on its own, on a running
// Reactor, with the node's current state.
//
// Blocks are checked against the hash chain anchored at the verified
// state: the block at LastBlockHeight must hash to state.LastBlockID, each
// lower one to the LastBlockID of the block above, and each commit to the
// LastCommitHash above (the top one is verified with its validator set).
// Commit signatures need not be re-verified. A peer serving a block that
// does not check out is punished and the height fetched from another.
// Verified headers, commits and validator sets go to Deps.Backfill (when
// nil, blocks are verified and dropped).
//
// Every peer speaking channel 0x62 keeps a window of requests in flight
// (Config.BackfillWindow at most). Backfill gives up when no connected
// peer has the next height for a while, or when one height fails too
// often; the result says how far it got. Errors wrap ErrBackfill and the
// cause (ErrNoPeers, ErrTimeout, ErrStopped, ctx.Err(), a store error);
// a backfill failure should be logged, not treated as fatal: the node
// works, only evidence about the missing heights cannot be verified.
func (r *Reactor) Backfill(ctx context.Context, state sm.State) (BackfillResult, error) {
	return r.backfill(ctx, state, r.backfillSettings())
}

// backfiller is one run of Backfill. Its loop (run, on the caller's
// goroutine) owns the block queue; responses reach it through sink, which
// the dispatcher fills without blocking.
type backfiller struct {
	r       *Reactor
	set     backfillSettings
	state   sm.State
	store   BackfillStore
	q       *blockQueue
	sink    chan response
	started time.Time
	total   int64

	verifier backfillVerifier

	// the hash chain: what the block at the cursor must be
	wantID         types.BlockID
	wantCommitHash []byte // nil for the top block

	// the open validator-set segment [segLo, segHi], segVals being the set
	// at segLo, segHash its hash
	segLo, segHi int64
	segVals      *types.ValidatorSet
	segHash      []byte

	blocks    int
	unflushed int
	lastFlush time.Time
}

func (r *Reactor) backfill(ctx context.Context, state sm.State, set backfillSettings) (res BackfillResult, err error) {
	b := &backfiller{r: r, set: set, state: state, store: r.deps.Backfill, started: time.Now()}
	res.From = state.LastBlockHeight
	defer func() {
		res.Duration = time.Since(b.started)
		res.Blocks = b.blocks
		if b.blocks > 0 {
			res.To = state.LastBlockHeight - int64(b.blocks) + 1
		}
		res.Err = err
	}()
	fail := func(stop BackfillStop, cause error) (BackfillResult, error) {
		res.Stopped = stop
		return res, fmt.Errorf("%w: %w", ErrBackfill, cause)
	}

	if err := checkBackfillState(state); err != nil {
		return fail(BackfillInvalidState, err)
	}
	life := r.lifetime()
	if life == nil || !r.IsRunning() {
		return fail(BackfillCancelled, fmt.Errorf("%w: Backfill needs a started reactor", ErrStopped))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(life, cancel)()

	top := state.LastBlockHeight
	floor := max(state.InitialHeight, 1)
	ev := state.ConsensusParams.Evidence
	stopHeight := top - ev.MaxAgeNumBlocks
	stopTime := state.LastBlockTime.Add(-ev.MaxAgeDuration)
	if stopHeight < floor {
		stopHeight = floor
	}
	b.total = top - stopHeight + 1
	b.q = newBlockQueue(top, floor, stopHeight, stopTime, queueLimits{
		window: set.window, initWindow: min(backfillInitWindow, set.window), maxAttempts: set.maxAttempts,
		maxTimeouts: set.maxTimeouts, maxAhead: set.maxAhead, maxInflight: backfillMaxInflight, maxBytes: set.maxBytes,
	})
	b.sink = make(chan response, backfillMaxInflight)
	b.wantID = state.LastBlockID
	b.verifier = backfillVerifier{chainID: state.ChainID, topVals: state.LastValidators}
	b.lastFlush = time.Now()

	r.metrics.SetBackfillTotal(b.total)
	prevPhase := r.progress.current().Phase
	r.progress.update(func(p *Progress) {
		p.Phase, p.BackfillDone, p.BackfillTotal = PhaseBackfill, 0, b.total
	})
	defer r.progress.update(func(p *Progress) {
		if p.Phase == PhaseBackfill {
			p.Phase = prevPhase
		}
		p.BackfillDone = int64(b.blocks)
	})
	r.logger.Info("Backfill started", "from", top, "stop_height", stopHeight, "stop_time", stopTime,
		"initial_height", floor)

	stop, cause := b.run(ctx, life)
	b.cancelOutstanding()
	if ferr := b.finish(); ferr != nil && cause == nil {
		stop, cause = BackfillStoreFailed, ferr
	}
	res.Stopped = stop
	logger := r.logger.With("from", top, "to", top-int64(b.blocks)+1, "blocks", b.blocks,
		"took", time.Since(b.started))
	if cause != nil {
		logger.Error("Backfill failed", "stopped", stop, "err", cause)
		return fail(stop, cause)
	}
	logger.Info("Backfill complete", "stopped", stop)
	return res, nil
}

func checkBackfillState(state sm.State) error {
	switch {
	case state.ChainID == "":
		return errors.New("the state has no chain ID")
	case state.LastBlockHeight <= 0:
		return fmt.Errorf("the state has no last block (height %d)", state.LastBlockHeight)
	case len(state.LastBlockID.Hash) == 0:
		return fmt.Errorf("the state has no last block ID at height %d", state.LastBlockHeight)
	case state.ConsensusParams.Evidence.MaxAgeNumBlocks < 0:
		return errors.New("the state has negative evidence params")
	}
	return nil
}

// run is the loop. It returns why it stopped and, for failures, the cause.
func (b *backfiller) run(ctx context.Context, life context.Context) (BackfillStop, error) {
	r := b.r
	changed := b.syncPeers()
	var stall *time.Timer
	var stallC <-chan time.Time
	defer func() {
		if stall != nil {
			stall.Stop()
		}
	}()
	for {
		if err := b.verifyReady(); err != nil {
			return BackfillStoreFailed, err
		}
		if b.q.finished() {
			if b.q.err != nil {
				return b.q.stopped, b.q.err
			}
			return b.q.stopped, nil
		}
		if err := b.maybeFlush(false); err != nil {
			return BackfillStoreFailed, err
		}
		if err := b.issue(); err != nil {
			return BackfillCancelled, err
		}
		if h, stalled := b.q.stalledAt(); stalled {
			if stall == nil {
				stall = time.NewTimer(b.set.stallTimeout)
				stallC = stall.C
				r.logger.Info("Backfill waiting for a peer that has the next height", "height", h,
					"usable_peers", b.q.usablePeers(), "wait", b.set.stallTimeout)
			}
		} else if stall != nil {
			stall.Stop()
			stall, stallC = nil, nil
		}

		select {
		case resp := <-b.sink:
			b.handle(resp)
		case <-changed:
			changed = b.syncPeers()
		case <-stallC:
			h, _ := b.q.stalledAt()
			return BackfillNoPeers, fmt.Errorf("%w: no connected peer served height %d within %v (%d usable peers)",
				ErrNoPeers, h, b.set.stallTimeout, b.q.usablePeers())
		case <-ctx.Done():
			if life.Err() != nil {
				return BackfillCancelled, ErrStopped
			}
			return BackfillCancelled, ctx.Err()
		}
	}
}

// syncPeers adds new peers speaking 0x62 and removes departed ones; it
// returns the channel announcing the next change.
func (b *backfiller) syncPeers() <-chan struct{} {
	changed := b.r.peers.changed()
	now := b.r.peers.capable(LightBlockChannel)
	present := make(map[p2p.ID]bool, len(now))
	for _, id := range now {
		present[id] = true
		b.q.addPeer(id)
	}
	for id := range b.q.peers {
		if !present[id] {
			b.q.removePeer(id)
		}
	}
	return changed
}

// issue sends the requests the queue hands out.
func (b *backfiller) issue() error {
	for _, a := range b.q.assign() {
		key := requestKey{peer: a.peer, kind: kindLightBlock, height: a.height}
		timeout := b.q.timeout(a.peer, b.set.minTimeout, b.set.timeout)
		switch err := b.r.dispatcher.start(key, timeout, b.sink); {
		case err == nil:
		case errors.Is(err, ErrStopped):
			return err
		case errors.Is(err, errDuplicateRequest):
			// The same request is pending for another caller: try later.
			b.q.gone(a.peer, a.height)
		default:
			// Not sent: the peer is unreachable. Fetch the height from
			// another peer.
			b.q.gone(a.peer, a.height)
			b.q.bench(a.peer)
		}
	}
	return nil
}

// handle feeds a response to the queue.
func (b *backfiller) handle(resp response) {
	peer, h := resp.key.peer, resp.key.height
	switch {
	case resp.err == nil && resp.lb != nil:
		b.q.gotSized(peer, h, resp.lb, resp.size, resp.rtt)
	case resp.err == nil:
		b.r.logger.Debug("Peer lacks a backfill height; not asking it for lower ones", "peer", peer, "height", h)
		b.q.lacked(peer, h, resp.rtt)
	case errors.Is(resp.err, ErrTimeout):
		b.r.logger.Debug("Backfill request timed out", "peer", peer, "height", h, "after", resp.rtt)
		now := time.Now()
		b.q.timedOut(peer, h, now.Add(-resp.rtt), now, resp.err)
	default: // peer gone, or stopped (then ctx ends too)
		b.q.gone(peer, h)
	}
}

// verifyReady verifies and stores every block the queue releases.
func (b *backfiller) verifyReady() error {
	for {
		fb, ok := b.q.next()
		if !ok {
			return nil
		}
		vals, liars, err := b.verifier.check(blockCheck{height: b.q.verifyAt, wantID: b.wantID,
			wantCommitHash: b.wantCommitHash}, fb.lb, fb.peer)
		if errors.Is(err, errSecondOpinion) {
			peer, h := b.q.recheck(err)
			b.r.logger.Debug("Backfill: asking another peer to confirm a validator set", "peer", peer, "height", h)
			continue
		}
		if err != nil {
			peer, h := b.q.reject(err)
			b.r.logger.Info("Backfill: peer served a bad block; fetching it elsewhere", "peer", peer, "height", h,
				"err", err)
			b.r.punish(peer, fmt.Errorf("%w: %w: backfill block %d: %w", ErrPeerMisbehaved, ErrVerifyFailed, h, err))
			continue
		}
		for _, liar := range liars {
			b.q.bench(liar)
			b.r.punish(liar, fmt.Errorf("%w: %w: backfill block %d: served a validator set other peers contradict",
				ErrPeerMisbehaved, ErrVerifyFailed, fb.lb.Height))
		}
		if err := b.save(fb.lb, vals); err != nil {
			return err
		}
		lb := fb.lb
		b.wantID = lb.LastBlockID
		b.wantCommitHash = lb.LastCommitHash
		b.blocks++
		b.unflushed++
		b.r.metrics.BlockBackfilled()
		b.q.accept(lb.Time)
	}
}

// save stores a verified block and extends (or closes) the open
// validator-set segment.
func (b *backfiller) save(lb *types.LightBlock, vals *types.ValidatorSet) error {
	if b.store == nil {
		return nil
	}
	if err := b.store.SaveSignedHeader(b.wantID, lb.SignedHeader); err != nil {
		return fmt.Errorf("storing height %d: %w", lb.Height, err)
	}
	h := lb.Height
	if b.segVals != nil && b.segLo == h+1 && b.segHi-h < b.set.maxSegment &&
		bytes.Equal(lb.ValidatorsHash, b.segHash) && continues(vals, b.segVals) {
		b.segLo, b.segVals = h, vals
		return nil
	}
	if err := b.closeSegment(); err != nil {
		return err
	}
	b.segLo, b.segHi, b.segVals, b.segHash = h, h, vals, lb.ValidatorsHash
	return nil
}

// continues reports whether lower, a set with the same validators and
// powers as upper (equal hashes), is the set one height below it with no
// update in between: its priorities advance to upper's in one step. A
// change of priorities alone (an update with unchanged powers) starts a
// new stored set, as CometBFT stores one then too.
func continues(lower, upper *types.ValidatorSet) bool {
	return bytes.Equal(lower.CopyIncrementProposerPriority(1).ProposerPriorityHash(), upper.ProposerPriorityHash())
}

func (b *backfiller) closeSegment() error {
	if b.segVals == nil {
		return nil
	}
	lo, hi, vals := b.segLo, b.segHi, b.segVals
	b.segVals = nil
	if err := b.store.SaveValidatorSets(lo, hi, vals); err != nil {
		return fmt.Errorf("storing validators of heights %d..%d: %w", lo, hi, err)
	}
	return nil
}

// maybeFlush flushes the store every flushEvery blocks or flushInterval,
// and publishes progress.
func (b *backfiller) maybeFlush(force bool) error {
	if b.unflushed == 0 || (!force && b.unflushed < b.set.flushEvery && time.Since(b.lastFlush) < b.set.flushInterval) {
		return nil
	}
	if b.store != nil {
		if err := b.store.Flush(); err != nil {
			return fmt.Errorf("flushing backfilled blocks: %w", err)
		}
	}
	b.unflushed = 0
	b.lastFlush = time.Now()
	done := int64(b.blocks)
	b.r.progress.update(func(p *Progress) {
		p.BackfillDone = done
		p.BackfillTotal = max(p.BackfillTotal, done)
	})
	b.r.logger.Debug("Backfill progress", "lowest", b.q.lowestVerified(), "blocks", done, "total", b.total)
	return nil
}

// finish closes the open segment and flushes, on every way out.
func (b *backfiller) finish() error {
	if b.store != nil && b.segVals != nil {
		if err := b.closeSegment(); err != nil {
			return err
		}
		b.unflushed = max(b.unflushed, 1)
	}
	return b.maybeFlush(true)
}

// cancelOutstanding withdraws the requests still in flight, so no timer or
// waiter outlives the run; their late responses are dropped as late.
func (b *backfiller) cancelOutstanding() {
	for _, a := range b.q.outstanding() {
		b.r.dispatcher.cancel(requestKey{peer: a.peer, kind: kindLightBlock, height: a.height})
	}
}
