package chaingen

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	lightdb "github.com/cometbft/cometbft/light/store/db"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

func newChain(t testing.TB, opts Options) *Chain {
	t.Helper()
	c, err := New(opts)
	require.NoError(t, err)
	return c
}

func requireSameSet(t *testing.T, want, got *types.ValidatorSet, msgAndArgs ...any) {
	t.Helper()
	require.Equal(t, want.Hash(), got.Hash(), msgAndArgs...)
	require.Equal(t, want.ProposerPriorityHash(), got.ProposerPriorityHash(), msgAndArgs...)
	require.Equal(t, want.GetProposer().Address, got.GetProposer().Address, msgAndArgs...)
}

// The real light client verifies the chain across validator-set changes,
// from an initial height above 1, skipping and sequentially.
func TestLightClientVerifiesChain(t *testing.T) {
	c := newChain(t, Options{InitialHeight: 3, Height: 200, Validators: 5,
		ValSetChanges: map[int64]int{10: 7, 30: 4, 31: 9, 120: 3, 121: 10},
		StartTime:     time.Now().Add(-time.Hour)})
	for _, seq := range []bool{false, true} {
		var opts []light.Option
		if seq {
			opts = append(opts, light.SequentialVerification())
		}
		primary, witness := c.Provider(), c.Provider()
		lc, err := light.NewClient(ctx, c.ChainID(), c.TrustOptions(3, 24*time.Hour),
			primary, []provider.Provider{witness}, lightdb.New(dbm.NewMemDB(), ""), opts...)
		require.NoError(t, err)
		for _, h := range []int64{9, 10, 31, 60, 119, 122, 200} {
			lb, err := lc.VerifyLightBlockAtHeight(ctx, h, time.Now())
			require.NoError(t, err, "height %d", h)
			require.Equal(t, c.Block(h).Hash(), lb.Hash())
		}
		// Backwards too.
		lb, err := lc.VerifyLightBlockAtHeight(ctx, 5, time.Now())
		require.NoError(t, err)
		require.Equal(t, c.BlockID(5).Hash, lb.Hash())
		require.Positive(t, witness.Calls())
	}
}

// Every header field that ties the chain together is consistent.
func TestChainStructure(t *testing.T) {
	params := *types.DefaultConsensusParams()
	params.Block.MaxBytes = 1 << 20
	params.Version.App = 7
	appHash := func(h int64) []byte { return []byte{byte(h), 0xaa} }
	// One absent signature in sets of 4 or more.
	absent := func(h int64, i int) bool { return h%5 == 0 && i == 0 && (h < 21 || h >= 40) }
	c := newChain(t, Options{ChainID: "structure", InitialHeight: 11, Height: 60, Validators: 4,
		ValSetChanges: map[int64]int{20: 6, 21: 2, 40: 5}, ParamsChanges: map[int64]types.ConsensusParams{30: params},
		AppHash: appHash, Absent: absent})
	require.Equal(t, []int64{20, 21, 40}, c.ValSetChanges())
	for h := c.InitialHeight(); h <= c.Height(); h++ {
		b := c.Block(h)
		require.NoError(t, b.ValidateBasic(), "height %d", h)
		require.Equal(t, h, b.Height)
		require.Equal(t, c.ValidatorSet(h).Hash(), b.ValidatorsHash.Bytes())
		require.Equal(t, c.ValidatorSet(h+1).Hash(), b.NextValidatorsHash.Bytes())
		require.Equal(t, c.Params(h).Hash(), b.ConsensusHash.Bytes())
		require.Equal(t, c.Params(h).Version.App, b.Version.App)
		require.Equal(t, appHash(h), b.AppHash.Bytes())
		require.Equal(t, sm.TxResultsHash(nil), b.LastResultsHash.Bytes())
		require.Equal(t, c.ValidatorSet(h).GetProposer().Address, b.ProposerAddress)
		require.True(t, b.Time.Equal(c.Time(h)))
		id := c.BlockID(h)
		require.Equal(t, b.Hash(), id.Hash)
		require.Equal(t, c.PartSet(h).Header(), id.PartSetHeader)
		require.Equal(t, b.Hash(), c.LightBlock(h).Hash())
		commit := c.Commit(h)
		require.Equal(t, id, commit.BlockID)
		require.NoError(t, c.ValidatorSet(h).VerifyCommit(c.ChainID(), id, h, commit), "height %d", h)
		require.Equal(t, absent(h, 0), commit.Signatures[0].BlockIDFlag == types.BlockIDFlagAbsent, "height %d", h)
		require.NoError(t, c.LightBlock(h).ValidateBasic(c.ChainID()))
		if h == c.InitialHeight() {
			require.Zero(t, b.LastBlockID)
			require.Equal(t, b.Time, c.Genesis().GenesisTime)
			continue
		}
		require.Equal(t, c.BlockID(h-1), b.LastBlockID)
		require.Equal(t, c.Commit(h-1).Hash(), b.LastCommitHash)
		require.True(t, b.Time.After(c.Time(h-1)))
		// BFT time: header h's time is the (common) timestamp of commit h-1.
		for _, s := range c.Commit(h - 1).Signatures {
			if s.BlockIDFlag != types.BlockIDFlagAbsent {
				require.True(t, s.Timestamp.Equal(b.Time))
			}
		}
	}
	require.Nil(t, c.Block(10))
	require.Nil(t, c.LightBlock(61))
	require.Nil(t, c.Commit(61))
	require.NotNil(t, c.ValidatorSet(62))
	require.Nil(t, c.ValidatorSet(63))
	require.Equal(t, uint64(1), c.Params(29).Version.App)
	require.Equal(t, uint64(7), c.Params().Version.App)

	// Changes keep about half of the set and add fresh keys.
	require.Equal(t, 6, c.ValidatorSet(20).Size())
	require.Equal(t, 2, c.ValidatorSet(21).Size())
	for _, v := range c.ValidatorSet(21).Validators {
		_, kept := c.ValidatorSet(20).GetByAddress(v.Address)
		require.NotNil(t, kept)
	}
	// Signers sign for the set.
	signers := c.Signers(40)
	require.Len(t, signers, 5)
	pk, err := signers[2].GetPubKey()
	require.NoError(t, err)
	require.Equal(t, c.ValidatorSet(40).Validators[2].Address, pk.Address())
}

// Unchanged sets follow CometBFT's proposer rotation; the genesis state
// agrees with the chain.
func TestValidatorSetsAsCometBFT(t *testing.T) {
	c := newChain(t, Options{Height: 30, Validators: 4, ValSetChanges: map[int64]int{10: 6}})
	g := c.GenesisState()
	requireSameSet(t, c.ValidatorSet(1), g.Validators)
	requireSameSet(t, c.ValidatorSet(2), g.NextValidators)
	require.Equal(t, c.Params(1).Hash(), g.ConsensusParams.Hash())
	require.Equal(t, c.Block(1).AppHash.Bytes(), g.AppHash)
	for h := int64(2); h <= 32; h++ {
		if h == 10 {
			continue
		}
		requireSameSet(t, c.ValidatorSet(h-1).CopyIncrementProposerPriority(1), c.ValidatorSet(h), "height %d", h)
	}
	// Proposers rotate.
	seen := map[string]bool{}
	for h := int64(1); h <= 8; h++ {
		seen[string(c.Block(h).ProposerAddress)] = true
	}
	require.Len(t, seen, 4)
}

func TestState(t *testing.T) {
	params := *types.DefaultConsensusParams()
	params.Evidence.MaxAgeNumBlocks = 7
	c := newChain(t, Options{InitialHeight: 5, Height: 40, ValSetChanges: map[int64]int{12: 6, 20: 3},
		ParamsChanges: map[int64]types.ConsensusParams{25: params}})
	require.Equal(t, c.GenesisState(), c.State(4))
	for h := c.InitialHeight(); h <= c.Height(); h++ {
		st := c.State(h)
		require.NoError(t, st.Validators.ValidateBasic())
		require.Equal(t, h, st.LastBlockHeight)
		require.Equal(t, int64(5), st.InitialHeight)
		require.Equal(t, c.BlockID(h), st.LastBlockID)
		require.True(t, st.LastBlockTime.Equal(c.Time(h)))
		requireSameSet(t, c.ValidatorSet(h), st.LastValidators)
		requireSameSet(t, c.ValidatorSet(h+1), st.Validators)
		requireSameSet(t, c.ValidatorSet(h+2), st.NextValidators)
		require.Equal(t, c.Params(h+1).Hash(), st.ConsensusParams.Hash())
		if h < c.Height() {
			next := c.Block(h + 1)
			require.Equal(t, next.AppHash.Bytes(), st.AppHash)
			require.Equal(t, next.LastResultsHash.Bytes(), st.LastResultsHash)
			require.Equal(t, next.Version, st.Version.Consensus)
			require.Equal(t, next.ConsensusHash.Bytes(), st.ConsensusParams.Hash())
		}
		wantVals := int64(5)
		switch {
		case h+2 >= 20:
			wantVals = 20
		case h+2 >= 12:
			wantVals = 12
		}
		require.Equal(t, wantVals, st.LastHeightValidatorsChanged, "height %d", h)
		wantParams := int64(5)
		if h+1 >= 25 {
			wantParams = 25
		}
		require.Equal(t, wantParams, st.LastHeightConsensusParamsChanged, "height %d", h)
	}
	require.Panics(t, func() { c.State(41) })
}

func requirePopulated(t *testing.T, c *Chain, bs *store.BlockStore, ss sm.Store, from, to int64) {
	t.Helper()
	for h := from; h <= to; h++ {
		meta := bs.LoadBlockMeta(h)
		require.NotNil(t, meta, "height %d", h)
		require.Equal(t, c.BlockID(h), meta.BlockID)
		require.Equal(t, c.Block(h).Hash(), meta.Header.Hash())
		require.Equal(t, c.Block(h).Hash(), bs.LoadBlock(h).Hash())
		require.Equal(t, c.Commit(h).Hash(), bs.LoadSeenCommit(h).Hash())
		if h < to {
			require.Equal(t, c.Commit(h).Hash(), bs.LoadBlockCommit(h).Hash())
		}
		require.Equal(t, meta, bs.LoadBlockMetaByHash(c.BlockID(h).Hash))
	}
	low := from
	if from > c.InitialHeight() {
		low = from - 1
	}
	for h := low; h <= to+2; h++ {
		vals, err := ss.LoadValidators(h)
		require.NoError(t, err, "height %d", h)
		requireSameSet(t, c.ValidatorSet(h), vals, "height %d", h)
	}
	for h := from; h <= to+1; h++ {
		params, err := ss.LoadConsensusParams(h)
		require.NoError(t, err, "height %d", h)
		require.Equal(t, c.Params(h).Hash(), params.Hash(), "height %d", h)
	}
	st, err := ss.Load()
	require.NoError(t, err)
	want := c.State(to)
	require.Equal(t, to, st.LastBlockHeight)
	require.Equal(t, want.AppHash, st.AppHash)
	require.Equal(t, want.LastBlockID, st.LastBlockID)
	requireSameSet(t, want.NextValidators, st.NextValidators)
	require.Equal(t, to, bs.Height())
}

// Populate writes what CometBFT's own loaders read back, from genesis,
// from the middle of the chain (after a change), and continuing.
func TestPopulate(t *testing.T) {
	params := *types.DefaultConsensusParams()
	params.Block.MaxBytes = 2 << 20
	c := newChain(t, Options{Height: 60, ValSetChanges: map[int64]int{8: 6, 30: 3, 31: 5},
		ParamsChanges: map[int64]types.ConsensusParams{12: params, 40: *types.DefaultConsensusParams()}})
	newStores := func() (*store.BlockStore, sm.Store) {
		return store.NewBlockStore(dbm.NewMemDB()), sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
	}

	bs, ss := newStores()
	require.NoError(t, c.Populate(bs, ss, 1, 17))
	requirePopulated(t, c, bs, ss, 1, 17)
	require.Equal(t, int64(1), bs.Base())
	require.NoError(t, c.Populate(bs, ss, 18, 60))
	requirePopulated(t, c, bs, ss, 1, 60)

	// Bootstrapped mid-chain, above a change and a params change.
	bs, ss = newStores()
	require.NoError(t, c.Populate(bs, ss, 20, 35))
	requirePopulated(t, c, bs, ss, 20, 35)
	require.Equal(t, int64(20), bs.Base())
	require.NoError(t, c.Populate(bs, ss, 36, 45))
	requirePopulated(t, c, bs, ss, 20, 45)

	// Refusals.
	require.ErrorIs(t, c.Populate(bs, ss, 46, 61), ErrOutOfRange)
	require.ErrorIs(t, c.Populate(bs, ss, 0, 3), ErrOutOfRange)
	require.Error(t, c.Populate(bs, ss, 48, 50), "not contiguous")
	bs2, _ := newStores()
	require.Error(t, c.Populate(bs2, ss, 50, 50), "state store elsewhere")
}

// Across the validator-set checkpoint CometBFT keeps every 100 000
// heights, from an initial height far above 1.
func TestPopulateAcrossCheckpoint(t *testing.T) {
	c := newChain(t, Options{InitialHeight: 99_950, Height: 100_060, Validators: 7,
		ValSetChanges: map[int64]int{99_990: 6, 100_004: 3, 100_005: 5, 100_020: 7}})
	bs, ss := store.NewBlockStore(dbm.NewMemDB()), sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
	require.NoError(t, c.Populate(bs, ss, 99_950, 100_058))
	requirePopulated(t, c, bs, ss, 99_950, 100_058)
	bs, ss = store.NewBlockStore(dbm.NewMemDB()), sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
	require.NoError(t, c.Populate(bs, ss, 99_995, 100_010))
	requirePopulated(t, c, bs, ss, 99_995, 100_010)
}

func TestDeterministic(t *testing.T) {
	opts := Options{Height: 20, ValSetChanges: map[int64]int{5: 7}}
	a, b := newChain(t, opts), newChain(t, opts)
	require.Equal(t, a.BlockID(20), b.BlockID(20))
	require.Equal(t, a.Commit(20).Hash(), b.Commit(20).Hash())
	opts.Seed = 1
	require.NotEqual(t, a.BlockID(20), newChain(t, opts).BlockID(20))
}

// TestOptionErrors: each bad option is refused with an error naming it.
func TestOptionErrors(t *testing.T) {
	for name, c := range map[string]struct {
		opts Options
		want string
	}{
		"height below initial": {Options{InitialHeight: 5, Height: 4}, "chaingen: height 4 below initial height 5"},
		"change too early": {Options{Height: 10, ValSetChanges: map[int64]int{2: 5}},
			"chaingen: validator-set change at 2: the earliest possible is"},
		"empty set": {Options{Height: 10, ValSetChanges: map[int64]int{5: 0}},
			"chaingen: validator-set change at 5 to 0 validators"},
		"params change at start": {Options{Height: 10, ParamsChanges: map[int64]types.ConsensusParams{1: *types.DefaultConsensusParams()}},
			"chaingen: params change at 1: not after the initial height"},
		"invalid params": {Options{Height: 10, ConsensusParams: &types.ConsensusParams{}}, "chaingen: consensus params: "},
	} {
		_, err := New(c.opts)
		require.ErrorContains(t, err, c.want, name)
	}
}

// Accessors return copies: changing them leaves the chain intact.
func TestCopies(t *testing.T) {
	c := newChain(t, Options{Height: 5})
	want := c.BlockID(3).Hash
	lb := c.LightBlock(3)
	lb.AppHash[0] ^= 1
	lb.ValidatorSet.Validators[0].VotingPower = 99
	lb.ValidatorSet.Validators[0].Address[0] ^= 1
	lb.Commit.Signatures[0].Signature[0] ^= 1
	b := c.Block(3)
	b.AppHash[0] ^= 1
	c.ValidatorSet(3).IncrementProposerPriority(3)
	c.Commit(3).Signatures[1].Signature[0] ^= 1
	require.Equal(t, want, c.Block(3).Hash())
	require.NoError(t, c.ValidatorSet(3).VerifyCommit(c.ChainID(), c.BlockID(3), 3, c.Commit(3)))
}

func TestProvider(t *testing.T) {
	c := newChain(t, Options{InitialHeight: 3, Height: 20})
	p := c.Provider()
	require.Equal(t, c.ChainID(), p.ChainID())
	lb, err := p.LightBlock(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(20), lb.Height)
	_, err = p.LightBlock(ctx, 21)
	require.ErrorIs(t, err, provider.ErrHeightTooHigh)
	_, err = p.LightBlock(ctx, 2)
	require.ErrorIs(t, err, provider.ErrLightBlockNotFound)
	_, err = p.LightBlock(ctx, -1)
	require.Error(t, err)

	p.SetTop(10)
	lb, err = p.LightBlock(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(10), lb.Height)
	_, err = p.LightBlock(ctx, 11)
	require.ErrorIs(t, err, provider.ErrHeightTooHigh)
	params, err := p.ConsensusParams(ctx, 5)
	require.NoError(t, err)
	require.Equal(t, c.Params(5).Hash(), params.Hash())
	_, err = p.ConsensusParams(ctx, 11)
	require.ErrorIs(t, err, provider.ErrHeightTooHigh)
	require.Equal(t, []int64{0, 21, 2, -1, 0, 11}, p.Heights())
	require.Equal(t, 6, p.Calls())

	p.Fail(provider.ErrNoResponse)
	_, err = p.LightBlock(ctx, 5)
	require.ErrorIs(t, err, provider.ErrNoResponse)
	p.Fail(nil)

	// A gate holds calls until closed and honours the context.
	gate := make(chan struct{})
	p.Block(gate)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = p.LightBlock(cctx, 5)
	require.ErrorIs(t, err, context.Canceled)
	got := make(chan error, 1)
	go func() { _, err := p.LightBlock(ctx, 5); got <- err }()
	select {
	case <-got:
		t.Fatal("call went through a closed gate")
	default:
	}
	close(gate)
	require.NoError(t, <-got)
	p.Block(nil)

	p.Delay(time.Hour)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = p.LightBlock(dctx, 5)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	p.Delay(0)

	boom := errors.New("boom")
	p.Intercept(func(h int64) (*types.LightBlock, error) {
		if h == 7 {
			return nil, boom
		}
		return nil, nil
	})
	_, err = p.LightBlock(ctx, 7)
	require.ErrorIs(t, err, boom)
	_, err = p.LightBlock(ctx, 8)
	require.NoError(t, err)
}

// A witness serving a forged (but validly signed) fork is caught by the
// light client, which reports the attack.
func TestForgedWitness(t *testing.T) {
	c := newChain(t, Options{Height: 40, StartTime: time.Now().Add(-time.Hour)})
	forged := c.ForgeLightBlock(30, func(h *types.Header) { h.AppHash = bytes.Repeat([]byte{1}, 32) })
	require.NotEqual(t, c.BlockID(30).Hash, forged.Hash())
	require.NoError(t, forged.ValidateBasic(c.ChainID()))
	require.NoError(t, c.ValidatorSet(30).VerifyCommitLight(c.ChainID(), forged.Commit.BlockID, 30, forged.Commit))

	primary, witness := c.Provider(), c.Provider()
	witness.Intercept(func(h int64) (*types.LightBlock, error) {
		if h == 30 {
			return c.ForgeLightBlock(30, func(h *types.Header) { h.AppHash = bytes.Repeat([]byte{1}, 32) }), nil
		}
		return nil, nil
	})
	lc, err := light.NewClient(ctx, c.ChainID(), c.TrustOptions(1, 24*time.Hour),
		primary, []provider.Provider{witness}, lightdb.New(dbm.NewMemDB(), ""), light.SequentialVerification())
	require.NoError(t, err)
	_, err = lc.VerifyLightBlockAtHeight(ctx, 30, time.Now())
	require.Error(t, err)
	require.NotEmpty(t, append(primary.Evidence(), witness.Evidence()...))
}

// Generating 2000 heights with 10 validators takes a few seconds at most.
func TestGenerationSpeed(t *testing.T) {
	start := time.Now()
	c := newChain(t, Options{Height: 2000, Validators: 10, ValSetChanges: map[int64]int{500: 8, 1500: 10}})
	took := time.Since(start)
	t.Logf("2000 heights, 10 validators: %v", took)
	require.Equal(t, int64(2000), c.LightBlock(2000).Height)
	require.Less(t, took, 20*time.Second) // generous for -race on a loaded machine
}
