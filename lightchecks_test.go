package statesync

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
)

// faults records the providers a light state provider reports.
type faults struct {
	mtx sync.Mutex
	got map[provider.Provider]error
}

func (f *faults) record(p provider.Provider, err error) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if f.got == nil {
		f.got = make(map[provider.Provider]error)
	}
	f.got[p] = err
}

func (f *faults) has(p provider.Provider) bool {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	_, ok := f.got[p]
	return ok
}

func (f *faults) len() int {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	return len(f.got)
}

func newMajorityProvider(t *testing.T, c *chaingen.Chain, provs []provider.Provider, trustHeight int64,
	f *faults,
) (*lightStateProvider, error) {
	t.Helper()
	return newLightStateProvider(context.Background(), c.ChainID(), sm.InitStateVersion, c.InitialHeight(),
		provs[0], provs[1:], c.TrustOptions(trustHeight, 24*time.Hour), c.Provider(), 5*time.Second,
		log.NewNopLogger(), withFaultHandler(f.record))
}

func forgeAt(heights ...int64) func(*types.LightBlock) *types.LightBlock {
	return func(lb *types.LightBlock) *types.LightBlock {
		for _, h := range heights {
			if lb.Height == h || h == 0 {
				shiftPriorities(lb.ValidatorSet)
			}
		}
		return lb
	}
}

// TestLightStateProviderMajority: with three providers, one that lies
// about proposer priorities — as a witness, as the primary, at the trust
// height — is outvoted, reported and left out, and the state is the
// chain's. With two, the disagreement defers (transient), never rejects.
func TestLightStateProviderMajority(t *testing.T) {
	ctx := context.Background()
	t.Run("witness lies at a height verified backwards", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 40})
		liar := &hookProvider{Provider: c.Provider()}
		liar.setMutate(forgeAt(20, 21, 22))
		var f faults
		sp, err := newMajorityProvider(t, c, []provider.Provider{c.Provider(), liar, c.Provider()}, 30, &f)
		require.NoError(t, err)
		state, err := sp.State(ctx, 20)
		require.NoError(t, err)
		requireChainState(t, c, 20, state)
		require.True(t, f.has(liar), "the liar is reported")
		require.Equal(t, 1, f.len(), "nobody else is")
		require.Len(t, sp.currentProviders(), 2, "and left out")
	})
	t.Run("primary lies everywhere", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 40})
		liar := &hookProvider{Provider: c.Provider()}
		liar.setMutate(forgeAt(0))
		var f faults
		sp, err := newMajorityProvider(t, c, []provider.Provider{liar, c.Provider(), c.Provider()}, 1, &f)
		require.NoError(t, err)
		_, err = sp.AppHash(ctx, 20)
		require.NoError(t, err)
		state, err := sp.State(ctx, 20)
		require.NoError(t, err)
		requireChainState(t, c, 20, state)
		require.True(t, f.has(liar))
		require.Equal(t, 1, f.len())
	})
	t.Run("liar at the trust height", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 40})
		liar := &hookProvider{Provider: c.Provider()}
		liar.setMutate(forgeAt(10))
		var f faults
		sp, err := newMajorityProvider(t, c, []provider.Provider{c.Provider(), liar, c.Provider()}, 10, &f)
		require.NoError(t, err, "the majority settles the trust root")
		require.True(t, f.has(liar))
		state, err := sp.State(ctx, 20)
		require.NoError(t, err)
		requireChainState(t, c, 20, state)

		// Two providers: no majority; the error says what to change.
		_, err = newMajorityProvider(t, c, []provider.Provider{c.Provider(), liar}, 10, &faults{})
		require.ErrorIs(t, err, ErrProvidersDisagree)
		require.ErrorIs(t, err, ErrProviderTransient)
		require.ErrorContains(t, err, "statesync.trust_height")
		require.ErrorContains(t, err, "remove the lying source")
	})
	t.Run("wrong header at the trust height", func(t *testing.T) {
		c := recentChain(t, chaingen.Options{Height: 40})
		other := recentChain(t, chaingen.Options{Height: 40}) // same chain ID, other keys
		var f faults
		impostor := other.Provider()
		sp, err := newMajorityProvider(t, c, []provider.Provider{impostor, c.Provider(), c.Provider()}, 10, &f)
		require.NoError(t, err, "a primary serving another header than the trust hash is left out")
		require.True(t, f.has(impostor))
		state, err := sp.State(ctx, 20)
		require.NoError(t, err)
		requireChainState(t, c, 20, state)
	})
}

// TestP2PProviderLiarOutvoted: over P2P, a peer serving forged proposer
// priorities is outvoted by the honest peers, punished, and the state is
// the chain's. (Before: the snapshot was rejected and the liar kept.)
func TestP2PProviderLiarOutvoted(t *testing.T) {
	chain := p2pChain(t, 30, nil)
	n := newBackfillNode(t, chain, nil)
	n.net.add("honest1", &fakePeer{chain: chain})
	n.net.add("honest2", &fakePeer{chain: chain})
	n.net.add("honest3", &fakePeer{chain: chain})
	n.net.add("liar", &fakePeer{chain: chain, forge: func(lb *types.LightBlock) {
		if lb.Height >= 10 {
			shiftPriorities(lb.ValidatorSet)
		}
	}})
	sp, err := newP2PStateProvider(backfillCtx(t), n.r, chain.TrustOptions(1, 24*time.Hour))
	require.NoError(t, err)
	state, err := sp.State(backfillCtx(t), 20)
	require.NoError(t, err)
	requireChainState(t, chain, 20, state)
	require.Contains(t, n.net.punishedPeers(), p2p.ID("liar"))
	require.ErrorIs(t, n.net.punishedPeers()["liar"], ErrPeerMisbehaved)
	require.Len(t, n.net.punishedPeers(), 1)
}

// TestSettleSilentProvidersCountAgainstMajority: two liars, one honest
// provider answering and one honest provider that timed out: the liars are
// not a majority of the four (the silent one may be honest), so nobody is
// outvoted and the call fails transiently. Among three providers two
// agreeing answers are a majority, and so are three liars of four: the
// rule assumes an honest majority of the providers.
func TestSettleSilentProvidersCountAgainstMajority(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 4, Validators: 2})
	honest := chain.LightBlock(3)
	forged := chain.LightBlock(3)
	shiftPriorities(forged.ValidatorSet)
	prov := func(name string) *checkedProvider { return &checkedProvider{name: name} }
	answers := []lightAnswer{
		{prov: prov("liar1"), lb: forged}, {prov: prov("liar2"), lb: forged},
		{prov: prov("honest"), lb: honest}, {prov: prov("silent"), err: provider.ErrNoResponse},
	}
	v := settle(3, answers, nil)
	require.True(t, v.split, "two liars are not a majority of four")
	require.Nil(t, v.winner)
	require.Empty(t, v.dissent, "nobody is outvoted")

	v = settle(3, answers[:3], nil)
	require.NotNil(t, v.winner, "two of three valid answers agree")
	require.Len(t, v.dissent, 1)

	answers = append(answers[:3], lightAnswer{prov: prov("liar3"), lb: forged})
	v = settle(3, answers, nil)
	require.NotNil(t, v.winner)
	require.Equal(t, forged.ValidatorSet.ProposerPriorityHash(), v.winner.ValidatorSet.ProposerPriorityHash(),
		"a majority of liars wins: the rule's assumption is an honest majority of the providers")
}
