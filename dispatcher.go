package statesync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"
	"github.com/cosmos/gogoproto/proto"

	ssproto "github.com/statesync/statesync/proto"
)

// Errors of the dispatcher. Each wraps one of the package's sentinels, so
// callers branch with errors.Is on either.
var (
	// ErrUnsolicited is returned by the response handlers for a response
	// that matches no pending request. The Reactor counts it; a peer that
	// sent more responses than it was sent requests is punished (the error
	// then also wraps ErrPeerMisbehaved).
	ErrUnsolicited = errors.New("statesync: unsolicited response")

	// errLateResponse: the response answers a request that already ended
	// (timed out, cancelled, or answered before: a duplicate). Counted,
	// never punished: a slow peer is not a malicious one.
	errLateResponse = fmt.Errorf("%w: late or duplicate", ErrUnsolicited)

	// errRequestTimeout: the peer did not answer within the request's
	// timeout.
	errRequestTimeout = fmt.Errorf("%w: no response from peer", ErrTimeout)

	// errPeerGone: the peer disconnected while the request was pending, or
	// the request could not be sent to it.
	errPeerGone = fmt.Errorf("%w: peer disconnected or unreachable", ErrNoPeers)

	// errDuplicateRequest: a request for the same peer, kind and height is
	// already pending. Nothing was sent.
	errDuplicateRequest = errors.New("statesync: the same request is already pending with this peer")
)

const (
	// defaultRequestTimeout bounds a request made through the blocking
	// LightBlock and Params calls: the light-block timeout's default.
	defaultRequestTimeout = DefaultLightBlockTimeout
	// recentPerPeer is how many ended requests per peer are remembered, to
	// tell a late response from an unsolicited one (for logs and metrics).
	recentPerPeer = 64
	// answerSlack is how many responses beyond the number of requests sent
	// a peer is forgiven (responses racing a reconnection) before it counts
	// as flooding us.
	answerSlack = 2
)

// requestKind is what a request asks for.
type requestKind uint8

const (
	kindLightBlock requestKind = iota + 1
	kindParams
)

func (k requestKind) String() string {
	switch k {
	case kindLightBlock:
		return "light block"
	case kindParams:
		return "params"
	default:
		return "unknown"
	}
}

// requestKey identifies a request: at most one per key is pending.
type requestKey struct {
	peer   p2p.ID
	kind   requestKind
	height int64
}

func (k requestKey) String() string {
	return fmt.Sprintf("%s at height %d from peer %s", k.kind, k.height, k.peer)
}

// response is the outcome of one request, delivered exactly once to the
// sink the request was started with.
type response struct {
	key requestKey
	// lb is the light block (kindLightBlock). It passed ValidateBasic with
	// its own chain ID and has the requested height. nil with a nil err
	// means the peer said it does not have the block.
	lb *types.LightBlock
	// params are the consensus params (kindParams), not yet checked
	// against any header.
	params types.ConsensusParams
	// err is nil for an answer, or wraps ErrTimeout (errRequestTimeout),
	// ErrNoPeers (errPeerGone) or ErrStopped.
	err error
	// rtt is the time from sending the request to the outcome.
	rtt time.Duration
	// size is the response's size on the wire, in bytes.
	size int64
}

type pendingRequest struct {
	sink chan<- response
	// joined are the sinks of blocking callers that asked for the same key
	// while it was pending (see wait): each gets its own copy of the
	// outcome.
	joined []chan<- response
	timer  *time.Timer
	seq    uint64
	sent   time.Time
}

// peerRequests is the dispatcher's record of one peer.
type peerRequests struct {
	pending    map[requestKey]*pendingRequest
	recent     [recentPerPeer]requestKey // ring of ended requests
	recentNext int
	asked      int64 // requests sent to the peer
	answers    int64 // responses received from it, matched or not
}

func (p *peerRequests) remember(key requestKey) {
	p.recent[p.recentNext] = key
	p.recentNext = (p.recentNext + 1) % recentPerPeer
}

func (p *peerRequests) recentlyEnded(match func(requestKey) bool) bool {
	for _, k := range p.recent {
		if k.kind != 0 && match(k) {
			return true
		}
	}
	return false
}

// dispatcher is the one owner of every pending light-block and params
// request this node made. It has no goroutines: requests are registered
// under its mutex, and each ends exactly once — by the peer's response,
// its timeout (a timer), cancel, removePeer or close — with a response
// sent to the requester's sink. Nothing blocks under the mutex: sends to
// the network happen outside it, and a sink must have room for every
// response it is owed (the requester's contract), so delivering never
// waits.
//
// A response is matched by peer, kind and height. An empty light-block
// response carries no height: it answers the lowest light-block height
// pending with that peer (a peer lacking a height lacks every lower one,
// and backfill, the only caller with several heights in flight per peer,
// walks downwards). Late and duplicate responses are dropped and reported
// (errLateResponse), as are responses matching nothing asked recently
// (ErrUnsolicited). An honest peer never sends more responses than it was
// sent requests: one that does is reported as misbehaving.
//
// At most one request per peer, kind and height is on the wire: start
// refuses a second one (errDuplicateRequest), and a blocking caller (wait)
// joins the pending one instead, getting its own copy of the outcome.
//
// A request can fail because the peer does not answer in time
// (errRequestTimeout), disconnects or cannot be sent to (errPeerGone), or
// the dispatcher is closed (ErrStopped).
//
// What a peer can make it hold: one record per connected peer, with at
// most the requests this node made to it plus a fixed ring of ended ones.
// No record is created or kept for a peer that is not connected (a
// response racing its disconnection is dropped as unsolicited).
type dispatcher struct {
	send      func(p2p.ID, byte, proto.Message) bool
	connected func(p2p.ID) bool // nil: every peer counts as connected
	logger    log.Logger
	metrics   *Metrics
	timeout   time.Duration // for the blocking calls

	mtx    sync.Mutex
	peers  map[p2p.ID]*peerRequests
	seq    uint64
	closed bool
}

// newDispatcher returns a dispatcher sending requests with send (an inner
// ssproto message to a peer on a channel; false if it could not be sent).
func newDispatcher(send func(p2p.ID, byte, proto.Message) bool, logger log.Logger, metrics *Metrics) *dispatcher {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	if metrics == nil {
		metrics = NopMetrics()
	}
	return &dispatcher{
		send:    send,
		logger:  logger,
		metrics: metrics,
		timeout: defaultRequestTimeout,
		peers:   make(map[p2p.ID]*peerRequests),
	}
}

// peerLocked returns id's record, creating it if id is connected; nil if
// it is not.
func (d *dispatcher) peerLocked(id p2p.ID) *peerRequests {
	p, ok := d.peers[id]
	if !ok {
		if d.connected != nil && !d.connected(id) {
			return nil
		}
		p = &peerRequests{pending: make(map[requestKey]*pendingRequest)}
		d.peers[id] = p
	}
	return p
}

// pruneLocked forgets id's record once it has nothing pending and id is no
// longer connected.
func (d *dispatcher) pruneLocked(id p2p.ID) {
	if p, ok := d.peers[id]; ok && len(p.pending) == 0 && d.connected != nil && !d.connected(id) {
		delete(d.peers, id)
	}
}

// records returns how many peers the dispatcher keeps a record of.
func (d *dispatcher) records() int {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	return len(d.peers)
}

// start sends a request and arranges for exactly one response to reach
// sink within timeout — unless start returns an error (then nothing was
// sent and nothing will be delivered) or cancel removes the request first.
// The caller must leave room in sink for every response it is owed.
// Errors: ErrStopped, errDuplicateRequest, errPeerGone (not sent).
func (d *dispatcher) start(key requestKey, timeout time.Duration, sink chan<- response) error {
	var msg proto.Message
	var ch byte
	switch key.kind {
	case kindLightBlock:
		msg, ch = &ssproto.LightBlockRequest{Height: uint64(key.height)}, LightBlockChannel
	case kindParams:
		msg, ch = &ssproto.ParamsRequest{Height: uint64(key.height)}, ParamsChannel
	default:
		return fmt.Errorf("statesync: unknown request kind %d", key.kind)
	}
	if key.height <= 0 {
		return fmt.Errorf("statesync: request for height %d", key.height)
	}
	if timeout <= 0 {
		timeout = d.timeout
	}

	d.mtx.Lock()
	if d.closed {
		d.mtx.Unlock()
		return ErrStopped
	}
	p := d.peerLocked(key.peer)
	if p == nil {
		d.mtx.Unlock()
		return fmt.Errorf("%w: %s", errPeerGone, key)
	}
	if _, busy := p.pending[key]; busy {
		d.mtx.Unlock()
		return errDuplicateRequest
	}
	d.seq++
	seq := d.seq
	req := &pendingRequest{sink: sink, seq: seq, sent: time.Now()}
	req.timer = time.AfterFunc(timeout, func() { d.expire(key, seq) })
	p.pending[key] = req
	p.asked++
	d.mtx.Unlock()

	if d.send(key.peer, ch, msg) {
		return nil
	}
	// Not sent. If the request is still ours to end, end it silently and
	// say so; if something else ended it meanwhile (a timeout, removePeer,
	// close), that response stands.
	d.mtx.Lock()
	defer d.mtx.Unlock()
	if req := d.takeLocked(key, seq); req != nil {
		if p, ok := d.peers[key.peer]; ok {
			p.asked--
		}
		err := fmt.Errorf("%w: could not send %s", errPeerGone, key)
		for _, sink := range req.joined { // callers that joined meanwhile
			d.deliverLocked(key, sink, response{key: key, err: err})
		}
		return err
	}
	return nil
}

// takeLocked removes and returns the pending request for key if it is the
// one numbered seq (0: any), stopping its timer and remembering the key.
func (d *dispatcher) takeLocked(key requestKey, seq uint64) *pendingRequest {
	p, ok := d.peers[key.peer]
	if !ok {
		return nil
	}
	req, ok := p.pending[key]
	if !ok || (seq != 0 && req.seq != seq) {
		return nil
	}
	delete(p.pending, key)
	req.timer.Stop()
	p.remember(key)
	d.pruneLocked(key.peer)
	return req
}

// finishLocked ends a taken request by sending r to its sink and to every
// joined sink (each joined caller gets its own copy of a light block).
func (d *dispatcher) finishLocked(key requestKey, req *pendingRequest, r response) {
	r.key = key
	r.rtt = time.Since(req.sent)
	d.deliverLocked(key, req.sink, r)
	for _, sink := range req.joined {
		c := r
		if r.lb != nil {
			c.lb = copyLightBlock(r.lb)
		}
		d.deliverLocked(key, sink, c)
	}
}

func (d *dispatcher) deliverLocked(key requestKey, sink chan<- response, r response) {
	select {
	case sink <- r:
	default:
		// The requester broke its contract (no room in its sink). Never
		// block under the lock; the requester will not get this outcome.
		d.logger.Error("Dropping a request outcome: the requester's sink is full", "request", key.String())
	}
}

// copyLightBlock is a deep copy of a light block that passed ValidateBasic
// (so its conversions cannot fail; if one did, lb itself is returned).
func copyLightBlock(lb *types.LightBlock) *types.LightBlock {
	pb, err := lb.ToProto()
	if err != nil {
		return lb
	}
	c, err := types.LightBlockFromProto(pb)
	if err != nil {
		return lb
	}
	return c
}

// join adds sink as a waiter on the request pending for key, if there is
// one: sink then gets exactly one outcome, when that request ends (within
// its timeout), unless cancel removes sink first. It reports whether sink
// joined (false: nothing is pending for key; start a request instead).
func (d *dispatcher) join(key requestKey, sink chan<- response) bool {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	p, ok := d.peers[key.peer]
	if !ok || d.closed {
		return false
	}
	req, ok := p.pending[key]
	if !ok {
		return false
	}
	req.joined = append(req.joined, sink)
	return true
}

func (d *dispatcher) expire(key requestKey, seq uint64) {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	if req := d.takeLocked(key, seq); req != nil {
		d.finishLocked(key, req, response{err: fmt.Errorf("%w: %s", errRequestTimeout, key)})
	}
}

// cancel ends the pending request for key that was started with sink,
// without delivering anything; it reports whether that request was still
// pending (false: its response was or is being delivered to sink). A
// request for the same key started by another caller (another sink) is
// left alone: two callers may ask one peer for one height one after the
// other, and the first one's cancel must not end the second one's request
// (its waiter would then wait for a response that never comes). A
// response arriving later counts as late.
func (d *dispatcher) cancel(key requestKey, sink chan<- response) bool {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	p, ok := d.peers[key.peer]
	if !ok {
		return false
	}
	req, ok := p.pending[key]
	if !ok {
		return false
	}
	for i, j := range req.joined {
		if j == sink {
			req.joined = append(req.joined[:i:i], req.joined[i+1:]...)
			return true
		}
	}
	if req.sink != sink {
		return false
	}
	if len(req.joined) > 0 {
		// Others wait on it: the first of them takes it over.
		req.sink, req.joined = req.joined[0], req.joined[1:]
		return true
	}
	return d.takeLocked(key, req.seq) != nil
}

// wait is the blocking form of start: it returns the response, or
// ctx.Err() when ctx ends first (the request is then cancelled). A
// timeout <= 0 means the dispatcher's default. A caller asking for what is
// already pending (the light client checking a witness while the
// cross-check polls the same peer for the same height) joins that request
// rather than sending a second one; it then waits at most as long as that
// request's timeout.
func (d *dispatcher) wait(ctx context.Context, key requestKey, timeout time.Duration) (response, error) {
	sink := make(chan response, 1)
	for attempt := 0; ; attempt++ {
		err := d.start(key, timeout, sink)
		if err == nil {
			break
		}
		if !errors.Is(err, errDuplicateRequest) || attempt >= 2 {
			return response{}, err
		}
		if d.join(key, sink) {
			break
		}
		// It ended between start and join: ask again.
	}
	select {
	case r := <-sink:
		return r, r.err
	case <-ctx.Done():
		if !d.cancel(key, sink) {
			// It ended meanwhile: its response is in the sink.
			r := <-sink
			return r, r.err
		}
		return response{}, ctx.Err()
	}
}

// LightBlock asks peer for the light block at height and waits. It returns
// nil and no error if the peer does not have it. Errors wrap ErrTimeout
// (no answer within the dispatcher's timeout), ErrNoPeers (peer gone or
// unreachable) or ErrStopped; or ctx.Err() as is.
func (d *dispatcher) LightBlock(ctx context.Context, peer p2p.ID, height int64) (*types.LightBlock, error) {
	r, err := d.wait(ctx, requestKey{peer: peer, kind: kindLightBlock, height: height}, 0)
	return r.lb, err
}

// Params asks peer for the consensus params at height and waits; errors as
// for LightBlock. The params are whatever the peer sent: check their hash.
func (d *dispatcher) Params(ctx context.Context, peer p2p.ID, height int64) (types.ConsensusParams, error) {
	r, err := d.wait(ctx, requestKey{peer: peer, kind: kindParams, height: height}, 0)
	return r.params, err
}

// handleLightBlockResponse matches a validated light-block response from
// peer to its request. A non-nil error means the response was dropped:
// it wraps ErrPeerMisbehaved when the peer should be punished, else
// ErrUnsolicited (late, duplicate or unasked; count it).
func (d *dispatcher) handleLightBlockResponse(peer p2p.ID, m *ssproto.LightBlockResponse) error {
	lb, err := ssproto.ToLightBlock(m)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPeerMisbehaved, err)
	}
	d.mtx.Lock()
	defer d.mtx.Unlock()
	p := d.peerLocked(peer)
	if p == nil {
		return fmt.Errorf("%w: light block from peer %s, which is not connected", ErrUnsolicited, peer)
	}
	p.answers++
	if lb == nil {
		key, ok := lowestPendingLocked(p, kindLightBlock)
		if !ok {
			return d.unmatchedLocked(p, peer, "empty light block", func(k requestKey) bool {
				return k.kind == kindLightBlock
			})
		}
		d.finishLocked(key, d.takeLocked(key, 0), response{})
		return nil
	}
	key := requestKey{peer: peer, kind: kindLightBlock, height: lb.Height}
	req := d.takeLocked(key, 0)
	if req == nil {
		return d.unmatchedLocked(p, peer, fmt.Sprintf("light block at height %d", lb.Height), func(k requestKey) bool {
			return k == key
		})
	}
	d.finishLocked(key, req, response{lb: lb, size: int64(m.Size())})
	return nil
}

// handleParamsResponse matches a validated params response; errors as for
// handleLightBlockResponse.
func (d *dispatcher) handleParamsResponse(peer p2p.ID, m *ssproto.ParamsResponse) error {
	params, err := ssproto.ToConsensusParams(m)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPeerMisbehaved, err)
	}
	d.mtx.Lock()
	defer d.mtx.Unlock()
	p := d.peerLocked(peer)
	if p == nil {
		return fmt.Errorf("%w: params from peer %s, which is not connected", ErrUnsolicited, peer)
	}
	p.answers++
	key := requestKey{peer: peer, kind: kindParams, height: int64(m.Height)}
	req := d.takeLocked(key, 0)
	if req == nil {
		return d.unmatchedLocked(p, peer, fmt.Sprintf("params at height %d", m.Height), func(k requestKey) bool {
			return k == key
		})
	}
	d.finishLocked(key, req, response{params: params})
	return nil
}

// unmatchedLocked classifies a response that matched no pending request.
func (d *dispatcher) unmatchedLocked(p *peerRequests, peer p2p.ID, what string, recent func(requestKey) bool) error {
	if p.answers > p.asked+answerSlack {
		return fmt.Errorf("%w: %w: %s from peer %s: %d responses to %d requests",
			ErrPeerMisbehaved, ErrUnsolicited, what, peer, p.answers, p.asked)
	}
	if p.recentlyEnded(recent) {
		return fmt.Errorf("%w: %s from peer %s", errLateResponse, what, peer)
	}
	return fmt.Errorf("%w: %s from peer %s", ErrUnsolicited, what, peer)
}

func lowestPendingLocked(p *peerRequests, kind requestKind) (requestKey, bool) {
	var best requestKey
	found := false
	for key := range p.pending {
		if key.kind == kind && (!found || key.height < best.height) {
			best, found = key, true
		}
	}
	return best, found
}

// pending returns the number of requests pending with peer.
func (d *dispatcher) pending(peer p2p.ID) int {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	if p, ok := d.peers[peer]; ok {
		return len(p.pending)
	}
	return 0
}

// removePeer fails the peer's pending requests at once with errPeerGone
// and forgets the peer.
func (d *dispatcher) removePeer(peer p2p.ID) {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	p, ok := d.peers[peer]
	if !ok {
		return
	}
	for key := range p.pending {
		req := d.takeLocked(key, 0)
		d.finishLocked(key, req, response{err: fmt.Errorf("%w: %s", errPeerGone, key)})
	}
	delete(d.peers, peer)
}

// close fails every pending request with ErrStopped and refuses new ones.
// Idempotent.
func (d *dispatcher) close() {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	d.closed = true
	for _, p := range d.peers {
		for key := range p.pending {
			req := d.takeLocked(key, 0)
			d.finishLocked(key, req, response{err: ErrStopped})
		}
	}
}
