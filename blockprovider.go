package statesync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"
)

// The light-block path, top down (each step calls only the next; faults
// found below come back up through the handler stateprovider_p2p.go gives
// lightprovider.go, withFaultHandler):
//   - syncer.go asks its StateProvider for a snapshot's app hash, commit
//     and state;
//   - stateprovider_p2p.go (or stateprovider_rpc.go) chooses the sources
//     and rebuilds the light client when they change;
//   - lightprovider.go runs CometBFT's light client over them and derives
//     the state; lightchecks.go cross-checks the witnesses and
//     paramsquorum.go the consensus params;
//   - this file is one peer as a light provider;
//   - dispatcher.go sends its request and matches the peer's response to
//     it, decoding the light block once (ssproto.ToLightBlock, with
//     ValidateBasic) on the way in from reactor.go's Deliver.

// BlockProvider is CometBFT's light/provider.Provider served by one peer
// over the light-block channel (0x62), through the Reactor's dispatcher.
// It can back a light.Client like an RPC provider.
//
// LightBlock fails with:
//   - provider.ErrLightBlockNotFound when the peer says it does not have
//     the height (or for height 0: a peer cannot be asked for its latest);
//   - provider.ErrNoResponse when the peer did not answer in time;
//   - provider.ErrBadLightBlock when the block is for another chain or
//     height, or invalid (the peer is also punished);
//   - ctx.Err() as is when ctx ends;
//   - an error wrapping ErrNoPeers (peer gone) or ErrStopped otherwise.
//
// Safe for concurrent use.
type BlockProvider struct {
	peer    p2p.ID
	chainID string
	timeout time.Duration
	d       *dispatcher
	punish  func(p2p.ID, error)
}

var _ provider.Provider = (*BlockProvider)(nil)

// BlockProvider returns a light provider fetching light blocks of chainID
// from peer, each request bounded by Config.LightBlockTimeout. The peer
// must advertise channel 0x62 (see PeerUp).
func (r *Reactor) BlockProvider(chainID string, peer p2p.ID) *BlockProvider {
	return &BlockProvider{peer: peer, chainID: chainID, timeout: r.cfg.lightBlockTimeout(), d: r.dispatcher,
		punish: r.punish}
}

// Peer returns the peer the provider fetches from.
func (p *BlockProvider) Peer() p2p.ID { return p.peer }

// String implements fmt.Stringer: the peer's ID.
func (p *BlockProvider) String() string { return string(p.peer) }

// ChainID implements provider.Provider.
func (p *BlockProvider) ChainID() string { return p.chainID }

// LightBlock implements provider.Provider.
func (p *BlockProvider) LightBlock(ctx context.Context, height int64) (*types.LightBlock, error) {
	if height <= 0 {
		return nil, provider.ErrLightBlockNotFound
	}
	r, err := p.d.wait(ctx, requestKey{peer: p.peer, kind: kindLightBlock, height: height}, p.timeout)
	lb := r.lb
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, ErrTimeout), errors.Is(err, errDuplicateRequest):
		return nil, provider.ErrNoResponse
	case err != nil:
		return nil, fmt.Errorf("light block %d from peer %s: %w", height, p.peer, err)
	case lb == nil:
		return nil, provider.ErrLightBlockNotFound
	}
	bad := func(reason error) (*types.LightBlock, error) {
		p.punish(p.peer, fmt.Errorf("%w: %w: light block %d: %w", ErrPeerMisbehaved, ErrVerifyFailed, height, reason))
		return nil, provider.ErrBadLightBlock{Reason: reason}
	}
	if lb.Height != height {
		return bad(fmt.Errorf("got height %d", lb.Height))
	}
	if lb.ChainID != p.chainID {
		return bad(fmt.Errorf("chain %q, want %q", lb.ChainID, p.chainID))
	}
	// The dispatcher decoded it once and ran ValidateBasic with its chain
	// ID, now known to be ours.
	return lb, nil
}

// ReportEvidence implements provider.Provider. Peers have no evidence
// channel here: evidence of an attack is logged by the light client and
// dropped.
func (p *BlockProvider) ReportEvidence(context.Context, types.Evidence) error { return nil }
