package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	lightdb "github.com/cometbft/cometbft/light/store/db"
	cmtstate "github.com/cometbft/cometbft/proto/tendermint/state"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"
)

// StateProvider gives Sync the verified data it trusts a snapshot with.
// Implementations must be safe for concurrent use and honour ctx.
//
// Errors: one wrapping ErrHeightNotAvailable means the height (or
// height+1, height+2) does not exist yet, so the snapshot is tried again
// later; one wrapping ErrProviderTransient (or context.DeadlineExceeded from
// an internal timeout) says nothing about the snapshot, which is kept; any
// other error rejects the snapshot.
type StateProvider interface {
	// AppHash returns the app hash after height was committed: the AppHash
	// of the verified header at height+1. It also verifies height+2.
	AppHash(ctx context.Context, height uint64) ([]byte, error)
	// Commit returns the verified commit of height.
	Commit(ctx context.Context, height uint64) (*types.Commit, error)
	// State returns the state after height was committed, every field
	// derived from verified light blocks at height, height+1 and height+2
	// and from consensus params whose hash the header at height+1 commits
	// to.
	State(ctx context.Context, height uint64) (sm.State, error)
}

// ParamsSource fetches the consensus params in force at a height. The light
// state provider checks them against the verified header, so a source need
// not be trusted.
type ParamsSource interface {
	ConsensusParams(ctx context.Context, height int64) (types.ConsensusParams, error)
}

// lightStateProvider is a StateProvider on CometBFT's light client. The
// client is not safe for concurrent use: every call holds mtx, and every
// verification runs under its own timeout.
type lightStateProvider struct {
	mtx           sync.Mutex
	lc            *light.Client
	version       cmtstate.Version
	initialHeight int64
	params        ParamsSource
	timeout       time.Duration
}

// NewLightClientStateProvider returns a StateProvider on CometBFT's light
// client with any light providers: primary and at least one witness (else
// ErrNotEnoughPeers), rooted at trust (invalid options wrap
// ErrInvalidConfig; a root older than the trust period wraps
// ErrTrustExpired). Consensus params come from params and are accepted only
// when their hash matches the verified header. Every verification is
// bounded by verifyTimeout.
func NewLightClientStateProvider(ctx context.Context, chainID string, ver cmtstate.Version, initialHeight int64,
	primary provider.Provider, witnesses []provider.Provider, trust light.TrustOptions, params ParamsSource,
	verifyTimeout time.Duration, logger log.Logger,
) (StateProvider, error) {
	return newLightStateProvider(ctx, chainID, ver, initialHeight, primary, witnesses, trust, params, verifyTimeout, logger)
}

// newLightStateProvider builds a light client with primary and witnesses
// (at least one) from trust, and wraps it.
func newLightStateProvider(ctx context.Context, chainID string, ver cmtstate.Version, initialHeight int64,
	primary provider.Provider, witnesses []provider.Provider, trust light.TrustOptions, params ParamsSource,
	timeout time.Duration, logger log.Logger,
) (*lightStateProvider, error) {
	if err := trust.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("%w: trust options: %w", ErrInvalidConfig, err)
	}
	if len(witnesses) == 0 {
		return nil, fmt.Errorf("%w: the light client needs a primary and at least one witness", ErrNotEnoughPeers)
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	if initialHeight <= 0 {
		initialHeight = 1
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lc, err := light.NewClient(cctx, chainID, trust, primary, witnesses,
		lightdb.New(dbm.NewMemDB(), ""), light.Logger(logger), light.MaxRetryAttempts(3))
	if err != nil {
		var expired light.ErrOldHeaderExpired
		if errors.As(err, &expired) || isExpiredTrust(err) {
			return nil, fmt.Errorf("%w: trust height %d is older than the trust period %v: choose a recent trusted height and hash: %w",
				ErrTrustExpired, trust.Height, trust.Period, err)
		}
		return nil, classifyLightErr(fmt.Errorf("starting the light client at trust height %d: %w", trust.Height, err))
	}
	// The light client checks the trust period only when verifying; refuse
	// an expired root now, with an error that says what to do.
	if root, err := lc.TrustedLightBlock(trust.Height); err == nil {
		if expires := root.Time.Add(trust.Period); !time.Now().Before(expires) {
			return nil, fmt.Errorf("%w: trust height %d (time %v) is older than the trust period %v: "+
				"choose a recent trusted height and hash", ErrTrustExpired, trust.Height, root.Time, trust.Period)
		}
	}
	return &lightStateProvider{
		lc: lc, version: ver, initialHeight: initialHeight, params: params, timeout: timeout,
	}, nil
}

func isExpiredTrust(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("expired"))
}

// classifyLightErr wraps light-client errors in our vocabulary.
func classifyLightErr(err error) error {
	var netErr net.Error
	var expired light.ErrOldHeaderExpired
	switch {
	case err == nil:
		return nil
	case errors.As(err, &expired):
		return fmt.Errorf("%w: %w", ErrTrustExpired, err)
	case errors.Is(err, provider.ErrHeightTooHigh), errors.Is(err, provider.ErrLightBlockNotFound):
		return fmt.Errorf("%w: %w", ErrHeightNotAvailable, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, provider.ErrNoResponse),
		errors.As(err, &netErr), errors.Is(err, light.ErrNoWitnesses),
		errors.Is(err, ErrTimeout), errors.Is(err, ErrNoPeers), errors.Is(err, light.ErrFailedHeaderCrossReferencing):
		return fmt.Errorf("%w: %w", ErrProviderTransient, err)
	default:
		return err
	}
}

// verify verifies the light block at height, under the timeout.
func (p *lightStateProvider) verify(ctx context.Context, height int64) (*types.LightBlock, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	lb, err := p.lc.VerifyLightBlockAtHeight(ctx, height, time.Now())
	if err != nil {
		return nil, classifyLightErr(fmt.Errorf("verifying height %d: %w", height, err))
	}
	return lb, nil
}

// AppHash implements StateProvider.
func (p *lightStateProvider) AppHash(ctx context.Context, height uint64) ([]byte, error) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	next, err := p.verify(ctx, int64(height+1))
	if err != nil {
		return nil, err
	}
	// height+2 must exist too: its commit makes height+1's header final,
	// and State needs its validator set.
	if _, err := p.verify(ctx, int64(height+2)); err != nil {
		return nil, err
	}
	return next.AppHash, nil
}

// Commit implements StateProvider.
func (p *lightStateProvider) Commit(ctx context.Context, height uint64) (*types.Commit, error) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	lb, err := p.verify(ctx, int64(height))
	if err != nil {
		return nil, err
	}
	return lb.Commit, nil
}

// State implements StateProvider.
func (p *lightStateProvider) State(ctx context.Context, height uint64) (sm.State, error) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	last, err := p.verify(ctx, int64(height))
	if err != nil {
		return sm.State{}, err
	}
	current, err := p.verify(ctx, int64(height+1))
	if err != nil {
		return sm.State{}, err
	}
	next, err := p.verify(ctx, int64(height+2))
	if err != nil {
		return sm.State{}, err
	}
	for _, lb := range []*types.LightBlock{last, current, next} {
		if err := checkPriorities(lb.ValidatorSet); err != nil {
			return sm.State{}, fmt.Errorf("%w: validator set at height %d: %w", ErrVerifyFailed, lb.Height, err)
		}
	}

	pctx, cancel := context.WithTimeout(ctx, p.timeout)
	params, err := p.params.ConsensusParams(pctx, current.Height)
	cancel()
	if err != nil {
		return sm.State{}, classifyLightErr(fmt.Errorf("fetching consensus params at height %d: %w", current.Height, err))
	}
	if got, want := params.Hash(), current.ConsensusHash; !bytes.Equal(got, want) {
		return sm.State{}, fmt.Errorf("%w: consensus params hash %X does not match header %d's ConsensusHash %X",
			ErrVerifyFailed, got, current.Height, want)
	}

	return sm.State{
		Version: cmtstate.Version{
			Consensus: current.Version,
			Software:  version.TMCoreSemVer,
		},
		ChainID:                          p.lc.ChainID(),
		InitialHeight:                    p.initialHeight,
		LastBlockHeight:                  last.Height,
		LastBlockID:                      last.Commit.BlockID,
		LastBlockTime:                    last.Time,
		NextValidators:                   next.ValidatorSet.Copy(),
		Validators:                       current.ValidatorSet.Copy(),
		LastValidators:                   last.ValidatorSet.Copy(),
		LastHeightValidatorsChanged:      next.Height,
		ConsensusParams:                  params,
		LastHeightConsensusParamsChanged: current.Height,
		LastResultsHash:                  current.LastResultsHash,
		AppHash:                          current.AppHash,
	}, nil
}

// checkPriorities bounds the proposer priorities of a validator set. The
// validators hash a header commits to does not cover priorities, so a
// provider could feed arbitrary ones (GHSA-g5xx-c4hv-9ccc); CometBFT keeps
// every priority within PriorityWindowSizeFactor times the total voting
// power and their sum centred on zero, so anything outside that is forged.
func checkPriorities(vals *types.ValidatorSet) error {
	if vals == nil || vals.IsNilOrEmpty() {
		return errors.New("empty validator set")
	}
	total := vals.TotalVotingPower()
	window := types.PriorityWindowSizeFactor * total
	var sum int64
	for _, v := range vals.Validators {
		if v.ProposerPriority > window || v.ProposerPriority < -window {
			return fmt.Errorf("proposer priority %d of %X outside [-%d, %d]", v.ProposerPriority, v.Address, window, window)
		}
		sum += v.ProposerPriority
	}
	if n := int64(len(vals.Validators)); sum/n > 1 || sum/n < -1 {
		return fmt.Errorf("proposer priorities not centred (average %d)", sum/n)
	}
	return nil
}
