package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
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
	background    bool          // StartBackfill/ResumeBackfill: leave Progress.Phase alone
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
// initial height is reached. Sync starts it in the background after a
// restore when Config.Backfill is set (StartBackfill); it can also be
// called on its own, on a running Reactor, with the node's current state.
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
	done      bool // the run reached its bounds: the last checkpoint says so

	saidNoSource bool // the lack of any source was logged

	anchor backfillAnchor
	rpc    map[p2p.ID]*rpcLightSource // RPC servers, asked like peers when no peer serves 0x62
	rpcWG  sync.WaitGroup             // RPC requests in flight
	runCtx context.Context            // the run's context: RPC requests end with it
}

func (r *Reactor) backfill(ctx context.Context, state sm.State, set backfillSettings) (BackfillResult, error) {
	if err := checkBackfillState(state); err != nil {
		return BackfillResult{From: state.LastBlockHeight, Stopped: BackfillInvalidState},
			fmt.Errorf("%w: %w", ErrBackfill, err)
	}
	return r.runBackfill(ctx, anchorAt(state), state, set)
}

// backfillAnchor is where one backfill run starts: the highest height to
// fetch, what its block must hash to, and the bounds it stops at.
type backfillAnchor struct {
	origin         int64 // the height the node was state-synced to
	top            int64 // highest height to fetch
	wantID         types.BlockID
	wantCommitHash []byte // nil: the top block's commit is verified with its validator set
	floor          int64  // the chain's initial height
	stopHeight     int64
	stopTime       time.Time
	// upperVals is the verified validator set at top+1 when the run
	// continues below stored data (nil at a fresh start).
	upperVals *types.ValidatorSet
}

// anchorAt anchors a backfill at a verified state.
func anchorAt(state sm.State) backfillAnchor {
	top := state.LastBlockHeight
	floor := max(state.InitialHeight, 1)
	ev := state.ConsensusParams.Evidence
	return backfillAnchor{
		origin: top, top: top, wantID: state.LastBlockID, floor: floor,
		stopHeight: max(top-ev.MaxAgeNumBlocks, floor), stopTime: state.LastBlockTime.Add(-ev.MaxAgeDuration),
	}
}

// runBackfill runs one backfill from a. state gives the chain ID and, when
// a.wantCommitHash is nil, the validators of the top block.
func (r *Reactor) runBackfill(ctx context.Context, a backfillAnchor, state sm.State, set backfillSettings) (res BackfillResult, err error) {
	b := &backfiller{r: r, set: set, state: state, anchor: a, store: r.deps.Backfill, started: time.Now()}
	res.From = a.top
	defer func() {
		res.Duration = time.Since(b.started)
		res.Blocks = b.blocks
		if b.blocks > 0 {
			res.To = a.top - int64(b.blocks) + 1
		}
		res.Err = err
	}()
	fail := func(stop BackfillStop, cause error) (BackfillResult, error) {
		res.Stopped = stop
		return res, fmt.Errorf("%w: %w", ErrBackfill, cause)
	}
	life := r.lifetime()
	if life == nil || !r.IsRunning() {
		return fail(BackfillCancelled, fmt.Errorf("%w: Backfill needs a started reactor", ErrStopped))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(life, cancel)()
	b.runCtx = ctx

	b.total = max(a.top-a.stopHeight+1, 0)
	b.q = newBlockQueue(a.top, a.floor, a.stopHeight, a.stopTime, queueLimits{
		window: set.window, initWindow: min(backfillInitWindow, set.window), maxAttempts: set.maxAttempts,
		maxTimeouts: set.maxTimeouts, maxAhead: set.maxAhead, maxInflight: backfillMaxInflight, maxBytes: set.maxBytes,
	})
	b.sink = make(chan response, backfillMaxInflight)
	b.wantID, b.wantCommitHash = a.wantID, a.wantCommitHash
	// The verifier starts from the verified set above the first height
	// fetched: the state's own at a fresh start, the stored one on resume.
	b.verifier = backfillVerifier{chainID: state.ChainID, upper: a.upperVals}
	if a.upperVals == nil && a.top == state.LastBlockHeight {
		b.verifier.topVals = state.LastValidators
	}
	b.lastFlush = time.Now()
	b.rpc = r.backfillRPCSources(state.ChainID)
	defer b.closeRPC()

	r.metrics.setBackfillTotal(b.total)
	// A direct Backfill call shows as PhaseBackfill; a background one (after
	// Sync, whose Phase stays PhaseDone) only in the Backfill counters.
	prevPhase := r.progress.current().Phase
	r.progress.update(func(p *Progress) {
		if !set.background {
			p.Phase = PhaseBackfill
		}
		p.BackfillDone, p.BackfillTotal = 0, b.total
	})
	defer r.progress.update(func(p *Progress) {
		if p.Phase == PhaseBackfill {
			p.Phase = prevPhase
		}
		p.BackfillDone = int64(b.blocks)
	})
	r.logger.Info("Backfill started", "from", a.top, "stop_height", a.stopHeight, "stop_time", a.stopTime,
		"initial_height", a.floor, "rpc_sources", len(b.rpc))

	stop, cause := b.run(ctx, life)
	b.cancelOutstanding()
	cancel()
	b.rpcWG.Wait() // RPC requests end with ctx
	b.done = cause == nil
	if ferr := b.finish(); ferr != nil && cause == nil {
		stop, cause = BackfillStoreFailed, ferr
	}
	res.Stopped = stop
	logger := r.logger.With("from", a.top, "to", a.top-int64(b.blocks)+1, "blocks", b.blocks,
		"took", time.Since(b.started))
	switch {
	case cause == nil:
		logger.Info("Backfill complete", "stopped", stop)
		return res, nil
	case stop == BackfillNoPeers || stop == BackfillCancelled:
		// Nothing is wrong with the node: no source, or it stops.
		logger.Info("Backfill ended before the evidence horizon; a restart continues it", "stopped", stop,
			"err", cause)
	default:
		logger.Error("Backfill failed; a restart continues it", "stopped", stop, "err", cause)
	}
	return fail(stop, cause)
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
				if len(b.q.peers) == 0 && !b.saidNoSource {
					b.saidNoSource = true
					r.logger.Info("Backfill has no source: no connected peer serves light blocks (channel 0x62, "+
						"stock CometBFT peers do not) and no statesync.rpc_servers are configured; waiting for one",
						"height", h, "wait", b.set.stallTimeout)
				} else if len(b.q.peers) > 0 {
					r.logger.Info("Backfill waiting for a peer that has the next height", "height", h,
						"usable_peers", b.q.usablePeers(), "wait", b.set.stallTimeout)
				}
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
	if len(now) == 0 {
		// No peer serves light blocks (stock CometBFT peers do not):
		// ask the configured RPC servers instead.
		for id := range b.rpc {
			now = append(now, id)
		}
	}
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
		if src := b.rpc[a.peer]; src != nil {
			b.fetchRPC(src, key, timeout)
			continue
		}
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
			b.punish(peer, fmt.Errorf("%w: %w: backfill block %d: %w", ErrPeerMisbehaved, ErrVerifyFailed, h, err))
			continue
		}
		for _, liar := range liars {
			b.q.bench(liar)
			b.punish(liar, fmt.Errorf("%w: %w: backfill block %d: served a validator set other peers contradict",
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
		b.r.metrics.blockBackfilled()
		b.q.accept(lb.Time)
		if b.blocks == crashBackfillAfter && crashArmed(crashBackfill) {
			if err := b.maybeFlush(true); err != nil {
				return err
			}
			crashPoint(crashBackfill)
		}
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
		// Every stored height's validators go with it, and the checkpoint
		// claims no more than what this flush makes durable.
		if err := b.closeSegment(); err != nil {
			return err
		}
		if err := b.saveCheckpoint(); err != nil {
			return err
		}
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
	if b.store != nil {
		b.unflushed = max(b.unflushed, 1) // the checkpoint, at least
	}
	return b.maybeFlush(true)
}

// cancelOutstanding withdraws the requests still in flight, so no timer or
// waiter outlives the run; their late responses are dropped as late.
func (b *backfiller) cancelOutstanding() {
	for _, a := range b.q.outstanding() {
		b.r.dispatcher.cancel(requestKey{peer: a.peer, kind: kindLightBlock, height: a.height}, b.sink)
	}
}
