package statesync

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/p2p"
	cmtstate "github.com/cometbft/cometbft/proto/tendermint/state"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
)

const (
	// maxP2PProviders caps the light client's sources drawn from peers: a
	// primary and up to four witnesses. More witnesses cost every
	// verification a request each and add little safety.
	maxP2PProviders = 5
	// maxP2PBuilds bounds the attempts at starting a light client on
	// different peers (a primary that lies about the trusted header, or
	// does not answer, is put last the next time).
	maxP2PBuilds = 3
	// maxP2PCallAttempts bounds how often one StateProvider call is retried
	// on a rebuilt light client after a transient failure.
	maxP2PCallAttempts = 2
)

// p2pStateProvider verifies snapshots with CometBFT's light client over
// BlockProviders of connected peers that speak channels 0x62 and 0x63: a
// primary and up to maxP2PProviders-1 witnesses, distinct peers drawn at
// random. It rebuilds the light client on fresh peers when one it uses
// disconnects, when more peers become available while it has fewer than
// the cap, and after a transient failure. Consensus params come from
// several peers at once and are accepted only if their hash is the one the
// verified header commits to (a peer sending others is punished), at least
// two peers sent them, and every peer that answered agrees (the hash does
// not cover every field; see paramsquorum.go). A peer outvoted on proposer
// priorities, or contradicting a verified header, is punished and left out
// (see lightchecks.go).
//
// Calls are serialised (the light client is not safe for concurrent use);
// waiting for a turn ends with ctx.
type p2pStateProvider struct {
	r             *Reactor
	chainID       string
	version       cmtstate.Version
	initialHeight int64
	trust         light.TrustOptions
	verifyTimeout time.Duration
	logger        log.Logger

	sem   chan struct{} // held by the running call
	inner *lightStateProvider
	used  []p2p.ID // the peers inner was built on, primary first
}

var _ StateProvider = (*p2pStateProvider)(nil)

// newP2PStateProvider returns a StateProvider fetching light blocks and
// consensus params from the Reactor's peers. It waits (up to
// Config.DiscoveryTimeout, and while ctx lasts) for two distinct peers
// advertising channels 0x62 and 0x63, then starts a light client rooted at
// trust. Errors: fewer than two such peers wraps ErrNotEnoughPeers (and
// says how many there were); invalid trust options wrap ErrInvalidConfig;
// an expired root wraps ErrTrustExpired; a stopped Reactor ErrStopped.
func newP2PStateProvider(ctx context.Context, r *Reactor, trust light.TrustOptions) (StateProvider, error) {
	g := r.deps.Genesis
	if g.ChainID == "" {
		return nil, fmt.Errorf("%w: Deps.Genesis is required to verify snapshots over P2P", ErrInvalidConfig)
	}
	if err := checkTrustOptions(trust); err != nil {
		return nil, err
	}
	p := &p2pStateProvider{
		r:             r,
		chainID:       g.ChainID,
		version:       g.Version,
		initialHeight: g.InitialHeight,
		trust:         trust,
		verifyTimeout: r.cfg.VerifyTimeout,
		logger:        r.logger.With("module", "light", "source", "p2p"),
		sem:           make(chan struct{}, 1),
	}
	wctx, cancel := context.WithTimeout(ctx, r.cfg.DiscoveryTimeout)
	defer cancel()
	if err := p.build(wctx, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// waitForPeers returns the peers speaking 0x62 and 0x63 once there are at
// least two. It fails fast (Config.LightPeersTimeout after the first peer
// connected) when connected peers show that too few serve them: stock
// CometBFT nodes do not, and waiting for the whole discovery bound would
// only delay the same error.
func (p *p2pStateProvider) waitForPeers(ctx context.Context) ([]p2p.ID, error) {
	life := p.r.lifetime()
	if life == nil {
		return nil, fmt.Errorf("%w: the Reactor is not running", ErrStopped)
	}
	var (
		fast   *time.Timer
		fastC  <-chan time.Time
		bound  = p.r.cfg.lightPeersTimeout()
		notice = func(connected, capable int, why string) error {
			return fmt.Errorf("%w: verifying snapshots over P2P (statesync.use_p2p) needs at least 2 connected "+
				"peers serving light blocks and consensus params (channels 0x62, 0x63); %d of %d connected "+
				"peers serve them %s (stock CometBFT nodes do not): connect to peers running this state "+
				"sync, or verify with statesync.rpc_servers instead", ErrNotEnoughPeers, capable, connected, why)
		}
	)
	defer func() {
		if fast != nil {
			fast.Stop()
		}
	}()
	for {
		changed := p.r.peers.changed()
		peers := p.r.peers.capable(LightBlockChannel, ParamsChannel)
		if len(peers) >= 2 {
			return peers, nil
		}
		if fast == nil && p.r.peers.len() > 0 {
			fast = time.NewTimer(bound)
			fastC = fast.C
		}
		select {
		case <-changed:
		case <-fastC:
			return nil, notice(p.r.peers.len(), len(peers), fmt.Sprintf("after %v (statesync.light_peers_timeout)",
				bound))
		case <-life.Done():
			return nil, ErrStopped
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", notice(p.r.peers.len(), len(peers), "after waiting"), context.Cause(ctx))
		}
	}
}

// build starts a light client on peers, avoiding those in avoid as primary.
func (p *p2pStateProvider) build(ctx context.Context, avoid map[p2p.ID]bool) error {
	if avoid == nil {
		avoid = make(map[p2p.ID]bool)
	}
	var err error
	for attempt := 1; attempt <= maxP2PBuilds; attempt++ {
		var peers []p2p.ID
		if peers, err = p.waitForPeers(ctx); err != nil {
			return err
		}
		chosen := chooseProviders(peers, avoid, maxP2PProviders)
		providers := make([]provider.Provider, len(chosen))
		for i, id := range chosen {
			providers[i] = p.r.BlockProvider(p.chainID, id)
		}
		var inner *lightStateProvider
		inner, err = newLightStateProvider(ctx, p.chainID, p.version, p.initialHeight, providers[0], providers[1:],
			p.trust, &p2pParams{p: p}, p.verifyTimeout, p.logger, withFaultHandler(p.punish))
		if err == nil {
			p.inner, p.used = inner, chosen
			p.logger.Info("Light client started on peers", "primary", chosen[0], "witnesses", len(chosen)-1)
			return nil
		}
		if errors.Is(err, ErrTrustExpired) || errors.Is(err, ErrInvalidConfig) || ctx.Err() != nil {
			return err
		}
		p.logger.Info("Could not start the light client on these peers; trying others", "primary", chosen[0],
			"attempt", attempt, "err", err)
		avoid[chosen[0]] = true
	}
	return err
}

// punish disconnects the peer behind a light provider that was outvoted
// or contradicted verified data.
func (p *p2pStateProvider) punish(prov provider.Provider, reason error) {
	if bp, ok := prov.(*BlockProvider); ok {
		p.r.punish(bp.peer, fmt.Errorf("%w: %w", ErrPeerMisbehaved, reason))
	}
}

// chooseProviders picks up to n distinct peers in random order, those in
// avoid last.
func chooseProviders(peers []p2p.ID, avoid map[p2p.ID]bool, n int) []p2p.ID {
	out := make([]p2p.ID, 0, len(peers))
	var last []p2p.ID
	for _, i := range rand.Perm(len(peers)) {
		if avoid[peers[i]] {
			last = append(last, peers[i])
		} else {
			out = append(out, peers[i])
		}
	}
	out = append(out, last...)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// stale reports whether the light client should be rebuilt on other peers.
func (p *p2pStateProvider) stale() bool {
	if p.inner == nil || len(p.used) == 0 || !p.r.peers.has(p.used[0], LightBlockChannel) {
		return true
	}
	connected := 0
	used := make(map[p2p.ID]bool, len(p.used))
	for _, id := range p.used {
		used[id] = true
		if p.r.peers.has(id, LightBlockChannel) {
			connected++
		}
	}
	if connected < 2 {
		return true
	}
	if len(p.used) < maxP2PProviders {
		for _, id := range p.r.peers.capable(LightBlockChannel, ParamsChannel) {
			if !used[id] {
				return true // a new peer can add a witness
			}
		}
	}
	return false
}

// do runs f on a current light client, rebuilding it when stale or after a
// transient failure (bounded).
func (p *p2pStateProvider) do(ctx context.Context, f func(*lightStateProvider) error) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the P2P state provider: %w", ErrProviderTransient, ctx.Err())
	}
	defer func() { <-p.sem }()
	var err error
	for attempt := 1; attempt <= maxP2PCallAttempts; attempt++ {
		if p.stale() {
			var avoid map[p2p.ID]bool
			if len(p.used) > 0 && attempt > 1 {
				avoid = map[p2p.ID]bool{p.used[0]: true}
			}
			bctx, cancel := context.WithTimeout(ctx, p.verifyTimeout)
			err = p.build(bctx, avoid)
			cancel()
			if err != nil {
				p.inner = nil
				if errors.Is(err, ErrTrustExpired) || errors.Is(err, ErrProviderTransient) ||
					errors.Is(err, ErrStopped) {
					return err
				}
				// Too few peers for now, or none of them would start a
				// client: that says nothing about the snapshot.
				return fmt.Errorf("%w: %w", ErrProviderTransient, err)
			}
		}
		err = f(p.inner)
		if err == nil || ctx.Err() != nil || !errors.Is(err, ErrProviderTransient) {
			return err
		}
		p.inner = nil // try once more on freshly chosen peers
	}
	return err
}

// AppHash implements StateProvider.
func (p *p2pStateProvider) AppHash(ctx context.Context, height uint64) ([]byte, error) {
	var out []byte
	err := p.do(ctx, func(sp *lightStateProvider) error {
		var err error
		out, err = sp.AppHash(ctx, height)
		return err
	})
	return out, err
}

// Commit implements StateProvider.
func (p *p2pStateProvider) Commit(ctx context.Context, height uint64) (*types.Commit, error) {
	var out *types.Commit
	err := p.do(ctx, func(sp *lightStateProvider) error {
		var err error
		out, err = sp.Commit(ctx, height)
		return err
	})
	return out, err
}

// State implements StateProvider.
func (p *p2pStateProvider) State(ctx context.Context, height uint64) (sm.State, error) {
	var out sm.State
	err := p.do(ctx, func(sp *lightStateProvider) error {
		var err error
		out, err = sp.State(ctx, height)
		return err
	})
	return out, err
}

// p2pParams is the ParamsSource of a p2pStateProvider's light client. It
// is called by the light client's State, within p2pStateProvider.do.
type p2pParams struct {
	p *p2pStateProvider
}

// ConsensusParams implements ParamsSource: params at height from the
// peers, checked against the header at height that the light client has
// verified (the light state provider checks them again).
func (s *p2pParams) ConsensusParams(ctx context.Context, height int64) (types.ConsensusParams, error) {
	var want []byte
	var prefer []p2p.ID
	if inner := s.p.inner; inner != nil {
		if lb, err := inner.store.LightBlock(height); err == nil && lb != nil {
			want = lb.ConsensusHash
		}
		prefer = s.p.used
	}
	return s.p.r.fetchParams(ctx, height, want, prefer)
}
