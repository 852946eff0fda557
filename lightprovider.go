package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	lightstore "github.com/cometbft/cometbft/light/store"
	lightdb "github.com/cometbft/cometbft/light/store/db"
	cmtstate "github.com/cometbft/cometbft/proto/tendermint/state"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"
)

// lightStateProvider is a StateProvider on CometBFT's light client, fed by a
// primary and witnesses (any provider.Provider: RPC servers or peers).
//
// light.Client is not safe for concurrent use: each call into it holds the
// one-slot semaphore sem, acquired under ctx, and runs under its own
// verifyTimeout; nothing else is done while holding it.
type lightStateProvider struct {
	sem           chan struct{} // holds lc for one call
	lc            *light.Client
	store         lightstore.Store
	trustPeriod   time.Duration
	provMtx       sync.Mutex
	providers     []*checkedProvider // primary first, then the witnesses (provMtx)
	onFault       func(provider.Provider, error)
	chainID       string
	software      string
	initialHeight int64
	params        ParamsSource
	timeout       time.Duration
	logger        log.Logger
}

var _ StateProvider = (*lightStateProvider)(nil)

// lightOption tunes a lightStateProvider.
type lightOption func(*lightStateProvider)

// withFaultHandler makes the provider report each source outvoted or
// caught contradicting verified data (the P2P provider punishes the peer).
func withFaultHandler(f func(provider.Provider, error)) lightOption {
	return func(p *lightStateProvider) { p.onFault = f }
}

// newLightStateProvider is NewLightClientStateProvider returning the
// concrete type.
func newLightStateProvider(ctx context.Context, chainID string, ver cmtstate.Version, initialHeight int64,
	primary provider.Provider, witnesses []provider.Provider, trust light.TrustOptions, params ParamsSource,
	verifyTimeout time.Duration, logger log.Logger, opts ...lightOption,
) (*lightStateProvider, error) {
	if err := checkTrustOptions(trust); err != nil {
		return nil, err
	}
	if primary == nil || len(witnesses) == 0 {
		return nil, fmt.Errorf("%w: the light client needs a primary and at least one witness, got %d sources",
			ErrNotEnoughPeers, len(witnesses)+btoi(primary != nil))
	}
	if params == nil {
		return nil, fmt.Errorf("%w: a consensus params source is required", ErrInvalidConfig)
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	if verifyTimeout <= 0 {
		verifyTimeout = DefaultVerifyTimeout
	}
	if initialHeight <= 0 {
		initialHeight = 1
	}
	software := ver.Software
	if software == "" {
		software = version.TMCoreSemVer
	}
	p := &lightStateProvider{
		sem:           make(chan struct{}, 1),
		store:         lightdb.New(dbm.NewMemDB(), ""),
		trustPeriod:   trust.Period,
		chainID:       chainID,
		software:      software,
		initialHeight: initialHeight,
		params:        params,
		timeout:       verifyTimeout,
		logger:        logger,
	}
	for _, prov := range append([]provider.Provider{primary}, witnesses...) {
		if prov == nil {
			return nil, fmt.Errorf("%w: nil light provider", ErrInvalidConfig)
		}
		p.providers = append(p.providers, newCheckedProvider(prov))
	}
	for _, o := range opts {
		o(p)
	}
	if err := p.start(ctx, trust); err != nil {
		return nil, err
	}

	root, err := p.lc.TrustedLightBlock(trust.Height)
	if err != nil {
		return nil, fmt.Errorf("%w: loading the trusted header at height %d: %w", ErrVerifyFailed, trust.Height, err)
	}
	now := time.Now()
	age := now.Sub(root.Time)
	if light.HeaderExpired(root.SignedHeader, trust.Period, now) {
		return nil, fmt.Errorf("%w: the trusted header at height %d (statesync.trust_height) is %v old, older "+
			"than the trust period %v (statesync.trust_period): configure a recent trust height and hash",
			ErrTrustExpired, trust.Height, age.Round(time.Second), trust.Period)
	}
	if left := trust.Period - age; left < trust.Period/10 {
		logger.Info("The state sync trust root expires soon", "trust_height", trust.Height,
			"age", age.Round(time.Second), "expires_in", left.Round(time.Second))
	}
	return p, nil
}

// start starts the light client at the trust root. When the providers
// disagree about the trusted header (one serves another header than the
// trust hash, or other proposer priorities), the majority rule settles it
// and the client is started again without the dissenters; without a
// majority the error says what to change.
func (p *lightStateProvider) start(ctx context.Context, trust light.TrustOptions) error {
	what := fmt.Sprintf("fetching the trusted header at height %d (statesync.trust_height)", trust.Height)
	for attempt := 0; ; attempt++ {
		since := time.Now()
		cctx, cancel := context.WithTimeout(ctx, p.timeout)
		primary, witnesses := p.lightProviders()
		lc, err := light.NewClient(cctx, p.chainID, trust, primary, witnesses, p.store, light.Logger(p.logger))
		cancel()
		if err == nil {
			p.lc = lc
			return nil
		}
		wrongHash := strings.Contains(err.Error(), "expected header's hash")
		if attempt == 0 && (wrongHash || isDivergence(err)) {
			retry, rerr := p.resolve(ctx, trust.Height, trust.Hash, err)
			if retry {
				continue
			}
			if !wrongHash {
				return fmt.Errorf("%s: %w: the sources disagree about the trusted header; remove the lying "+
					"source (statesync.rpc_servers) or add sources so that a majority of three or more can "+
					"settle it", what, rerr)
			}
		}
		if errors.Is(err, provider.ErrLightBlockNotFound) || errors.Is(err, provider.ErrHeightTooHigh) ||
			errors.Is(err, light.ErrNoWitnesses) {
			if above, ok := p.prunedBelow(ctx, trust.Height); ok {
				return fmt.Errorf("%w: %s: the sources have pruned it: height %d is below the lowest height "+
					"they store (height %d exists), and will never be available from them: choose a recent "+
					"statesync.trust_height and trust_hash: %w", ErrInvalidConfig, what, trust.Height, above, err)
			}
		}
		if wrongHash {
			return fmt.Errorf("%w: %s: the chain's header does not have the configured hash "+
				"(statesync.trust_hash %X), and no two sources serve one that has: check trust_height and "+
				"trust_hash, or the sources: %w", ErrVerifyFailed, what, trust.Hash, err)
		}
		return p.classify(ctx, since, what, err)
	}
}

// prunedBelow probes the sources for a block above height, which none of
// them had: finding one means height was pruned (not "not yet
// available"). It asks each source for its latest block (RPC servers
// answer height 0) and then for height+2^k, k = 0..40 (peers cannot be
// asked for their latest), within the verify timeout.
func (p *lightStateProvider) prunedBelow(ctx context.Context, height int64) (int64, bool) {
	pctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	for _, prov := range p.currentProviders() {
		if lb, err := prov.inner.LightBlock(pctx, 0); err == nil && lb != nil && lb.Height > height {
			return lb.Height, true
		}
		for k := 0; k <= 40 && pctx.Err() == nil; k++ {
			h := height + int64(1)<<k
			lb, err := prov.inner.LightBlock(pctx, h)
			if err == nil && lb != nil {
				return h, true
			}
			if errors.Is(err, provider.ErrHeightTooHigh) {
				break
			}
		}
	}
	return 0, false
}

// currentProviders returns the providers in use, primary first.
func (p *lightStateProvider) currentProviders() []*checkedProvider {
	p.provMtx.Lock()
	defer p.provMtx.Unlock()
	return slices.Clone(p.providers)
}

// exclude reports the providers in bad (onFault) and, if at least two
// others remain, leaves them out from now on, rebuilding the light client
// without them. It reports whether they were left out.
func (p *lightStateProvider) exclude(ctx context.Context, bad []*checkedProvider, reason error) bool {
	for _, prov := range bad {
		p.logger.Info("Leaving out a light provider that disagrees with the others", "provider", prov,
			"reason", reason)
		if p.onFault != nil {
			p.onFault(prov.inner, reason)
		}
	}
	p.provMtx.Lock()
	kept := slices.DeleteFunc(slices.Clone(p.providers), func(c *checkedProvider) bool {
		return slices.Contains(bad, c)
	})
	if len(kept) < 2 {
		p.provMtx.Unlock()
		return false
	}
	p.providers = kept
	p.provMtx.Unlock()
	if p.lc == nil {
		return true // not started yet: start uses the providers left
	}
	_ = p.withClient(ctx, func(*light.Client) error {
		p.rebuildClient()
		return nil
	})
	return true
}

// lightProviders returns the providers as the light client takes them.
func (p *lightStateProvider) lightProviders() (provider.Provider, []provider.Provider) {
	provs := p.currentProviders()
	witnesses := make([]provider.Provider, 0, len(provs)-1)
	for _, w := range provs[1:] {
		witnesses = append(witnesses, w)
	}
	return provs[0], witnesses
}

// withClient runs f with exclusive use of the light client; waiting for it
// ends with ctx.
func (p *lightStateProvider) withClient(ctx context.Context, f func(lc *light.Client) error) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the light client: %w", ctx.Err())
	}
	defer func() { <-p.sem }()
	return f(p.lc)
}

// verify verifies the light block at height with the light client, under
// the verify timeout. The result may be shared with the light client or a
// provider: callers copy before modifying.
func (p *lightStateProvider) verify(ctx context.Context, height int64) (*types.LightBlock, error) {
	what := fmt.Sprintf("verifying the light block at height %d", height)
	for attempt := 0; ; attempt++ {
		since := time.Now()
		lb, err := p.verifyOnce(ctx, height)
		if err != nil && attempt == 0 && isDivergence(err) && ctx.Err() == nil {
			// The providers disagree: a majority may settle it.
			retry, rerr := p.resolve(ctx, height, nil, err)
			if retry {
				continue
			}
			return nil, fmt.Errorf("%s: %w", what, rerr)
		}
		if err != nil {
			return nil, p.classify(ctx, since, what, err)
		}
		if lb == nil || lb.SignedHeader == nil || lb.ValidatorSet == nil || lb.Height != height {
			return nil, fmt.Errorf("%w: %s: the light client returned an incomplete light block", ErrVerifyFailed,
				what)
		}
		return lb, nil
	}
}

// verifyOnce is one verification by the light client, under the verify
// timeout.
func (p *lightStateProvider) verifyOnce(ctx context.Context, height int64) (*types.LightBlock, error) {
	vctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var lb *types.LightBlock
	err := p.withClient(vctx, func(lc *light.Client) error {
		var err error
		lb, err = lc.VerifyLightBlockAtHeight(vctx, height, time.Now())
		if errors.Is(err, light.ErrNoWitnesses) {
			p.rebuildClient()
		}
		return err
	})
	return lb, err
}

// rebuildClient gives the light client back every provider, keeping its
// verified headers, after it dropped all its witnesses (it drops a
// provider for one bad or unexpected answer, and then cannot verify
// anything). Dropped providers that misbehave are found out again by the
// same checks. Called with the light client held.
func (p *lightStateProvider) rebuildClient() {
	primary, witnesses := p.lightProviders()
	lc, err := light.NewClientFromTrustedStore(p.chainID, p.trustPeriod, primary, witnesses, p.store,
		light.Logger(p.logger))
	if err != nil {
		p.logger.Error("Could not rebuild the light client", "err", err)
		return
	}
	p.logger.Info("Light client lost all its witnesses; rebuilt it with every provider")
	p.lc = lc
}

// failures lists the providers' own errors recorded since t, for messages:
// the light client reduces them to provider.ErrNoResponse.
func (p *lightStateProvider) failures(since time.Time) string {
	var parts []string
	for _, prov := range p.currentProviders() {
		if f := prov.lastFailure.Load(); f != nil && !f.at.Before(since) {
			parts = append(parts, fmt.Sprintf("%s: %v", prov, f.err))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// checkHeight converts a snapshot height, refusing heights the chain
// cannot have.
func (p *lightStateProvider) checkHeight(height uint64) (int64, error) {
	if height == 0 || height > math.MaxInt64-2 {
		return 0, fmt.Errorf("%w: invalid height %d", ErrVerifyFailed, height)
	}
	if int64(height) < p.initialHeight {
		return 0, fmt.Errorf("%w: height %d is below the chain's initial height %d", ErrVerifyFailed,
			height, p.initialHeight)
	}
	return int64(height), nil
}

// AppHash implements StateProvider.
func (p *lightStateProvider) AppHash(ctx context.Context, height uint64) ([]byte, error) {
	h, err := p.checkHeight(height)
	if err != nil {
		return nil, err
	}
	current, err := p.verify(ctx, h+1)
	if err != nil {
		return nil, err
	}
	// State needs height+2 (the next validator set, and the commit that
	// makes height+1 final): check it exists now, so that a snapshot at the
	// tip is deferred here rather than failing after its restore.
	if _, err := p.verify(ctx, h+2); err != nil {
		return nil, err
	}
	return bytes.Clone(current.AppHash), nil
}

// Commit implements StateProvider.
func (p *lightStateProvider) Commit(ctx context.Context, height uint64) (*types.Commit, error) {
	h, err := p.checkHeight(height)
	if err != nil {
		return nil, err
	}
	lb, err := p.verify(ctx, h)
	if err != nil {
		return nil, err
	}
	return copyCommit(lb.Commit)
}

// copyCommit returns a deep copy of c (types.Commit.Clone shares the
// signatures' bytes), so callers never alias what the light client or a
// provider keeps.
func copyCommit(c *types.Commit) (*types.Commit, error) {
	bz, err := c.ToProto().Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: encoding the commit of height %d: %w", ErrVerifyFailed, c.Height, err)
	}
	var pb cmtproto.Commit
	if err := pb.Unmarshal(bz); err != nil {
		return nil, fmt.Errorf("%w: decoding the commit of height %d: %w", ErrVerifyFailed, c.Height, err)
	}
	out, err := types.CommitFromProto(&pb)
	if err != nil {
		return nil, fmt.Errorf("%w: the commit of height %d: %w", ErrVerifyFailed, c.Height, err)
	}
	return out, nil
}

// copyBlockID returns a copy of id that shares no bytes with it.
func copyBlockID(id types.BlockID) types.BlockID {
	id.Hash = bytes.Clone(id.Hash)
	id.PartSetHeader.Hash = bytes.Clone(id.PartSetHeader.Hash)
	return id
}

// State implements StateProvider. Heights map onto the state as CometBFT's
// own provider maps them: height is the last block, height+1 the current
// one (the first block this node will execute), height+2 the next.
func (p *lightStateProvider) State(ctx context.Context, height uint64) (sm.State, error) {
	h, err := p.checkHeight(height)
	if err != nil {
		return sm.State{}, err
	}
	var blocks [3]*types.LightBlock
	for i := range blocks {
		if blocks[i], err = p.verify(ctx, h+int64(i)); err != nil {
			return sm.State{}, err
		}
	}
	last, current, next := blocks[0], blocks[1], blocks[2]
	if err := checkLinked(last, current); err != nil {
		return sm.State{}, err
	}
	if err := checkLinked(current, next); err != nil {
		return sm.State{}, err
	}
	if current.Version.Block != version.BlockProtocol {
		return sm.State{}, fmt.Errorf("%w: the chain runs block protocol %d at height %d, this node %d",
			ErrVerifyFailed, current.Version.Block, current.Height, version.BlockProtocol)
	}

	// Validator sets: membership and voting power are bound by the verified
	// headers' validator hashes. Proposer priorities are not (the gap
	// behind GHSA-g5xx-c4hv-9ccc), so they are taken as served and
	// cross-checked between providers, never recomputed from zero.
	if err := p.crossCheckPriorities(ctx, blocks[:]); err != nil {
		return sm.State{}, err
	}
	var sets [3]*types.ValidatorSet
	for i, lb := range blocks {
		if sets[i], err = derivedValidatorSet(lb); err != nil {
			return sm.State{}, err
		}
	}

	params, err := p.consensusParams(ctx, current)
	if err != nil {
		return sm.State{}, err
	}

	return sm.State{
		Version: cmtstate.Version{
			Consensus: current.Version,
			Software:  p.software,
		},
		ChainID:                          p.chainID,
		InitialHeight:                    p.initialHeight,
		LastBlockHeight:                  last.Height,
		LastBlockID:                      copyBlockID(current.LastBlockID),
		LastBlockTime:                    last.Time,
		NextValidators:                   sets[2],
		Validators:                       sets[1],
		LastValidators:                   sets[0],
		LastHeightValidatorsChanged:      next.Height,
		ConsensusParams:                  params,
		LastHeightConsensusParamsChanged: current.Height,
		LastResultsHash:                  bytes.Clone(current.LastResultsHash),
		AppHash:                          bytes.Clone(current.AppHash),
	}, nil
}
