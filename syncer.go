package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"

	ssproto "github.com/statesync/statesync/proto"
)

const (
	// maxChunkRetries bounds RETRY answers for one chunk before the
	// snapshot is given up.
	maxChunkRetries = 10
	// maxSnapshotRetries bounds RETRY_SNAPSHOT answers for one snapshot.
	maxSnapshotRetries = 5
	// maxSnapshotStalls bounds the attempts at one snapshot that end with
	// no peer able to serve its chunks; the snapshot is rejected then.
	maxSnapshotStalls = 3
	// maxPendingSnapshots caps snapshot advertisements waiting for the loop.
	maxPendingSnapshots = 4096
	// maxSnapshotCredit caps the advertisements one peer may still send
	// (two requests' worth: answers to a request may cross the next one).
	maxSnapshotCredit = 2 * recentSnapshots
	// snapshotSlack is how many advertisements beyond its credit a peer is
	// forgiven (answers to a request made by an earlier Sync) before it is
	// punished for flooding.
	snapshotSlack = recentSnapshots
	// chunkInboxSize is how many received chunks may wait for the loop;
	// beyond that the sending peers' receive routines wait (backpressure).
	// None: each connection holds at most the one chunk it is handing over,
	// so memory is bounded by one chunk per connection (a buffer of 2 cost
	// 60 MB more peak heap at 10 MB chunks, for no measurable throughput).
	chunkInboxSize = 0
)

// errDeferred means the snapshot was put aside to be tried again later.
var errDeferred = errors.New("snapshot deferred")

// errBetterSnapshot means a better snapshot was advertised before any chunk
// of the chosen one was applied: the choice is made again.
var errBetterSnapshot = errors.New("a better snapshot was advertised")

// Sync restores the app from a snapshot, writes the stores and returns
// the state to hand to block sync or consensus. With Config.Backfill it
// then starts a backfill of historical headers in the background (see
// StartBackfill): Sync does not wait for it.
//
// The store writes are ordered so that a crash at any point leaves a node
// that either state-syncs again from scratch or boots and block-syncs
// from the snapshot height S+1: the seen commit of S first (and the
// backfill checkpoint, with Deps.Backfill), then the offline state-sync
// height S, then Bootstrap of the state store last, which is what makes
// the node count as synced on its next boot. Once Bootstrap has returned,
// Sync returns the state and a nil error, whatever happens after.
//
// The Reactor must be running and attached to a router. Sync returns
// ErrSyncInProgress if another Sync runs, ctx.Err() or ErrStopped when
// cancelled or stopped, ErrNoSnapshots when no usable snapshot was found
// within Config.DiscoveryTimeout, ErrAllSnapshotsRejected when every
// snapshot failed, ErrAbort when the app aborted, and errors wrapping the
// app's or the stores' failures otherwise.
func (r *Reactor) Sync(ctx context.Context) (sm.State, error) {
	life := r.lifetime()
	if life == nil || !r.IsRunning() {
		return sm.State{}, fmt.Errorf("%w: Sync needs a started reactor", ErrStopped)
	}
	if r.deps.Query == nil || r.deps.StateStore == nil || r.deps.BlockStore == nil {
		return sm.State{}, fmt.Errorf("%w: Sync needs Deps.Query, Deps.StateStore and Deps.BlockStore", ErrInvalidConfig)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWatch := context.AfterFunc(life, cancel)
	defer stopWatch()

	s := newSyncer(r)
	r.mtx.Lock()
	if r.syncer != nil {
		r.mtx.Unlock()
		return sm.State{}, ErrSyncInProgress
	}
	r.syncer = s
	r.mtx.Unlock()
	r.metrics.setSyncing(true)
	release := func() {
		r.mtx.Lock()
		r.syncer = nil
		r.mtx.Unlock()
		s.cleanup()
		r.metrics.setSyncing(false)
	}

	state, err := r.sync(ctx, s)
	release()
	if err != nil {
		if life.Err() != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ErrStopped, err)
		}
		r.progress.update(func(p *Progress) { p.Phase, p.Err = PhaseFailed, err })
		return sm.State{}, err
	}
	r.progress.update(func(p *Progress) { p.Phase, p.Err = PhaseDone, nil })
	if r.cfg.Backfill {
		r.StartBackfill(state)
	}
	return state, nil
}

func (r *Reactor) sync(ctx context.Context, s *syncer) (sm.State, error) {
	r.progress.update(func(p *Progress) { *p = Progress{Phase: PhaseDiscovery, Peers: r.peers.len()} })
	provider := r.deps.StateProvider
	if provider == nil {
		var err error
		provider, err = r.buildStateProviderRetrying(ctx)
		if err != nil {
			return sm.State{}, err
		}
		if c, ok := provider.(io.Closer); ok { // ours: release its connections
			defer c.Close()
		}
	}
	s.provider = provider

	state, commit, err := s.run(ctx)
	if err != nil {
		return sm.State{}, err
	}
	// The app holds the state now: the spool is not needed, and a crash
	// from here on must not leave it behind.
	s.cleanup()
	r.progress.update(func(p *Progress) { p.Phase = PhaseBootstrap })
	if err := r.bootstrap(state, commit); err != nil {
		return sm.State{}, err
	}
	r.logger.Info("Snapshot restored and stores bootstrapped", "height", state.LastBlockHeight,
		"app_hash", fmt.Sprintf("%X", state.AppHash))
	return state, nil
}

// bootstrap writes the stores in the crash-safe order (see Sync). A crash
// before Bootstrap leaves a state store at height 0: the next boot state
// syncs again, and overwrites the seen commit, checkpoint and offline
// height. A crash after it leaves a node that boots at height S with an
// empty block store and the offline height set (package node sets it again
// before every boot until block S+1 is stored).
func (r *Reactor) bootstrap(state sm.State, commit *types.Commit) error {
	h := state.LastBlockHeight
	if err := r.deps.BlockStore.SaveSeenCommit(h, commit); err != nil {
		return fmt.Errorf("saving the seen commit at height %d: %w", h, err)
	}
	crashPoint(crashSeenCommit)
	if r.cfg.Backfill {
		if err := r.saveBackfillStart(state); err != nil {
			return fmt.Errorf("saving the backfill checkpoint at height %d: %w", h, err)
		}
	}
	if err := r.deps.StateStore.SetOfflineStateSyncHeight(h); err != nil {
		return fmt.Errorf("saving the offline state sync height %d: %w", h, err)
	}
	crashPoint(crashOfflineHeight)
	if err := r.deps.StateStore.Bootstrap(state); err != nil {
		return fmt.Errorf("bootstrapping the state store at height %d: %w", h, err)
	}
	crashPoint(crashBootstrapped)
	return nil
}

// buildStateProvider makes the state provider Config asks for.
func (r *Reactor) buildStateProvider(ctx context.Context) (StateProvider, error) {
	trust := light.TrustOptions{
		Period: r.cfg.TrustPeriod,
		Height: r.cfg.TrustHeight,
		Hash:   r.cfg.TrustHashBytes(),
	}
	if r.cfg.UseP2P {
		return newP2PStateProvider(ctx, r, trust)
	}
	g := r.deps.Genesis
	if g.ChainID == "" {
		return nil, fmt.Errorf("%w: Deps.Genesis is required to build a state provider", ErrInvalidConfig)
	}
	return NewRPCStateProvider(ctx, g.ChainID, g.Version, g.InitialHeight, r.cfg.RPCServers, trust,
		r.cfg.VerifyTimeout, r.logger.With("module", "light"))
}

type inSnapshot struct {
	peer p2p.ID
	msg  *ssproto.SnapshotsResponse
}

type peerEvent struct {
	peer p2p.ID
	up   bool
}

// syncer runs one Sync. Its loop (run, on Sync's goroutine) owns the
// snapshot pool, the chunk queues and the fetch scheduler; Receive only
// hands it messages: snapshot advertisements and peer events through a
// mutex-guarded inbox that never blocks, chunks through a small channel
// whose backpressure bounds memory.
//
// What a peer can make the inbox hold: advertisements only up to its
// credit (maxSnapshotCredit, granted by asking it), checked at enqueue
// under the inbox lock; more than snapshotSlack beyond it gets the peer
// punished, and a departing peer's queued advertisements are dropped with
// it. The pool's own budgets are on snapshotPool.
type syncer struct {
	r        *Reactor
	cfg      Config
	provider StateProvider

	inMtx     sync.Mutex
	snapsIn   []inSnapshot
	peersIn   []peerEvent
	asked     map[p2p.ID]int // advertisements a peer may still send (its credit)
	excess    map[p2p.ID]int // advertisements a peer sent beyond its credit
	target    *restoreTarget
	wake      chan struct{} // capacity 1
	chunkCh   chan inChunk
	totalRecv int64 // chunk bytes received (loop only)

	// loop-owned
	pool    *snapshotPool
	queues  map[snapshotKey]*chunkSpool
	scheds  map[snapshotKey]*fetchScheduler
	stalls  map[snapshotKey]int
	started time.Time
	// keepSpools: Sync was cancelled or stopped; leave the spools for a
	// later Sync to resume.
	keepSpools bool
}

func newSyncer(r *Reactor) *syncer {
	return &syncer{
		r:       r,
		cfg:     r.cfg,
		wake:    make(chan struct{}, 1),
		chunkCh: make(chan inChunk, chunkInboxSize),
		pool:    newSnapshotPool(),
		asked:   make(map[p2p.ID]int),
		excess:  make(map[p2p.ID]int),
		queues:  make(map[snapshotKey]*chunkSpool),
		scheds:  make(map[snapshotKey]*fetchScheduler),
		stalls:  make(map[snapshotKey]int),
	}
}

func (s *syncer) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// addSnapshot queues an advertisement for the loop; never blocks. It is
// checked here, under the inbox lock, before anything is held: only a peer
// with credit left (see requestSnapshots) may queue one, so the inbox holds
// at most maxSnapshotCredit advertisements per connected peer. A peer that
// sends more than snapshotSlack beyond its credit is flooding: punished.
func (s *syncer) addSnapshot(peer p2p.ID, m *ssproto.SnapshotsResponse) {
	s.inMtx.Lock()
	if s.asked[peer] <= 0 || len(s.snapsIn) >= maxPendingSnapshots {
		s.excess[peer]++
		flood := s.excess[peer] > snapshotSlack
		s.inMtx.Unlock()
		s.r.metrics.unsolicited()
		s.r.logger.Debug("Dropping unsolicited snapshot", "peer", peer, "height", m.Height)
		if flood {
			s.r.punish(peer, fmt.Errorf("%w: %w: more than %d snapshot advertisements beyond those asked for",
				ErrPeerMisbehaved, ErrUnsolicited, snapshotSlack))
		}
		return
	}
	s.asked[peer]--
	s.snapsIn = append(s.snapsIn, inSnapshot{peer: peer, msg: m})
	s.inMtx.Unlock()
	s.signal()
}

// credit allows peer to send recentSnapshots more advertisements (it was
// just asked), up to maxSnapshotCredit.
func (s *syncer) credit(peer p2p.ID) {
	s.inMtx.Lock()
	defer s.inMtx.Unlock()
	s.asked[peer] = min(s.asked[peer]+recentSnapshots, maxSnapshotCredit)
}

// peerUp and peerDown queue peer events for the loop; never block.
func (s *syncer) peerUp(peer p2p.ID)   { s.peerEvent(peer, true) }
func (s *syncer) peerDown(peer p2p.ID) { s.peerEvent(peer, false) }

// peerEvent queues a peer event. A departed peer's credit, and its
// advertisements still queued, are dropped at once, so that nothing of it
// reaches the pool after it left.
func (s *syncer) peerEvent(peer p2p.ID, up bool) {
	s.inMtx.Lock()
	defer s.inMtx.Unlock()
	if !up {
		delete(s.asked, peer)
		delete(s.excess, peer)
		s.snapsIn = slices.DeleteFunc(s.snapsIn, func(in inSnapshot) bool { return in.peer == peer })
	}
	s.peersIn = append(s.peersIn, peerEvent{peer: peer, up: up})
	s.signal()
}

// drain takes the queued advertisements and peer events.
func (s *syncer) drain() ([]inSnapshot, []peerEvent) {
	s.inMtx.Lock()
	defer s.inMtx.Unlock()
	snaps, peers := s.snapsIn, s.peersIn
	s.snapsIn, s.peersIn = nil, nil
	return snaps, peers
}

// cleanup removes every spool directory, except, when Sync was cancelled
// or stopped, the spools are only released (a later Sync resumes them).
func (s *syncer) cleanup() {
	if !s.keepSpools {
		dir := s.cfg.TempDir
		if dir == "" {
			dir = os.TempDir()
		}
		removeStaleSpools(dir, "") // crashed Syncs' leftovers, whatever was chosen
	}
	for key, q := range s.queues {
		if s.keepSpools {
			q.release()
		} else if err := q.remove(); err != nil {
			s.r.logger.Error("Failed to remove chunk spool", "dir", q.dir, "err", err)
		}
		delete(s.queues, key)
	}
}

// dropSpool deletes snap's spool (it was rejected).
func (s *syncer) dropSpool(snap *snapshot) {
	if q, ok := s.queues[snap.key]; ok {
		if err := q.remove(); err != nil {
			s.r.logger.Error("Failed to remove chunk spool", "dir", q.dir, "err", err)
		}
		delete(s.queues, snap.key)
		delete(s.scheds, snap.key)
	}
}

// requestSnapshots asks peers (all capable ones when none given) for their
// snapshots.
func (s *syncer) requestSnapshots(peers ...p2p.ID) {
	if len(peers) == 0 {
		peers = s.r.peers.capable(SnapshotChannel, ChunkChannel)
		s.r.metrics.discoveryRound()
	}
	for _, id := range peers {
		if s.pool.isRejectedPeer(id) || !s.r.peers.has(id, SnapshotChannel) {
			continue
		}
		s.credit(id) // before sending: the answers may beat trySend's return
		if !s.r.trySend(id, SnapshotChannel, &ssproto.SnapshotsRequest{}) {
			s.inMtx.Lock()
			s.asked[id] = max(0, s.asked[id]-recentSnapshots)
			s.inMtx.Unlock()
		}
	}
}

// handleInbox processes queued advertisements and peer events. onSnapshot
// is called for every (peer, snapshot) advertisement accepted.
func (s *syncer) handleInbox(onSnapshot func(peer p2p.ID, snap *snapshot), onPeerDown func(peer p2p.ID)) {
	snaps, events := s.drain()
	for _, ev := range events {
		if ev.up {
			s.requestSnapshots(ev.peer)
			continue
		}
		s.pool.removePeer(ev.peer)
		if onPeerDown != nil {
			onPeerDown(ev.peer)
		}
	}
	for _, in := range snaps {
		if !s.r.peers.has(in.peer, SnapshotChannel) {
			continue // it left after queueing this (PeerDown runs after its removal from the list)
		}
		snap, isNew := s.pool.add(in.peer, in.msg)
		if snap == nil {
			continue
		}
		if isNew {
			s.r.metrics.snapshotDiscovered()
			s.r.logger.Info("Discovered snapshot", "height", snap.Height, "format", snap.Format,
				"chunks", snap.Chunks, "hash", fmt.Sprintf("%X", snap.Hash), "peer", in.peer)
			n := s.pool.size()
			s.r.progress.update(func(p *Progress) { p.Snapshots = n })
		}
		if onSnapshot != nil {
			onSnapshot(in.peer, snap)
		}
	}
}

// run discovers snapshots and tries them best first until one restores.
// Discovery ends as soon as it has learnt enough (see discovery), at the
// latest after Config.DiscoveryTime.
func (s *syncer) run(ctx context.Context) (sm.State, *types.Commit, error) {
	s.started = time.Now()
	defer func() { s.keepSpools = ctx.Err() != nil }()
	s.requestSnapshots()
	disc := newDiscovery(s.started, s.cfg.DiscoveryTime)
	onSnapshot := func(peer p2p.ID, _ *snapshot) { disc.advertised(peer, time.Now()) }
	idleDeadline := s.started.Add(s.cfg.DiscoveryTimeout)
	rediscover := s.started.Add(s.retryAfter())
	var lastErr error

	for {
		s.handleInbox(onSnapshot, nil)
		now := time.Now()
		if ok, wakeAt := s.discovered(disc, now); !ok {
			if err := s.waitUntil(ctx, wakeAt); err != nil {
				return sm.State{}, nil, err
			}
			continue
		}

		snap := s.pool.best(now)
		if snap == nil {
			if !now.Before(idleDeadline) {
				return sm.State{}, nil, s.noSnapshotError(lastErr)
			}
			if !now.Before(rediscover) {
				s.r.logger.Info("No usable snapshot yet; asking peers again", "peers", s.r.peers.len())
				s.requestSnapshots()
				rediscover = now.Add(s.retryAfter())
			}
			wakeAt := minTime(idleDeadline, rediscover)
			if t, ok := s.pool.nextDeferred(); ok {
				wakeAt = minTime(wakeAt, t)
			}
			if err := s.waitUntil(ctx, wakeAt); err != nil {
				return sm.State{}, nil, err
			}
			continue
		}

		state, commit, progressed, err := s.trySnapshot(ctx, snap)
		if err == nil {
			return state, commit, nil
		}
		if ctx.Err() != nil {
			return sm.State{}, nil, ctx.Err()
		}
		if progressed {
			idleDeadline = time.Now().Add(s.cfg.DiscoveryTimeout)
		}
		switch {
		case errors.Is(err, errBetterSnapshot):
			s.r.logger.Info("A better snapshot was advertised before any chunk was applied; switching",
				"height", snap.Height)
		case errors.Is(err, errDeferred):
			lastErr = err
			// Deferred snapshots come back when their wait ends; with
			// several, one may always be ready, so the idle bound is
			// checked here too, not only when none is.
			if !time.Now().Before(idleDeadline) {
				return sm.State{}, nil, s.noSnapshotError(lastErr)
			}
		case errors.Is(err, ErrAbort):
			return sm.State{}, nil, err
		case errors.Is(err, ErrRejectSnapshot), errors.Is(err, ErrVerifyFailed), errors.Is(err, ErrNoPeers):
			if !s.pool.usable(snap) {
				s.dropSpool(snap)
			}
			lastErr = err
			s.r.logger.Info("Snapshot failed; trying the next one", "height", snap.Height, "format", snap.Format, "err", err)
		default:
			return sm.State{}, nil, err
		}
	}
}

// discovered asks disc whether discovery is over; if not, it returns when
// to look again.
func (s *syncer) discovered(disc *discovery, now time.Time) (bool, time.Time) {
	if disc.done {
		return true, time.Time{}
	}
	var capable []p2p.ID
	for _, id := range s.r.peers.capable(SnapshotChannel, ChunkChannel) {
		if !s.pool.isRejectedPeer(id) {
			capable = append(capable, id)
		}
	}
	best := s.pool.best(now)
	bestPeers := 0
	if best != nil {
		bestPeers = len(s.pool.peersOf(best))
	}
	ok, wakeAt := disc.ready(now, capable, best != nil, bestPeers)
	if ok && now.Sub(s.started) < s.cfg.DiscoveryTime {
		s.r.logger.Info("Discovery ended early", "took", now.Sub(s.started), "snapshots", s.pool.size(),
			"peers", len(capable))
	}
	return ok, wakeAt
}

// retryAfter is the interval between asking peers again for snapshots and
// before a deferred snapshot is retried: DiscoveryTime, at least
// minRetryInterval.
func (s *syncer) retryAfter() time.Duration {
	return max(s.cfg.DiscoveryTime, minRetryInterval)
}

func (s *syncer) noSnapshotError(lastErr error) error {
	seen, rejected := s.pool.size(), s.pool.rejectedCount()
	if seen == 0 {
		return fmt.Errorf("%w: no peer advertised a snapshot within %v (%d peers connected)",
			ErrNoSnapshots, s.cfg.DiscoveryTimeout, s.r.peers.len())
	}
	if lastErr != nil && errors.Is(lastErr, errDeferred) && rejected < seen {
		// Nothing wrong was found with the rest: their verification kept
		// failing transiently (sources unavailable or disagreeing, see
		// ErrProvidersDisagree) until the discovery bound.
		return fmt.Errorf("%w: %d snapshots seen, %d rejected, the other %d could not be verified within %v; "+
			"last failure: %w", ErrAllSnapshotsRejected, seen, rejected, seen-rejected, s.cfg.DiscoveryTimeout,
			lastErr)
	}
	if lastErr != nil {
		return fmt.Errorf("%w: %d snapshots seen, %d rejected; last failure: %w",
			ErrAllSnapshotsRejected, seen, rejected, lastErr)
	}
	return fmt.Errorf("%w: %d snapshots seen, none usable", ErrAllSnapshotsRejected, seen)
}

// waitUntil waits until t, ctx end, or news in the inbox.
func (s *syncer) waitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
	case <-s.wake:
	}
	return nil
}

// classifyProvider turns a state-provider error into a decision. Only an
// error that says the snapshot itself cannot be verified rejects it;
// unavailable, lagging or disagreeing sources defer it.
func (s *syncer) classifyProvider(snap *snapshot, what string, err error) error {
	switch {
	case errors.Is(err, ErrTrustExpired):
		return err // no snapshot can be verified: terminal
	case errors.Is(err, ErrHeightNotAvailable):
		s.r.logger.Info("Snapshot height not verifiable yet; trying again later", "height", snap.Height, "err", err)
		s.pool.deferUntil(snap, time.Now().Add(s.retryAfter()))
		return fmt.Errorf("%w: %s at height %d: %w", errDeferred, what, snap.Height, err)
	case errors.Is(err, ErrProvidersDisagree):
		// A provider fault, not a snapshot fault: the liars are left out
		// (and punished over P2P) when a majority exists; else wait.
		s.r.logger.Info("Verification sources disagree; keeping the snapshot", "height", snap.Height, "err", err)
		s.pool.deferUntil(snap, time.Now().Add(s.retryAfter()))
		return fmt.Errorf("%w: %s at height %d: %w", errDeferred, what, snap.Height, err)
	case errors.Is(err, ErrProviderTransient), errors.Is(err, context.DeadlineExceeded):
		s.r.logger.Info("State provider failed transiently; keeping the snapshot", "height", snap.Height, "err", err)
		s.pool.deferUntil(snap, time.Now().Add(s.retryAfter()))
		return fmt.Errorf("%w: %s at height %d: %w", errDeferred, what, snap.Height, err)
	default:
		s.pool.reject(snap, err)
		s.r.metrics.snapshotRejected("verify")
		return fmt.Errorf("%w: %s at height %d: %w", ErrVerifyFailed, what, snap.Height, err)
	}
}

// trySnapshot verifies, offers and restores one snapshot. progressed says
// whether the attempt received any chunk (the discovery bound restarts
// then: an attempt that fetched nothing does not buy more time).
func (s *syncer) trySnapshot(ctx context.Context, snap *snapshot) (sm.State, *types.Commit, bool, error) {
	r := s.r
	logger := r.logger.With("height", snap.Height, "format", snap.Format)
	r.progress.update(func(p *Progress) {
		p.Phase, p.SnapshotHeight, p.SnapshotFormat, p.ChunksTotal = PhaseVerify, snap.Height, snap.Format, snap.Chunks
		p.ChunksFetched, p.ChunksApplied = 0, 0
	})

	appHash, state, commit, err := s.verifySnapshot(ctx, snap)
	if err != nil {
		return sm.State{}, nil, false, err
	}

	// Verification takes a while: take a better snapshot advertised meanwhile.
	s.handleInbox(nil, nil)
	if best := s.pool.best(time.Now()); best != nil && best != snap && best.Height > snap.Height {
		return sm.State{}, nil, false, fmt.Errorf("%w: height %d over %d", errBetterSnapshot, best.Height, snap.Height)
	}

	recvBefore := s.totalRecv
	for attempt := 0; ; attempt++ {
		if err := s.offer(ctx, snap, appHash); err != nil {
			return sm.State{}, nil, s.totalRecv > recvBefore, err
		}
		logger.Info("Snapshot accepted; restoring", "chunks", snap.Chunks)
		r.metrics.setSnapshot(int64(snap.Height), int64(snap.Chunks))
		err := s.restore(ctx, snap)
		progressed := s.totalRecv > recvBefore
		switch {
		case err == nil:
		case errors.Is(err, ErrRetrySnapshot) && attempt < maxSnapshotRetries:
			logger.Info("App asked to restart the snapshot; keeping fetched chunks")
			continue
		case errors.Is(err, ErrRetrySnapshot):
			s.pool.reject(snap, err)
			return sm.State{}, nil, progressed, fmt.Errorf("%w: restarted %d times: %w", ErrRejectSnapshot, attempt, err)
		case errors.Is(err, ErrRejectSnapshot):
			if errors.Is(err, errAppRejected) {
				s.punishForgers(snap, err)
			}
			s.pool.reject(snap, err)
			r.metrics.snapshotRejected("app")
			return sm.State{}, nil, progressed, err
		case errors.Is(err, ErrNoPeers):
			return sm.State{}, nil, progressed, s.stalled(snap, err)
		default:
			return sm.State{}, nil, progressed, err
		}
		if err := s.verifyApp(ctx, snap, appHash, state.Version.Consensus.App); err != nil {
			if errors.Is(err, ErrVerifyFailed) {
				s.punishForgers(snap, err)
			}
			s.pool.reject(snap, err)
			r.metrics.snapshotRejected("verify")
			return sm.State{}, nil, progressed, err
		}
		return state, commit, true, nil
	}
}

// verifySnapshot fetches the trusted app hash, state and commit of snap's
// height from the state provider and checks they agree.
func (s *syncer) verifySnapshot(ctx context.Context, snap *snapshot) ([]byte, sm.State, *types.Commit, error) {
	fail := func(what string, err error) ([]byte, sm.State, *types.Commit, error) {
		if ctx.Err() != nil {
			return nil, sm.State{}, nil, ctx.Err()
		}
		return nil, sm.State{}, nil, s.classifyProvider(snap, what, err)
	}
	appHash, err := s.provider.AppHash(ctx, snap.Height)
	if err != nil {
		return fail("app hash", err)
	}
	state, err := s.provider.State(ctx, snap.Height)
	if err != nil {
		return fail("state", err)
	}
	commit, err := s.provider.Commit(ctx, snap.Height)
	if err != nil {
		return fail("commit", err)
	}
	if !bytes.Equal(state.AppHash, appHash) || state.LastBlockHeight != int64(snap.Height) {
		s.pool.reject(snap, ErrVerifyFailed)
		return nil, sm.State{}, nil, fmt.Errorf("%w: state provider returned inconsistent state for height %d",
			ErrVerifyFailed, snap.Height)
	}
	return appHash, state, commit, nil
}

// stalled handles a restore that no peer could finish. The peers that said
// they lack a needed chunk, or answered nothing at all, no longer count as
// advertising snap and are asked for their snapshots again (they may have
// pruned it, or hold newer ones). The snapshot is tried again later, and
// rejected after maxSnapshotStalls such attempts.
func (s *syncer) stalled(snap *snapshot, err error) error {
	sched := s.scheds[snap.key]
	var blamed []p2p.ID
	if sched != nil {
		blamed = sched.unhelpful()
		for _, peer := range blamed {
			sched.forget(peer)
			s.pool.forget(peer, snap)
		}
	}
	s.requestSnapshots(blamed...)
	s.stalls[snap.key]++
	if n := s.stalls[snap.key]; n >= maxSnapshotStalls {
		s.pool.reject(snap, err)
		s.r.metrics.snapshotRejected("stalled")
		return fmt.Errorf("%w: height %d stalled %d times: %w", ErrRejectSnapshot, snap.Height, n, err)
	}
	s.pool.deferUntil(snap, time.Now().Add(s.retryAfter()))
	return err
}

// offer offers snap to the app and acts on the answer.
func (s *syncer) offer(ctx context.Context, snap *snapshot, appHash []byte) error {
	resp, err := s.r.deps.Snapshots.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{
		Snapshot: &abci.Snapshot{
			Height: snap.Height, Format: snap.Format, Chunks: snap.Chunks, Hash: snap.Hash, Metadata: snap.Metadata,
		},
		AppHash: appHash,
	})
	if err != nil {
		return fmt.Errorf("offering snapshot at height %d to the app: %w", snap.Height, err)
	}
	switch resp.Result {
	case abci.ResponseOfferSnapshot_ACCEPT:
		return nil
	case abci.ResponseOfferSnapshot_ABORT:
		return fmt.Errorf("%w: OfferSnapshot at height %d", ErrAbort, snap.Height)
	case abci.ResponseOfferSnapshot_REJECT:
		s.pool.reject(snap, ErrRejectSnapshot)
		s.r.metrics.snapshotRejected("app")
		return fmt.Errorf("%w: the app rejected it (height %d, format %d)", ErrRejectSnapshot, snap.Height, snap.Format)
	case abci.ResponseOfferSnapshot_REJECT_FORMAT:
		s.pool.rejectFormat(snap.Format)
		s.r.metrics.snapshotRejected("format")
		return fmt.Errorf("%w: the app rejected format %d", ErrRejectSnapshot, snap.Format)
	case abci.ResponseOfferSnapshot_REJECT_SENDER:
		for _, peer := range s.pool.peersOf(snap) {
			s.rejectPeer(peer, fmt.Errorf("%w: the app rejected its snapshot at height %d", ErrPeerMisbehaved, snap.Height))
		}
		s.r.metrics.snapshotRejected("sender")
		return fmt.Errorf("%w: the app rejected the senders of height %d", ErrRejectSnapshot, snap.Height)
	default:
		return fmt.Errorf("OfferSnapshot at height %d: unknown result %v", snap.Height, resp.Result)
	}
}

// punishForgers punishes, and stops using for this Sync, every peer that
// advertised snap or served one of its chunks: the app rejected its
// content, or the restored app does not match the trusted app hash.
func (s *syncer) punishForgers(snap *snapshot, cause error) {
	peers := s.pool.peersOf(snap)
	if q, ok := s.queues[snap.key]; ok {
		peers = append(peers, q.senders()...)
	}
	reason := fmt.Errorf("%w: advertised or served the snapshot at height %d (hash %X): %w",
		ErrPeerMisbehaved, snap.Height, snap.Hash, cause)
	seen := make(map[p2p.ID]bool)
	for _, peer := range peers {
		if !seen[peer] {
			seen[peer] = true
			s.rejectPeer(peer, reason)
		}
	}
}

// rejectPeer stops using peer for this sync and disconnects it.
func (s *syncer) rejectPeer(peer p2p.ID, reason error) {
	s.pool.rejectPeer(peer)
	for _, sched := range s.scheds {
		sched.removePeer(peer)
	}
	s.r.punish(peer, reason)
}

// verifyApp checks the restored app against the verified chain.
func (s *syncer) verifyApp(ctx context.Context, snap *snapshot, appHash []byte, appVersion uint64) error {
	resp, err := s.r.deps.Query.Info(ctx, proxy.RequestInfo)
	if err != nil {
		return fmt.Errorf("querying the restored app: %w", err)
	}
	switch {
	case resp.AppVersion != appVersion:
		return fmt.Errorf("%w: app version %d, the chain says %d", ErrVerifyFailed, resp.AppVersion, appVersion)
	case resp.LastBlockHeight != int64(snap.Height):
		return fmt.Errorf("%w: app height %d, snapshot height %d", ErrVerifyFailed, resp.LastBlockHeight, snap.Height)
	case !bytes.Equal(resp.LastBlockAppHash, appHash):
		return fmt.Errorf("%w: app hash %X, trusted app hash %X", ErrVerifyFailed, resp.LastBlockAppHash, appHash)
	}
	s.r.logger.Info("Verified the restored app", "height", snap.Height, "app_hash", fmt.Sprintf("%X", appHash))
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
