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

// ErrUnsolicited is returned by the dispatcher's response handlers for a
// response that matches no pending request (late, duplicate or never asked
// for). It is counted against the peer, not punished.
var ErrUnsolicited = errors.New("statesync: unsolicited response")

// defaultRequestTimeout bounds a light-block or params request whose ctx has
// no earlier deadline.
const defaultRequestTimeout = 10 * time.Second

type requestKind uint8

const (
	kindLightBlock requestKind = iota
	kindParams
)

type requestKey struct {
	peer   p2p.ID
	kind   requestKind
	height int64
}

// reply is what a waiter receives.
type reply struct {
	lb     *types.LightBlock
	params types.ConsensusParams
	err    error
}

// dispatcher is the one owner of pending light-block and params requests.
// A response is matched by peer, kind and height; anything else is
// unsolicited. Each waiter has a one-slot channel that receives exactly one
// reply, sent without blocking under the lock, so late and duplicate
// responses can never block or reach the wrong waiter. A peer may have
// several requests in flight (different heights). close and removePeer
// release their waiters at once.
type dispatcher struct {
	send    func(p2p.ID, byte, proto.Message) bool
	logger  log.Logger
	metrics *Metrics

	mtx     sync.Mutex
	pending map[requestKey]chan reply
	closed  bool
}

func newDispatcher(send func(p2p.ID, byte, proto.Message) bool, logger log.Logger, metrics *Metrics) *dispatcher {
	return &dispatcher{send: send, logger: logger, metrics: metrics, pending: make(map[requestKey]chan reply)}
}

// register adds a pending request. One request per key at a time: a second
// one for the same peer and height gets an error.
func (d *dispatcher) register(key requestKey) (chan reply, error) {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	if d.closed {
		return nil, ErrStopped
	}
	if _, busy := d.pending[key]; busy {
		return nil, fmt.Errorf("a request for height %d is already pending with peer %s", key.height, key.peer)
	}
	ch := make(chan reply, 1)
	d.pending[key] = ch
	return ch, nil
}

// forget removes key if it still maps to ch.
func (d *dispatcher) forget(key requestKey, ch chan reply) {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	if d.pending[key] == ch {
		delete(d.pending, key)
	}
}

// deliver completes the request for key, reporting whether there was one.
func (d *dispatcher) deliver(key requestKey, r reply) bool {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	ch, ok := d.pending[key]
	if !ok {
		return false
	}
	delete(d.pending, key)
	ch <- r // one slot, one sender: never blocks
	return true
}

func (d *dispatcher) request(ctx context.Context, key requestKey, ch byte, msg proto.Message) (reply, error) {
	wait, err := d.register(key)
	if err != nil {
		return reply{}, err
	}
	defer d.forget(key, wait)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRequestTimeout)
		defer cancel()
	}
	if !d.send(key.peer, ch, msg) {
		return reply{}, fmt.Errorf("%w: could not send to peer %s", ErrNoPeers, key.peer)
	}
	select {
	case r := <-wait:
		return r, r.err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return reply{}, fmt.Errorf("%w: peer %s, height %d", ErrTimeout, key.peer, key.height)
		}
		return reply{}, ctx.Err()
	}
}

// LightBlock asks peer for the light block at height and waits for the
// answer: nil (and no error) if the peer does not have it; ErrTimeout,
// ErrNoPeers (peer gone), ErrStopped or ctx.Err() otherwise.
func (d *dispatcher) LightBlock(ctx context.Context, peer p2p.ID, height int64) (*types.LightBlock, error) {
	r, err := d.request(ctx, requestKey{peer: peer, kind: kindLightBlock, height: height},
		LightBlockChannel, &ssproto.LightBlockRequest{Height: uint64(height)})
	return r.lb, err
}

// Params asks peer for the consensus params at height.
func (d *dispatcher) Params(ctx context.Context, peer p2p.ID, height int64) (types.ConsensusParams, error) {
	r, err := d.request(ctx, requestKey{peer: peer, kind: kindParams, height: height},
		ParamsChannel, &ssproto.ParamsRequest{Height: uint64(height)})
	return r.params, err
}

// handleLightBlockResponse matches a (validated) response. An empty
// response carries no height, so it answers the peer's lowest pending
// light-block request. A light block at a height
// nobody asked this peer for is unsolicited.
func (d *dispatcher) handleLightBlockResponse(peer p2p.ID, m *ssproto.LightBlockResponse) error {
	lb, err := ssproto.ToLightBlock(m)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPeerMisbehaved, err)
	}
	if lb == nil {
		key, ok := d.lowestPending(peer, kindLightBlock)
		if !ok || !d.deliver(key, reply{}) {
			return fmt.Errorf("%w: empty light block from %s", ErrUnsolicited, peer)
		}
		return nil
	}
	if !d.deliver(requestKey{peer: peer, kind: kindLightBlock, height: lb.Height}, reply{lb: lb}) {
		return fmt.Errorf("%w: light block %d from %s", ErrUnsolicited, lb.Height, peer)
	}
	return nil
}

// handleParamsResponse matches a (validated) params response.
func (d *dispatcher) handleParamsResponse(peer p2p.ID, m *ssproto.ParamsResponse) error {
	params, err := ssproto.ToConsensusParams(m)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPeerMisbehaved, err)
	}
	if !d.deliver(requestKey{peer: peer, kind: kindParams, height: int64(m.Height)}, reply{params: params}) {
		return fmt.Errorf("%w: params %d from %s", ErrUnsolicited, m.Height, peer)
	}
	return nil
}

func (d *dispatcher) lowestPending(peer p2p.ID, kind requestKind) (requestKey, bool) {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	var best requestKey
	found := false
	for key := range d.pending {
		if key.peer == peer && key.kind == kind && (!found || key.height < best.height) {
			best, found = key, true
		}
	}
	return best, found
}

// removePeer fails the peer's pending requests with ErrNoPeers.
func (d *dispatcher) removePeer(peer p2p.ID) {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	for key, ch := range d.pending {
		if key.peer == peer {
			delete(d.pending, key)
			ch <- reply{err: fmt.Errorf("%w: peer %s disconnected", ErrNoPeers, peer)}
		}
	}
}

// close fails every pending request with ErrStopped and refuses new ones.
func (d *dispatcher) close() {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	d.closed = true
	for key, ch := range d.pending {
		delete(d.pending, key)
		ch <- reply{err: ErrStopped}
	}
}
