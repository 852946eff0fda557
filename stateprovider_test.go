package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	rpcserver "github.com/cometbft/cometbft/rpc/jsonrpc/server"
	rpctypes "github.com/cometbft/cometbft/rpc/jsonrpc/types"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
)

func newChain(t testing.TB, opts chaingen.Options) *chaingen.Chain {
	t.Helper()
	c, err := chaingen.New(opts)
	require.NoError(t, err)
	return c
}

// recentChain is a chain whose blocks are an hour old, so trust roots on it
// are within a day's trust period.
func recentChain(t testing.TB, opts chaingen.Options) *chaingen.Chain {
	opts.StartTime = time.Now().Add(-time.Hour)
	return newChain(t, opts)
}

func newLightProvider(t testing.TB, c *chaingen.Chain, primary, witness provider.Provider, params ParamsSource,
	trustHeight int64, timeout time.Duration,
) (*lightStateProvider, error) {
	t.Helper()
	return newLightStateProvider(context.Background(), c.ChainID(), sm.InitStateVersion, c.InitialHeight(),
		primary, []provider.Provider{witness}, c.TrustOptions(trustHeight, 24*time.Hour), params, timeout,
		log.NewNopLogger())
}

// requireSameSet checks a validator set against the chain's, priorities and
// proposer included.
func requireSameSet(t *testing.T, want, got *types.ValidatorSet, what string) {
	t.Helper()
	require.NoError(t, got.ValidateBasic(), what)
	require.Equal(t, want.Hash(), got.Hash(), what)
	require.Equal(t, want.ProposerPriorityHash(), got.ProposerPriorityHash(), "%s: proposer priorities", what)
	require.Equal(t, want.GetProposer().Address, got.GetProposer().Address, "%s: proposer", what)
	require.Equal(t, want.TotalVotingPower(), got.TotalVotingPower(), what)
}

// requireChainState checks every field of a provider's State(h) against
// the chain's.
func requireChainState(t *testing.T, c *chaingen.Chain, h int64, got sm.State) {
	t.Helper()
	want := c.State(h)
	what := fmt.Sprintf("state at height %d", h)
	require.Equal(t, c.ChainID(), got.ChainID, what)
	require.Equal(t, c.InitialHeight(), got.InitialHeight, what)
	require.Equal(t, c.Block(h+1).Version, got.Version.Consensus, what)
	require.Equal(t, version.TMCoreSemVer, got.Version.Software, what)
	require.Equal(t, h, got.LastBlockHeight, what)
	require.Equal(t, want.LastBlockID, got.LastBlockID, what)
	require.True(t, want.LastBlockTime.Equal(got.LastBlockTime), what)
	requireSameSet(t, c.ValidatorSet(h), got.LastValidators, what+": last validators")
	requireSameSet(t, c.ValidatorSet(h+1), got.Validators, what+": validators")
	requireSameSet(t, c.ValidatorSet(h+2), got.NextValidators, what+": next validators")
	// As CometBFT's own provider: the set at h+2 is stored in full by
	// Bootstrap, so later heights may point at it.
	require.Equal(t, h+2, got.LastHeightValidatorsChanged, what)
	require.Equal(t, c.Params().Hash(), got.ConsensusParams.Hash(), what)
	require.Equal(t, h+1, got.LastHeightConsensusParamsChanged, what)
	require.Equal(t, want.LastResultsHash, got.LastResultsHash, what)
	require.Equal(t, want.AppHash, got.AppHash, what)
	require.Equal(t, c.Block(h+1).AppHash.Bytes(), got.AppHash, what)
}

// TestLightStateProviderState checks every State field against the chain,
// across validator-set changes, with an initial height above 1.
func TestLightStateProviderState(t *testing.T) {
	c := recentChain(t, chaingen.Options{InitialHeight: 5, Height: 40,
		ValSetChanges: map[int64]int{12: 6, 21: 3, 23: 5, 30: 4}})
	p := c.Provider()
	sp, err := newLightProvider(t, c, p, c.Provider(), p, 5, 5*time.Second)
	require.NoError(t, err)
	ctx := context.Background()
	for _, h := range []int64{5, 10, 11, 12, 19, 20, 21, 22, 23, 30, 38} {
		appHash, err := sp.AppHash(ctx, uint64(h))
		require.NoError(t, err, "height %d", h)
		require.Equal(t, c.Block(h+1).AppHash.Bytes(), appHash)

		commit, err := sp.Commit(ctx, uint64(h))
		require.NoError(t, err)
		require.Equal(t, c.Commit(h).Hash(), commit.Hash())

		state, err := sp.State(ctx, uint64(h))
		require.NoError(t, err, "height %d", h)
		requireChainState(t, c, h, state)

		// The caller owns what it gets: changing it changes nothing else.
		wantSig := bytes.Clone(c.Commit(h).Signatures[0].Signature)
		wantPriorities := c.ValidatorSet(h + 1).ProposerPriorityHash()
		wantAppHash := bytes.Clone(c.Block(h + 1).AppHash)
		state.Validators.Validators[0].ProposerPriority += 1000
		state.LastBlockID.Hash[0] ^= 0xff
		commit.Signatures[0].Signature[0] ^= 0xff
		appHash[0] ^= 0xff
		require.Equal(t, wantSig, c.Commit(h).Signatures[0].Signature)
		require.Equal(t, wantPriorities, c.ValidatorSet(h+1).ProposerPriorityHash())
		require.Equal(t, wantAppHash, c.Block(h+1).AppHash.Bytes())
		require.Equal(t, c.Block(h).Hash(), c.Commit(h).BlockID.Hash)
		again, err := sp.State(ctx, uint64(h))
		require.NoError(t, err)
		requireChainState(t, c, h, again)
	}
	// Below the initial height, or beyond int64: refused.
	_, err = sp.State(ctx, 4)
	require.ErrorIs(t, err, ErrVerifyFailed)
	_, err = sp.AppHash(ctx, 1<<63)
	require.ErrorIs(t, err, ErrVerifyFailed)
}

// hookProvider wraps a provider: it can rewrite the light blocks it serves
// and tell when it is asked for one.
type hookProvider struct {
	provider.Provider
	mutate  atomic.Pointer[func(*types.LightBlock) *types.LightBlock]
	entered chan int64 // if set, gets each requested height (never blocks)
}

func (p *hookProvider) setMutate(f func(*types.LightBlock) *types.LightBlock) { p.mutate.Store(&f) }

func (p *hookProvider) LightBlock(ctx context.Context, h int64) (*types.LightBlock, error) {
	if p.entered != nil {
		select {
		case p.entered <- h:
		default:
		}
	}
	lb, err := p.Provider.LightBlock(ctx, h)
	if f := p.mutate.Load(); err == nil && f != nil && *f != nil {
		return (*f)(&types.LightBlock{SignedHeader: lb.SignedHeader, ValidatorSet: lb.ValidatorSet.Copy()}), nil
	}
	return lb, err
}

// shiftPriorities moves one unit of proposer priority from one validator
// to another: the validator hash and the priorities' sum stay the same.
func shiftPriorities(vals *types.ValidatorSet) {
	vals.Validators[0].ProposerPriority++
	vals.Validators[1].ProposerPriority--
}

// TestLightStateProviderProposerFromHeader: a provider serving sets with a
// wrong proposer (the p2p encoding carries one, unverified) does not get
// it installed: the proposer comes from the verified header.
func TestLightStateProviderProposerFromHeader(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 20})
	wrongProposer := func(lb *types.LightBlock) *types.LightBlock {
		for _, v := range lb.ValidatorSet.Validators {
			if !bytes.Equal(v.Address, lb.ProposerAddress) {
				lb.ValidatorSet.Proposer = v
				break
			}
		}
		return lb
	}
	primary := &hookProvider{Provider: c.Provider()}
	witness := &hookProvider{Provider: c.Provider()}
	primary.setMutate(wrongProposer)
	witness.setMutate(wrongProposer)
	sp, err := newLightProvider(t, c, primary, witness, c.Provider(), 1, 5*time.Second)
	require.NoError(t, err)
	state, err := sp.State(context.Background(), 10)
	require.NoError(t, err)
	requireChainState(t, c, 10, state)
}

// TestLightStateProviderForgedPriorities: proposer priorities are not
// covered by header hashes (GHSA-g5xx-c4hv-9ccc). Priorities that differ
// between providers, or that CometBFT cannot have produced, are refused.
func TestLightStateProviderForgedPriorities(t *testing.T) {
	ctx := context.Background()
	t.Run("witness differs at a height verified backwards", func(t *testing.T) {
		// Heights below the trust root are verified backwards from it,
		// against the primary alone: only the cross-check sees the witness.
		c := recentChain(t, chaingen.Options{Height: 40})
		primary, witness := c.Provider(), &hookProvider{Provider: c.Provider()}
		witness.setMutate(func(lb *types.LightBlock) *types.LightBlock {
			if lb.Height == 20 {
				shiftPriorities(lb.ValidatorSet)
			}
			return lb
		})
		sp, err := newLightProvider(t, c, primary, witness, primary, 30, 5*time.Second)
		require.NoError(t, err)
		_, err = sp.State(ctx, 20)
		require.ErrorIs(t, err, ErrProviderTransient, "a provider's fault is not the snapshot's")
		require.ErrorIs(t, err, ErrProvidersDisagree)
		require.ErrorContains(t, err, "proposer priorities at height 20")
	})
	t.Run("primary forges after the headers were verified", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 40})
		primary := &hookProvider{Provider: c.Provider()}
		sp, err := newLightProvider(t, c, primary, c.Provider(), c.Provider(), 1, 5*time.Second)
		require.NoError(t, err)
		_, err = sp.AppHash(ctx, 20)
		require.NoError(t, err)
		_, err = sp.Commit(ctx, 20)
		require.NoError(t, err)
		primary.setMutate(func(lb *types.LightBlock) *types.LightBlock {
			shiftPriorities(lb.ValidatorSet)
			return lb
		})
		_, err = sp.State(ctx, 20)
		require.ErrorIs(t, err, ErrProviderTransient)
		require.ErrorIs(t, err, ErrProvidersDisagree)
		require.ErrorContains(t, err, "refusing to install either")
	})
	t.Run("both providers serve uncentred priorities", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 40})
		forge := func(lb *types.LightBlock) *types.LightBlock {
			if lb.Height == 21 {
				lb.ValidatorSet.Validators[0].ProposerPriority += 10 * lb.ValidatorSet.TotalVotingPower()
			}
			return lb
		}
		primary, witness := &hookProvider{Provider: c.Provider()}, &hookProvider{Provider: c.Provider()}
		primary.setMutate(forge)
		witness.setMutate(forge)
		sp, err := newLightProvider(t, c, primary, witness, c.Provider(), 1, 5*time.Second)
		require.NoError(t, err)
		_, err = sp.State(ctx, 20)
		require.ErrorIs(t, err, ErrVerifyFailed)
		require.ErrorContains(t, err, "centred")
	})
	t.Run("one provider cannot confirm alone", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 40})
		primary, witness := c.Provider(), c.Provider()
		sp, err := newLightProvider(t, c, primary, witness, primary, 1, 5*time.Second)
		require.NoError(t, err)
		_, err = sp.AppHash(ctx, 20)
		require.NoError(t, err)
		_, err = sp.Commit(ctx, 20)
		require.NoError(t, err)
		witness.Fail(provider.ErrNoResponse)
		_, err = sp.State(ctx, 20)
		require.ErrorIs(t, err, ErrProviderTransient)
		require.ErrorContains(t, err, "confirmed by 1 provider(s)")
		witness.Fail(nil)
		state, err := sp.State(ctx, 20)
		require.NoError(t, err)
		requireChainState(t, c, 20, state)
	})
}

type fixedParams struct {
	params types.ConsensusParams
	err    error
}

func (f fixedParams) ConsensusParams(context.Context, int64) (types.ConsensusParams, error) {
	return f.params, f.err
}

func TestLightStateProviderParams(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 10})
	forged := c.Params()
	forged.Block.MaxBytes = 12345
	ctx := context.Background()
	state := func(params ParamsSource) (sm.State, error) {
		sp, err := newLightProvider(t, c, c.Provider(), c.Provider(), params, 1, 5*time.Second)
		require.NoError(t, err)
		return sp.State(ctx, 5)
	}

	_, err := state(fixedParams{params: forged})
	require.ErrorIs(t, err, ErrProviderTransient, "a source's fault is not the snapshot's")
	require.ErrorIs(t, err, ErrProvidersDisagree)
	require.ErrorContains(t, err, "commits to params hash")

	got, err := state(paramsSources{fixedParams{params: forged}, c.Provider(), fixedParams{err: provider.ErrNoResponse},
		c.Provider()})
	require.NoError(t, err, "later sources with the right params are used")
	require.Equal(t, c.Params(), got.ConsensusParams)

	// The hash covers only Block.MaxBytes and MaxGas: the other fields need
	// two sources agreeing, and a source that disagrees fails it
	// transiently (nobody can tell which one forged them).
	_, err = state(paramsSources{fixedParams{params: forged}, fixedParams{err: provider.ErrNoResponse}, c.Provider()})
	require.ErrorIs(t, err, ErrProviderTransient, "one matching source cannot be cross-checked")
	require.ErrorContains(t, err, "only 1 of 3 sources")
	unhashed := c.Params()
	unhashed.Evidence.MaxAgeNumBlocks++
	require.Equal(t, c.Params().Hash(), unhashed.Hash(), "the evidence params are not hashed")
	_, err = state(paramsSources{c.Provider(), fixedParams{params: unhashed}})
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorIs(t, err, ErrProvidersDisagree)
	require.ErrorContains(t, err, "sources disagree")
	// Two colluding sources do not outvote an honest one.
	_, err = state(paramsSources{fixedParams{params: unhashed}, c.Provider(), fixedParams{params: unhashed}})
	require.ErrorIs(t, err, ErrProvidersDisagree)

	_, err = state(fixedParams{err: provider.ErrNoResponse})
	require.ErrorIs(t, err, ErrProviderTransient)
	_, err = state(fixedParams{err: errors.New("the server had a bad day")})
	require.ErrorIs(t, err, ErrProviderTransient, "a failing source says nothing about the snapshot")
	_, err = state(fixedParams{err: fmt.Errorf("rpc: %w", provider.ErrHeightTooHigh)})
	require.ErrorIs(t, err, ErrHeightNotAvailable)
}

// TestLightStateProviderTip: a snapshot whose height+2 does not exist yet
// is not available (deferred), and becomes available later.
func TestLightStateProviderTip(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 12})
	primary, witness := c.Provider(), c.Provider()
	primary.SetTop(10)
	witness.SetTop(10)
	sp, err := newLightProvider(t, c, primary, witness, primary, 1, 5*time.Second)
	require.NoError(t, err)
	ctx := context.Background()
	for _, h := range []uint64{9, 10} {
		_, err = sp.AppHash(ctx, h)
		require.ErrorIs(t, err, ErrHeightNotAvailable, "height %d", h)
		_, err = sp.State(ctx, h)
		require.ErrorIs(t, err, ErrHeightNotAvailable, "height %d", h)
	}
	primary.SetTop(12)
	witness.SetTop(12)
	appHash, err := sp.AppHash(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, c.Block(11).AppHash.Bytes(), appHash)
	state, err := sp.State(ctx, 10)
	require.NoError(t, err)
	requireChainState(t, c, 10, state)
}

// TestLightStateProviderBlockingProvider: a provider that hangs gives a
// transient error within the verify timeout, and a call waiting for the
// light client meanwhile gives up with its own context.
func TestLightStateProviderBlockingProvider(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 20})
	inner := c.Provider()
	primary := &hookProvider{Provider: inner}
	const timeout = 500 * time.Millisecond
	sp, err := newLightProvider(t, c, primary, c.Provider(), inner, 1, timeout)
	require.NoError(t, err)

	gate := make(chan struct{})
	inner.Block(gate)
	start := time.Now()
	_, err = sp.AppHash(context.Background(), 5)
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), timeout+5*time.Second)

	// While one call holds the light client (stuck in the provider),
	// another one waits for it only as long as its context allows.
	primary.entered = make(chan int64, 1)
	done := make(chan error, 1)
	go func() {
		_, err := sp.Commit(context.Background(), 8)
		done <- err
	}()
	<-primary.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = sp.AppHash(ctx, 6)
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(gate)
	<-done

	// Healed: works again.
	inner.Block(nil)
	_, err = sp.AppHash(context.Background(), 5)
	require.NoError(t, err)
}

// TestLightStateProviderKeepsProviders: the light client drops a provider
// for one unexpected error; transient ones are mapped so it keeps them, and
// a client left without witnesses is rebuilt with every provider.
func TestLightStateProviderKeepsProviders(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 30})
	primary, witness := c.Provider(), c.Provider()
	sp, err := newLightProvider(t, c, primary, witness, primary, 1, 5*time.Second)
	require.NoError(t, err)
	ctx := context.Background()

	witness.Fail(&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})
	_, err = sp.AppHash(ctx, 5)
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorContains(t, err, "connection refused", "the provider's own error is named")
	witness.Fail(nil)
	_, err = sp.AppHash(ctx, 5)
	require.NoError(t, err, "the witness was kept")

	// An unexpected error makes the light client drop the primary and
	// promote the witness, leaving none: rebuilt, so it recovers.
	primary.Fail(errors.New("unexpected"))
	_, err = sp.AppHash(ctx, 10)
	require.ErrorIs(t, err, ErrProviderTransient)
	primary.Fail(nil)
	_, err = sp.AppHash(ctx, 15)
	require.NoError(t, err)
	state, err := sp.State(ctx, 15)
	require.NoError(t, err)
	requireChainState(t, c, 15, state)
}

func TestLightStateProviderTrust(t *testing.T) {
	ctx := context.Background()
	t.Run("expired root", func(t *testing.T) {
		c := newChain(t, chaingen.Options{Height: 10, StartTime: time.Now().Add(-48 * time.Hour)})
		_, err := newLightStateProvider(ctx, c.ChainID(), sm.InitStateVersion, 1, c.Provider(),
			[]provider.Provider{c.Provider()}, c.TrustOptions(1, time.Hour), c.Provider(), time.Second, nil)
		require.ErrorIs(t, err, ErrTrustExpired)
		require.ErrorContains(t, err, "height 1 ")
		require.ErrorContains(t, err, "48h0m")
		require.ErrorContains(t, err, "statesync.trust_period")
	})
	t.Run("wrong hash", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 10})
		trust := c.TrustOptions(3, time.Hour)
		trust.Hash = c.Block(4).Hash()
		_, err := newLightStateProvider(ctx, c.ChainID(), sm.InitStateVersion, 1, c.Provider(),
			[]provider.Provider{c.Provider()}, trust, c.Provider(), time.Second, nil)
		require.ErrorIs(t, err, ErrVerifyFailed)
		require.ErrorContains(t, err, "statesync.trust_hash")
	})
	t.Run("invalid options", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 3})
		for key, mutate := range map[string]func(*light.TrustOptions){
			"trust_period": func(o *light.TrustOptions) { o.Period = 0 },
			"trust_height": func(o *light.TrustOptions) { o.Height = 0 },
			"trust_hash":   func(o *light.TrustOptions) { o.Hash = o.Hash[:4] },
		} {
			trust := c.TrustOptions(1, time.Hour)
			mutate(&trust)
			_, err := newLightStateProvider(ctx, c.ChainID(), sm.InitStateVersion, 1, c.Provider(),
				[]provider.Provider{c.Provider()}, trust, c.Provider(), time.Second, nil)
			require.ErrorIs(t, err, ErrInvalidConfig, key)
			require.ErrorContains(t, err, "statesync."+key, key)
		}
	})
	t.Run("sources", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 3})
		trust := c.TrustOptions(1, time.Hour)
		_, err := newLightStateProvider(ctx, c.ChainID(), sm.InitStateVersion, 1, c.Provider(), nil, trust,
			c.Provider(), time.Second, nil)
		require.ErrorIs(t, err, ErrNotEnoughPeers)
		_, err = newLightStateProvider(ctx, c.ChainID(), sm.InitStateVersion, 1, c.Provider(),
			[]provider.Provider{c.Provider()}, trust, nil, time.Second, nil)
		require.ErrorIs(t, err, ErrInvalidConfig)
		sp, err := NewLightClientStateProvider(ctx, c.ChainID(), sm.InitStateVersion, 1, c.Provider(), nil, trust,
			c.Provider(), time.Second, nil)
		require.Error(t, err)
		require.Nil(t, sp, "no typed nil in the interface")
	})
}

func TestClassifyLightClientErrors(t *testing.T) {
	p := &lightStateProvider{timeout: time.Second, trustPeriod: time.Hour}
	live := context.Background()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want error
	}{
		{live, light.ErrOldHeaderExpired{At: time.Now(), Now: time.Now()}, ErrTrustExpired},
		{live, light.ErrVerificationFailed{From: 1, To: 5, Reason: light.ErrOldHeaderExpired{}}, ErrTrustExpired},
		{live, provider.ErrHeightTooHigh, ErrHeightNotAvailable},
		{live, provider.ErrLightBlockNotFound, ErrHeightNotAvailable},
		{live, provider.ErrNoResponse, ErrProviderTransient},
		{live, context.DeadlineExceeded, ErrProviderTransient},
		{live, light.ErrNoWitnesses, ErrProviderTransient},
		{live, light.ErrFailedHeaderCrossReferencing, ErrProviderTransient},
		{live, fmt.Errorf("post failed: %w", &net.OpError{Op: "dial", Err: errors.New("refused")}), ErrProviderTransient},
		{live, errors.New("error in json rpc client, with http response metadata: (Status: 429 Too Many Requests"), ErrProviderTransient},
		{cancelled, errors.New("anything"), ErrProviderTransient},
		{live, light.ErrVerificationFailed{From: 1, To: 5, Reason: light.ErrInvalidHeader{Reason: errors.New("x")}}, ErrVerifyFailed},
		{live, light.ErrLightClientAttack, ErrVerifyFailed},
		{live, light.ErrProposerPrioritiesDiverge{}, ErrProvidersDisagree},
		{live, light.ErrConflictingHeaders{}, ErrProvidersDisagree},
		{live, provider.ErrBadLightBlock{Reason: errors.New("x")}, ErrVerifyFailed},
	} {
		got := p.classify(tc.ctx, time.Now(), "verifying", tc.err)
		require.ErrorIs(t, got, tc.want, "%v", tc.err)
	}
}

func TestLightClientErrorMapping(t *testing.T) {
	live := context.Background()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	unknown := errors.New("unknown")
	bad := provider.ErrBadLightBlock{Reason: errors.New("x")}
	for _, tc := range []struct {
		ctx       context.Context
		err, want error
	}{
		{live, provider.ErrHeightTooHigh, provider.ErrHeightTooHigh},
		{live, fmt.Errorf("peer: %w", provider.ErrHeightTooHigh), provider.ErrHeightTooHigh},
		{live, fmt.Errorf("peer: %w", provider.ErrLightBlockNotFound), provider.ErrLightBlockNotFound},
		{live, fmt.Errorf("peer: %w", ErrTimeout), provider.ErrNoResponse},
		{live, fmt.Errorf("peer: %w", ErrNoPeers), provider.ErrNoResponse},
		{live, &net.DNSError{Err: "no such host", IsTimeout: true}, provider.ErrNoResponse},
		{live, errors.New("(Status: 503 Service Unavailable, Protocol HTTP/1.1)"), provider.ErrNoResponse},
		{live, fmt.Errorf("wrapped: %w", bad), bad},
		{live, unknown, unknown},
		{cancelled, unknown, context.Canceled},
	} {
		got := lightClientError(tc.ctx, tc.err)
		require.True(t, got == tc.want, "%v: got %v, want %v", tc.err, got, tc.want) //nolint:errorlint // identity is the point
	}
}

// rpcNode is a real in-process CometBFT JSON-RPC server (CometBFT's
// jsonrpc server, httptest listener) over real stores populated with a
// chain, serving the routes the light http provider and the params source
// call: commit, validators and consensus_params.
type rpcNode struct {
	srv  *httptest.Server
	bs   *store.BlockStore
	ss   sm.Store
	top  atomic.Int64 // highest committed height served (the "tip")
	mode atomic.Int32 // rpcOK, rpcTooMany, rpcHang
	// closing is closed at cleanup, before the server closes.
	closing chan struct{}
}

const (
	rpcOK int32 = iota
	rpcTooMany
	rpcHang
)

func newRPCNode(t *testing.T, c *chaingen.Chain, to int64) *rpcNode {
	t.Helper()
	n := &rpcNode{bs: store.NewBlockStore(dbm.NewMemDB()), ss: sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{}),
		closing: make(chan struct{})}
	require.NoError(t, c.Populate(n.bs, n.ss, c.InitialHeight(), to))
	n.top.Store(to)
	mux := http.NewServeMux()
	rpcserver.RegisterRPCFuncs(mux, map[string]*rpcserver.RPCFunc{
		"commit":           rpcserver.NewRPCFunc(n.commit, "height"),
		"validators":       rpcserver.NewRPCFunc(n.validators, "height,page,per_page"),
		"consensus_params": rpcserver.NewRPCFunc(n.consensusParams, "height"),
	}, log.NewNopLogger())
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.mode.Load() {
		case rpcTooMany:
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case rpcHang:
			// Reading the body lets the server notice the client hanging
			// up; closing releases whatever is still waiting at cleanup.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-n.closing:
			}
		default:
			mux.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(n.srv.Close)
	t.Cleanup(func() { close(n.closing) }) // runs first
	return n
}

// height resolves a height parameter like CometBFT's RPC, with its error
// messages.
func (n *rpcNode) height(latest int64, hp *int64) (int64, error) {
	if hp == nil {
		return latest, nil
	}
	h := *hp
	switch {
	case h <= 0:
		return 0, fmt.Errorf("height must be greater than 0, but got %d", h)
	case h > latest:
		return 0, fmt.Errorf("height %d must be less than or equal to the current blockchain height %d", h, latest)
	case h < n.bs.Base():
		return 0, fmt.Errorf("height %d is not available, lowest height is %d", h, n.bs.Base())
	}
	return h, nil
}

func (n *rpcNode) commit(_ *rpctypes.Context, hp *int64) (*ctypes.ResultCommit, error) {
	top := n.top.Load()
	h, err := n.height(top, hp)
	if err != nil {
		return nil, err
	}
	meta := n.bs.LoadBlockMeta(h)
	if h == top {
		return ctypes.NewResultCommit(&meta.Header, n.bs.LoadSeenCommit(h), false), nil
	}
	return ctypes.NewResultCommit(&meta.Header, n.bs.LoadBlockCommit(h), true), nil
}

func (n *rpcNode) validators(_ *rpctypes.Context, hp *int64, pagePtr, perPagePtr *int) (*ctypes.ResultValidators, error) {
	h, err := n.height(n.top.Load()+1, hp)
	if err != nil {
		return nil, err
	}
	vals, err := n.ss.LoadValidators(h)
	if err != nil {
		return nil, err
	}
	page, perPage := 1, 30
	if pagePtr != nil {
		page = *pagePtr
	}
	if perPagePtr != nil {
		perPage = min(max(*perPagePtr, 1), 100)
	}
	from := min((page-1)*perPage, len(vals.Validators))
	to := min(from+perPage, len(vals.Validators))
	return &ctypes.ResultValidators{BlockHeight: h, Validators: vals.Validators[from:to], Count: to - from,
		Total: len(vals.Validators)}, nil
}

func (n *rpcNode) consensusParams(_ *rpctypes.Context, hp *int64) (*ctypes.ResultConsensusParams, error) {
	h, err := n.height(n.top.Load()+1, hp)
	if err != nil {
		return nil, err
	}
	params, err := n.ss.LoadConsensusParams(h)
	if err != nil {
		return nil, err
	}
	return &ctypes.ResultConsensusParams{BlockHeight: h, ConsensusParams: params}, nil
}

func newRPCProvider(t *testing.T, c *chaingen.Chain, servers []string, trustHeight int64, timeout time.Duration,
) (StateProvider, error) {
	t.Helper()
	sp, err := NewRPCStateProvider(context.Background(), c.ChainID(), sm.InitStateVersion, c.InitialHeight(),
		servers, c.TrustOptions(trustHeight, 24*time.Hour), timeout, log.NewNopLogger())
	if sp != nil {
		t.Cleanup(func() { require.NoError(t, sp.(interface{ Close() error }).Close()) })
	}
	return sp, err
}

// TestRPCStateProvider verifies against two real JSON-RPC servers: every
// State field (the proposer too, which the validators endpoint does not
// carry) matches the chain across validator-set changes.
func TestRPCStateProvider(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 40, Validators: 5, ValSetChanges: map[int64]int{12: 7, 20: 4, 21: 6}})
	a, b := newRPCNode(t, c, 39), newRPCNode(t, c, 39)
	// Spelled differently from the servers' canonical URLs on purpose.
	aURL := strings.ToUpper(strings.TrimPrefix(a.srv.URL, "http://")) + "/"
	sp, err := newRPCProvider(t, c, []string{aURL, b.srv.URL}, 2, 5*time.Second)
	require.NoError(t, err)
	ctx := context.Background()
	for _, h := range []int64{5, 11, 12, 19, 20, 21, 30, 37} {
		appHash, err := sp.AppHash(ctx, uint64(h))
		require.NoError(t, err, "height %d", h)
		require.Equal(t, c.Block(h+1).AppHash.Bytes(), appHash)
		commit, err := sp.Commit(ctx, uint64(h))
		require.NoError(t, err)
		require.Equal(t, c.Commit(h).Hash(), commit.Hash())
		state, err := sp.State(ctx, uint64(h))
		require.NoError(t, err, "height %d", h)
		requireChainState(t, c, h, state)
	}

	// The tip: height+2 is not there yet, then it is.
	_, err = sp.AppHash(ctx, 38)
	require.ErrorIs(t, err, ErrHeightNotAvailable)
	// Lower both tips for a snapshot at 36, then raise them again.
	a.top.Store(37)
	b.top.Store(37)
	_, err = sp.State(ctx, 36)
	require.ErrorIs(t, err, ErrHeightNotAvailable)
	a.top.Store(39)
	b.top.Store(39)
	state, err := sp.State(ctx, 36)
	require.NoError(t, err)
	requireChainState(t, c, 36, state)
}

func TestRPCStateProviderNeedsTwoDistinctServers(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 3})
	for _, tc := range []struct {
		servers []string
		reason  string
	}{
		{nil, "got none"},
		{[]string{"127.0.0.1:26657"}, `only "127.0.0.1:26657": a second server is needed`},
		{[]string{"127.0.0.1:26657", "http://127.0.0.1:26657/", "HTTP://127.0.0.1:26657", "tcp://127.0.0.1:26657"},
			"the same server 4 times: the same server twice gives no witness cross-check"},
		{[]string{"http://Node.example:80", "node.example"},
			"the same server 2 times: the same server twice gives no witness cross-check"},
	} {
		_, err := newRPCProvider(t, c, tc.servers, 1, time.Second)
		require.ErrorIs(t, err, ErrNotEnoughPeers, "%v", tc.servers)
		require.ErrorContains(t, err, tc.reason)
	}
	for _, servers := range [][]string{{"a:1", ""}, {"a:1", "ftp://b:2"}, {"a:1", "http://"}} {
		_, err := newRPCProvider(t, c, servers, 1, time.Second)
		require.ErrorIs(t, err, ErrInvalidConfig, "%v", servers)
		require.ErrorContains(t, err, "statesync.rpc_servers")
	}
}

func TestNormaliseServers(t *testing.T) {
	got, err := normaliseServers([]string{
		" Node-1.Example:26657 ", "http://node-1.example:26657/", "https://Node-2.example:443/rpc/",
		"tcp://10.0.0.1:26657", "http://10.0.0.1:26657", "unix:///run/cometbft.sock", "[::1]:26657",
	})
	require.NoError(t, err)
	require.Equal(t, []string{
		"http://node-1.example:26657", "https://node-2.example/rpc", "http://10.0.0.1:26657",
		"unix:///run/cometbft.sock", "http://[::1]:26657",
	}, got)
}

// TestRPCStateProviderUnavailableServers: dead, rate-limiting and hanging
// servers are transient failures, never verification failures, and a
// server that recovers is used again.
func TestRPCStateProviderUnavailableServers(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 20})
	ctx := context.Background()

	dead := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		return addr
	}
	t.Run("both dead", func(t *testing.T) {
		_, err := newRPCProvider(t, c, []string{dead(), dead()}, 1, 2*time.Second)
		require.ErrorIs(t, err, ErrProviderTransient)
		require.ErrorContains(t, err, "connect")
	})
	t.Run("witness dead", func(t *testing.T) {
		live := newRPCNode(t, c, 19)
		sp, err := newRPCProvider(t, c, []string{live.srv.URL, dead()}, 1, 2*time.Second)
		require.NoError(t, err)
		_, err = sp.AppHash(ctx, 5)
		require.ErrorIs(t, err, ErrProviderTransient, "no witness could cross-check")
	})
	t.Run("rate limited, then recovered", func(t *testing.T) {
		a, b := newRPCNode(t, c, 19), newRPCNode(t, c, 19)
		sp, err := newRPCProvider(t, c, []string{a.srv.URL, b.srv.URL}, 1, 2*time.Second)
		require.NoError(t, err)
		b.mode.Store(rpcTooMany)
		_, err = sp.AppHash(ctx, 5)
		require.ErrorIs(t, err, ErrProviderTransient)
		require.ErrorContains(t, err, "429")
		b.mode.Store(rpcOK)
		_, err = sp.AppHash(ctx, 5)
		require.NoError(t, err, "the rate-limited witness was kept")
		state, err := sp.State(ctx, 5)
		require.NoError(t, err)
		requireChainState(t, c, 5, state)
	})
	t.Run("hanging", func(t *testing.T) {
		a, b := newRPCNode(t, c, 19), newRPCNode(t, c, 19)
		const timeout = time.Second
		sp, err := newRPCProvider(t, c, []string{a.srv.URL, b.srv.URL}, 1, timeout)
		require.NoError(t, err)
		a.mode.Store(rpcHang)
		b.mode.Store(rpcHang)
		start := time.Now()
		_, err = sp.AppHash(ctx, 5)
		require.ErrorIs(t, err, ErrProviderTransient)
		require.Less(t, time.Since(start), timeout+5*time.Second)
		a.mode.Store(rpcOK)
		b.mode.Store(rpcOK)
		_, err = sp.AppHash(ctx, 5)
		require.NoError(t, err)
	})
}
