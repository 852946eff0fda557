package statesync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cosmos/gogoproto/proto"

	ssproto "github.com/statesync/statesync/proto"
)

// Channel IDs the Reactor registers. 0x60 and 0x61 are CometBFT's own state
// sync channels; 0x62 and 0x63 are tendermint v0.35's light-block and params
// channels, which stock CometBFT nodes do not advertise.
const (
	SnapshotChannel   = ssproto.SnapshotChannel
	ChunkChannel      = ssproto.ChunkChannel
	LightBlockChannel = ssproto.LightBlockChannel
	ParamsChannel     = ssproto.ParamsChannel
)

// Deps are the parts of the node the Reactor works with.
type Deps struct {
	// Snapshots is the app's snapshot connection: required, for serving and
	// restoring snapshots.
	Snapshots proxy.AppConnSnapshot
	// Query is the app's query connection: required by Sync, which checks
	// the restored app with Info.
	Query proxy.AppConnQuery
	// StateStore serves validators and params to peers; Sync bootstraps it.
	StateStore StateStore
	// BlockStore serves headers and commits to peers; Sync saves the seen
	// commit of the snapshot height in it.
	BlockStore BlockStore
	// Backfill persists backfilled headers, commits and validator sets
	// (NewDBBackfillStore on the node's own block and state DBs). Optional:
	// without it Backfill verifies blocks but keeps none.
	Backfill BackfillStore
	// Genesis is the genesis state (sm.MakeGenesisState): chain ID, initial
	// height and versions for building a state provider. Required by Sync
	// unless StateProvider is set.
	Genesis sm.State
	// StateProvider, if set, is used by Sync instead of one built from
	// Config (RPC servers, or peers when Config.UseP2P).
	StateProvider StateProvider
	// Logger defaults to a no-op logger.
	Logger log.Logger
	// Metrics defaults to NopMetrics().
	Metrics *Metrics
}

// Reactor serves snapshots, chunks, light blocks and consensus params to
// peers, and restores this node from a snapshot with Sync.
//
// It has two peer APIs, for two kinds of p2p layer; an embedder uses one of
// them, never both:
//   - CometBFT's p2p.Reactor (AddPeer, RemovePeer, Receive, set up by the
//     switch through SetSwitch), so it can be added to a classic or a
//     libp2p switch;
//   - AttachRouter, PeerUp, PeerDown and Deliver, for any other p2p layer.
//
// The first is a thin adapter over the second: AddPeer calls PeerUp,
// RemovePeer calls PeerDown and Receive calls Deliver.
//
// Receive (and Deliver) never call the app on the caller's goroutine:
// requests are queued for a bounded pool of serving workers (Config.
// ServeWorkers), with per-peer caps on queued and running requests. The one
// disk write they do is a chunk a running Sync keeps, written to the spool
// on the goroutine that delivered it (as CometBFT's own reactor does), which
// paces each peer to the disk.
type Reactor struct {
	p2p.BaseReactor

	cfg      Config
	deps     Deps
	logger   log.Logger
	metrics  *Metrics
	limits   ssproto.Limits
	peers    *peerList
	serveQ   *serveQueue
	serveLim *serveLimiter // per-peer serving budgets (serve.go)
	repeats  *repeatGuard  // repeated chunk requests: floods (chunkrepeats.go)
	chunks   *chunkCache   // loaded chunks shared between peers (serve.go)
	lights   *lightCache   // served light blocks (lightserve.go)
	progress *progressHub

	dispatcher *dispatcher

	// app gates the calls into the app (appconn.go); stopCh, closed by
	// OnStop, abandons the ones in flight.
	app      *appGate
	stopCh   chan struct{}
	stopOnce sync.Once

	routerMtx sync.RWMutex
	rt        Router

	// lifetime: ctx is cancelled by OnStop; every goroutine the Reactor
	// owns is started through goFunc and waited for in OnStop.
	lifeMtx sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	stopped bool
	wg      sync.WaitGroup

	mtx          sync.Mutex // guards syncer, lastBackfill and bfDone
	syncer       *syncer    // the running Sync's restore, if any
	lastBackfill *BackfillResult
	bfDone       chan struct{} // closed when the background backfill ends (nil: none started)
}

var _ p2p.Reactor = (*Reactor)(nil)

// NewReactor builds a Reactor. It validates cfg (errors wrap
// ErrInvalidConfig) and requires deps.Snapshots.
func NewReactor(cfg Config, deps Deps) (*Reactor, error) {
	if err := cfg.ValidateBasic(); err != nil {
		return nil, err
	}
	if deps.Snapshots == nil {
		return nil, fmt.Errorf("%w: Deps.Snapshots (the app's snapshot connection) is required", ErrInvalidConfig)
	}
	if deps.Logger == nil {
		deps.Logger = log.NewNopLogger()
	}
	if deps.Metrics == nil {
		deps.Metrics = NopMetrics()
	}
	limits := ssproto.DefaultLimits()
	limits.MaxSnapshotChunks = cfg.MaxSnapshotChunks
	stopCh := make(chan struct{})
	gate := &appGate{stop: stopCh}
	gateApp(gate, &deps)
	r := &Reactor{
		app:      gate,
		stopCh:   stopCh,
		cfg:      cfg,
		deps:     deps,
		logger:   deps.Logger,
		metrics:  deps.Metrics,
		limits:   limits,
		peers:    newPeerList(),
		serveQ:   newServeQueue(cfg.ServeQueuePerPeer, cfg.ServePerPeer),
		serveLim: newServeLimiter(cfg, time.Now),
		repeats:  newRepeatGuard(),
		chunks:   newChunkCache(cfg.ServeChunkCache),
		lights:   newLightCache(cfg.ServeLightCache),
		progress: newProgressHub(),
	}
	r.serveQ.ready = r.jobReady
	r.BaseReactor = *p2p.NewBaseReactor("StateSync", r)
	r.BaseReactor.SetLogger(deps.Logger)
	r.dispatcher = newDispatcher(r.sendFunc(), r.logger, r.metrics)
	r.dispatcher.connected = r.peers.connected
	return r, nil
}

// SetLogger implements service.Service.
func (r *Reactor) SetLogger(l log.Logger) {
	r.BaseReactor.SetLogger(l)
	r.logger = l
}

// SetSwitch implements p2p.Reactor: the switch becomes the Router.
func (r *Reactor) SetSwitch(sw p2p.Switcher) {
	r.BaseReactor.SetSwitch(sw)
	if sw != nil {
		r.AttachRouter(switchRouter{sw: sw})
	}
}

// AttachRouter sets the Router the Reactor sends through. Call it before
// Start when the Reactor is not added to a CometBFT switch.
func (r *Reactor) AttachRouter(rt Router) {
	r.routerMtx.Lock()
	defer r.routerMtx.Unlock()
	r.rt = rt
}

func (r *Reactor) router() Router {
	r.routerMtx.RLock()
	defer r.routerMtx.RUnlock()
	if r.rt == nil {
		return nopRouter{}
	}
	return r.rt
}

// nopRouter stands in until a router is attached: nothing can be sent.
type nopRouter struct{}

func (nopRouter) Send(p2p.ID, byte, proto.Message) bool { return false }
func (nopRouter) Punish(p2p.ID, error)                  {}

// GetChannels implements p2p.Reactor.
//
// Priorities and send queues, against CometBFT v0.40's channels on the same
// MConnection. The MConnection sends the next packet from the channel with
// the least recently-sent bytes per unit of priority, so a channel with
// nothing queued (a vote, a proposal) goes next whatever the others
// declare, and priorities share the link between channels that are all
// busy. Consensus declares Data 10, Vote 7, State 6 and VoteSetBits 1
// (consensus/reactor.go), evidence 6, blocksync and mempool 5; the
// built-in state sync reactor snapshots 5 and chunks 3, send queues of 10.
// Ours:
//
//   - snapshots 5 (as the built-in), send queue 10: one answer to a
//     SnapshotsRequest (recentSnapshots advertisements) fits;
//   - chunks 3 (as the built-in): under load a chunk stream gets 3/(3+10)
//     of the link against block parts, 3/(3+7) against votes, so it never
//     starves consensus. Send queue 4, not 10: responses go out with
//     TrySend, so the queue is what a peer that does not read can make us
//     hold (4 chunks of up to 16 MB, against the built-in's 10), and the
//     bytes queued ahead of the connection bound how long the peer's own
//     next chunk waits; 4 queued plus the one being written cover our
//     requesters' default chunk_window and CometBFT's 4 chunk fetchers;
//   - light blocks 3 (not the 5 of blocksync and mempool: a backfilling
//     peer can keep this channel busy, and it should yield to consensus
//     as chunks do), send queue serve_queue_per_peer: a backfilling peer
//     keeps up to its window of requests in flight, and its answers must
//     fit or TrySend drops them (a light block is kilobytes, not
//     megabytes);
//   - params 2, send queue 10: rare, small.
func (r *Reactor) GetChannels() []*p2p.ChannelDescriptor {
	return []*p2p.ChannelDescriptor{
		{
			ID: SnapshotChannel, Priority: 5, SendQueueCapacity: 10,
			RecvMessageCapacity: ssproto.SnapshotMsgSize, MessageType: &ssproto.Message{},
		},
		{
			ID: ChunkChannel, Priority: 3, SendQueueCapacity: 4,
			RecvMessageCapacity: ssproto.ChunkMsgSize, MessageType: &ssproto.Message{},
		},
		{
			ID: LightBlockChannel, Priority: 3, SendQueueCapacity: r.cfg.ServeQueuePerPeer,
			RecvMessageCapacity: ssproto.LightBlockMsgSize, MessageType: &ssproto.Message{},
		},
		{
			ID: ParamsChannel, Priority: 2, SendQueueCapacity: 10,
			RecvMessageCapacity: ssproto.ParamsMsgSize, MessageType: &ssproto.Message{},
		},
	}
}

// OnStart implements service.Service: it starts the serving workers.
func (r *Reactor) OnStart() error {
	r.lifeMtx.Lock()
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.stopped = false
	r.lifeMtx.Unlock()
	for i := 0; i < r.cfg.ServeWorkers; i++ {
		r.goFunc(r.serveWorker)
	}
	return nil
}

// OnStop implements service.Service: it cancels a running Sync, releases
// every pending request and waits for all the Reactor's goroutines.
// BaseService makes Stop idempotent. Calls into the app in flight are
// abandoned, not waited for (the app finishes them; see AppCallsDone), so
// Stop does not wait for a slow app.
func (r *Reactor) OnStop() {
	r.stopOnce.Do(func() { close(r.stopCh) })
	r.lifeMtx.Lock()
	r.stopped = true
	if r.cancel != nil {
		r.cancel()
	}
	r.lifeMtx.Unlock()
	r.dispatcher.close()
	r.wg.Wait()
}

// goFunc runs f on a goroutine owned by the Reactor, with the Reactor's
// lifetime context; it returns false (not running f) once stopped.
func (r *Reactor) goFunc(f func(ctx context.Context)) bool {
	r.lifeMtx.Lock()
	defer r.lifeMtx.Unlock()
	if r.stopped || r.ctx == nil {
		return false
	}
	ctx := r.ctx
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f(ctx)
	}()
	return true
}

// lifetime returns the Reactor's lifetime context (nil before Start).
func (r *Reactor) lifetime() context.Context {
	r.lifeMtx.Lock()
	defer r.lifeMtx.Unlock()
	if r.stopped {
		return nil
	}
	return r.ctx
}

// InitPeer implements p2p.Reactor.
func (r *Reactor) InitPeer(peer p2p.Peer) p2p.Peer { return peer }

// AddPeer implements p2p.Reactor.
func (r *Reactor) AddPeer(peer p2p.Peer) {
	r.PeerUp(peer.ID(), peerChannels(peer))
}

// RemovePeer implements p2p.Reactor.
func (r *Reactor) RemovePeer(peer p2p.Peer, _ any) {
	r.PeerDown(peer.ID())
}

// Receive implements p2p.Reactor. The switch has already unwrapped the
// ssproto.Message envelope.
func (r *Reactor) Receive(e p2p.Envelope) {
	if e.Src == nil {
		return
	}
	r.Deliver(e.Src.ID(), e.ChannelID, e.Message)
}

// PeerUp tells the Reactor a peer connected. channels lists the channel IDs
// the peer advertised, or nil if unknown (then all are assumed). A running
// Sync asks the new peer for snapshots. Never blocks.
func (r *Reactor) PeerUp(id p2p.ID, channels []byte) {
	r.peers.add(id, channels)
	n := r.peers.len()
	r.metrics.setPeers(n)
	if s := r.activeSyncer(); s != nil {
		r.progress.update(func(p *Progress) { p.Peers = n })
		s.peerUp(id)
	}
}

// PeerDown tells the Reactor a peer disconnected. Its queued requests are
// dropped and requests waiting on it fail at once. Never blocks.
func (r *Reactor) PeerDown(id p2p.ID) {
	if !r.peers.remove(id) {
		return
	}
	n := r.peers.len()
	r.metrics.setPeers(n)
	r.serveQ.dropPeer(id)
	r.serveLim.removePeer(id)
	r.repeats.removePeer(id)
	r.dispatcher.removePeer(id)
	if s := r.activeSyncer(); s != nil {
		r.progress.update(func(p *Progress) { p.Peers = n })
		s.peerDown(id)
	}
}

// Deliver hands the Reactor an inbound message (an inner ssproto message)
// from peer on channel chID. Invalid messages get the peer punished through
// the Router. Safe for concurrent use; it blocks only to apply backpressure
// on a peer sending chunks faster than they are spooled, and never past
// Stop.
func (r *Reactor) Deliver(peer p2p.ID, chID byte, msg proto.Message) {
	if !r.IsRunning() {
		return
	}
	if err := checkChannel(chID, msg); err != nil {
		r.punish(peer, err)
		return
	}
	// A light block is decoded and validated once, by the dispatcher,
	// which punishes an invalid one through countResponseErr.
	if _, lightBlock := msg.(*ssproto.LightBlockResponse); !lightBlock {
		if err := ssproto.Validate(msg, r.limits); err != nil {
			r.punish(peer, err)
			return
		}
	}
	switch m := msg.(type) {
	case *ssproto.SnapshotsRequest, *ssproto.ChunkRequest, *ssproto.LightBlockRequest, *ssproto.ParamsRequest:
		r.enqueueRequest(peer, chID, msg)

	case *ssproto.SnapshotsResponse:
		s := r.activeSyncer()
		if s == nil {
			r.metrics.unsolicited()
			r.logger.Debug("Dropping snapshot: no sync in progress", "peer", peer)
			return
		}
		s.addSnapshot(peer, m)

	case *ssproto.ChunkResponse:
		s := r.activeSyncer()
		if s == nil {
			r.metrics.unsolicited()
			r.logger.Debug("Dropping chunk: no sync in progress", "peer", peer)
			return
		}
		s.addChunk(peer, m)

	case *ssproto.LightBlockResponse:
		r.countResponseErr(peer, r.dispatcher.handleLightBlockResponse(peer, m))

	case *ssproto.ParamsResponse:
		r.countResponseErr(peer, r.dispatcher.handleParamsResponse(peer, m))
	}
}

// countResponseErr deals with a dispatcher verdict on a response: a
// misbehaving peer is punished, a merely late or unsolicited one counted.
func (r *Reactor) countResponseErr(peer p2p.ID, err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrPeerMisbehaved):
		r.punish(peer, err)
	default:
		r.metrics.unsolicited()
		r.logger.Debug("Dropped response", "peer", peer, "err", err)
	}
}

// checkChannel verifies that msg travels on the channel it belongs to.
func checkChannel(chID byte, msg proto.Message) error {
	var want byte
	switch msg.(type) {
	case *ssproto.SnapshotsRequest, *ssproto.SnapshotsResponse:
		want = SnapshotChannel
	case *ssproto.ChunkRequest, *ssproto.ChunkResponse:
		want = ChunkChannel
	case *ssproto.LightBlockRequest, *ssproto.LightBlockResponse:
		want = LightBlockChannel
	case *ssproto.ParamsRequest, *ssproto.ParamsResponse:
		want = ParamsChannel
	default:
		return fmt.Errorf("%w: unknown message type %T on channel %#x", ssproto.ErrInvalidMessage, msg, chID)
	}
	if chID != want {
		return fmt.Errorf("%w: %T on channel %#x, want %#x", ssproto.ErrInvalidMessage, msg, chID, want)
	}
	return nil
}

// send queues msg for peer; it may block briefly (see Router.Send).
func (r *Reactor) send(peer p2p.ID, chID byte, msg proto.Message) bool {
	return r.router().Send(peer, chID, msg)
}

// trySend queues msg without blocking when the Router can, else sends.
func (r *Reactor) trySend(peer p2p.ID, chID byte, msg proto.Message) bool {
	rt := r.router()
	if ts, ok := rt.(TrySender); ok {
		return ts.TrySend(peer, chID, msg)
	}
	return rt.Send(peer, chID, msg)
}

func (r *Reactor) sendFunc() func(p2p.ID, byte, proto.Message) bool {
	return r.send
}

// punish disconnects peer for cause and counts it.
func (r *Reactor) punish(peer p2p.ID, err error) {
	r.logger.Info("Disconnecting peer", "peer", peer, "err", err)
	r.metrics.peerPunished(reasonLabel(err))
	r.router().Punish(peer, err)
}

func reasonLabel(err error) string {
	switch {
	case errors.Is(err, ssproto.ErrTooManyChunks):
		return "too_many_chunks"
	case errors.Is(err, ssproto.ErrInvalidMessage):
		return "invalid_message"
	case errors.Is(err, ErrVerifyFailed):
		return "verify_failed"
	case errors.Is(err, ErrRejectSnapshot):
		return "rejected_sender"
	default:
		return "misbehaved"
	}
}

// Metricer returns the Reactor's progress counters (the Metricer of
// Deps.Metrics, or of the NopMetrics used when that was nil). Safe to call
// at any time, from any goroutine.
func (r *Reactor) Metricer() Metricer { return r.metrics }

// LastBackfill returns the outcome of the last background backfill
// (started by Sync, StartBackfill or ResumeBackfill) once it has ended, or
// nil if none was started or one is running.
func (r *Reactor) LastBackfill() *BackfillResult {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	if r.lastBackfill == nil {
		return nil
	}
	res := *r.lastBackfill
	return &res
}

func (r *Reactor) activeSyncer() *syncer {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return r.syncer
}
