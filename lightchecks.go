package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"

	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/types"
)

// Field-by-field checks of verified light blocks, and the provider
// majority rule: what the light state provider does when its sources
// disagree.
//
// A disagreement between providers is a provider fault, never a snapshot
// fault. With three or more providers, a strict majority of them (those
// that did not answer count against it: they may be honest) that agrees
// on every field (header, validator set, proposer priorities) wins:
// the dissenters are reported (over P2P: punished), left out when the
// light client is rebuilt, and the majority's answer is used. Without such
// a majority the call fails with ErrProvidersDisagree (wrapping
// ErrProviderTransient): the snapshot is tried again later. An answer that
// contradicts what is already verified (a header hash, the trust hash) is
// a dissent whatever the others say.

// checkLinked checks that upper is the block right above lower: it names
// lower's block ID and carries the validator set lower announced.
func checkLinked(lower, upper *types.LightBlock) error {
	if !upper.LastBlockID.Equals(lower.Commit.BlockID) {
		return fmt.Errorf("%w: header %d names block %v as its parent, the commit of %d is for %v",
			ErrVerifyFailed, upper.Height, upper.LastBlockID, lower.Height, lower.Commit.BlockID)
	}
	if !bytes.Equal(lower.NextValidatorsHash, upper.ValidatorsHash) {
		return fmt.Errorf("%w: header %d announces next validators %X, header %d has validators %X",
			ErrVerifyFailed, lower.Height, lower.NextValidatorsHash, upper.Height, upper.ValidatorsHash)
	}
	return nil
}

// derivedValidatorSet returns a copy of lb's validator set rebuilt the way
// CometBFT builds one from served validators
// (types.ValidatorSetFromExistingValidators: priorities kept, canonical
// order, total power recomputed), checked against the verified header,
// with its proposer taken from the header.
func derivedValidatorSet(lb *types.LightBlock) (*types.ValidatorSet, error) {
	vals := make([]*types.Validator, 0, len(lb.ValidatorSet.Validators))
	for _, v := range lb.ValidatorSet.Validators {
		vals = append(vals, v.Copy())
	}
	set, err := types.ValidatorSetFromExistingValidators(vals)
	if err != nil {
		return nil, fmt.Errorf("%w: validator set at height %d: %w", ErrVerifyFailed, lb.Height, err)
	}
	if !bytes.Equal(set.Hash(), lb.ValidatorsHash) {
		return nil, fmt.Errorf("%w: validator set at height %d hashes to %X, the header commits to %X",
			ErrVerifyFailed, lb.Height, set.Hash(), lb.ValidatorsHash)
	}
	if err := checkPriorities(set); err != nil {
		return nil, fmt.Errorf("%w: validator set at height %d: %w", ErrVerifyFailed, lb.Height, err)
	}
	// The proposer of round 0 is what consensus takes from the set; for a
	// block committed in round 0 it is the header's proposer, which the
	// commit signs. (Served sets carry no proposer, or an unverified one.)
	_, proposer := set.GetByAddressMut(lb.ProposerAddress)
	if proposer == nil {
		return nil, fmt.Errorf("%w: the proposer %X of height %d is not in its validator set",
			ErrVerifyFailed, lb.ProposerAddress, lb.Height)
	}
	if lb.Commit.Round == 0 {
		set.Proposer = proposer
	}
	return set, nil
}

// checkPriorities checks what CometBFT's proposer selection keeps true of
// every validator set it stores: after each update the priorities are
// shifted to average zero, and increments preserve their sum. A set whose
// priorities are far from centred was not produced by CometBFT.
func checkPriorities(set *types.ValidatorSet) error {
	if set.IsNilOrEmpty() {
		return errors.New("empty validator set")
	}
	sum := new(big.Int)
	for _, v := range set.Validators {
		sum.Add(sum, big.NewInt(v.ProposerPriority))
	}
	avg := new(big.Int).Quo(sum, big.NewInt(int64(len(set.Validators))))
	if avg.CmpAbs(big.NewInt(1)) > 0 {
		return fmt.Errorf("proposer priorities average %v, CometBFT keeps them centred on 0", avg)
	}
	return nil
}

// crossCheckPriorities asks every provider for the light blocks at the
// heights of blocks and compares the proposer priorities of those serving
// the same header: they must all agree, and at least two providers must
// serve each header. The light client does this when it verifies a header
// against its witnesses, but not for headers verified backwards or
// lightAnswer is one provider's light block at a height.
type lightAnswer struct {
	prov *checkedProvider
	lb   *types.LightBlock
	err  error
}

// pollProviders asks every provider for the light block at height at once,
// each within the verify timeout.
func (p *lightStateProvider) pollProviders(ctx context.Context, height int64) []lightAnswer {
	provs := p.currentProviders()
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	out := make([]lightAnswer, len(provs))
	var wg sync.WaitGroup
	for i, prov := range provs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lb, err := prov.inner.LightBlock(cctx, height)
			out[i] = lightAnswer{prov: prov, lb: lb, err: err}
		}()
	}
	wg.Wait()
	return out
}

// lightVerdict is what the providers' answers at one height say.
type lightVerdict struct {
	winner   *types.LightBlock  // the block every valid answer, or a strict majority of three or more, serves
	agree    []*checkedProvider // the providers serving winner
	dissent  []*checkedProvider // providers serving anything else (or invalid blocks)
	split    bool               // valid answers differ and no majority settles it
	missing  bool               // some provider does not have the height (yet)
	problems []string           // for messages
}

// settle applies the majority rule to answers at height. wantHash, when
// set, is the header hash already verified (or trusted) at that height:
// answers with another header are dissent outright.
func settle(height int64, answers []lightAnswer, wantHash []byte) lightVerdict {
	var v lightVerdict
	groups := make(map[string][]lightAnswer)
	var keys []string
	failed := 0 // providers that did not answer: they may be honest, so they count against a majority
	for _, a := range answers {
		switch {
		case a.err != nil:
			failed++
			v.problems = append(v.problems, fmt.Sprintf("%s at %d: %v", a.prov, height, a.err))
			if errors.Is(a.err, provider.ErrHeightTooHigh) || errors.Is(a.err, provider.ErrLightBlockNotFound) {
				v.missing = true
			}
			continue
		case a.lb == nil || a.lb.SignedHeader == nil || a.lb.Header == nil || a.lb.Commit == nil ||
			a.lb.ValidatorSet == nil || a.lb.Height != height:
			v.problems = append(v.problems, fmt.Sprintf("%s at %d: incomplete light block", a.prov, height))
		case !bytes.Equal(a.lb.ValidatorSet.Hash(), a.lb.ValidatorsHash):
			v.problems = append(v.problems, fmt.Sprintf("%s at %d: validator set does not match its header",
				a.prov, height))
		case wantHash != nil && !bytes.Equal(a.lb.Hash(), wantHash):
			v.problems = append(v.problems, fmt.Sprintf("%s at %d: header %X, the verified one is %X", a.prov,
				height, a.lb.Hash(), wantHash))
		default:
			key := string(a.lb.Hash()) + string(a.lb.ValidatorSet.ProposerPriorityHash())
			if _, ok := groups[key]; !ok {
				keys = append(keys, key)
			}
			groups[key] = append(groups[key], a)
			continue
		}
		v.dissent = append(v.dissent, a.prov)
	}
	sort.SliceStable(keys, func(i, j int) bool { return len(groups[keys[i]]) > len(groups[keys[j]]) })
	valid := 0
	for _, k := range keys {
		valid += len(groups[k])
	}
	if len(keys) == 0 {
		return v
	}
	top := groups[keys[0]]
	// A majority is of every provider that could be honest: those that
	// answered validly and those that did not answer (an honest source
	// that timed out must not let two liars outvote the one left).
	if voters := valid + failed; len(keys) > 1 && (voters < 3 || 2*len(top) <= voters) {
		for _, k := range keys {
			g := groups[k]
			v.problems = append(v.problems, fmt.Sprintf("%d provider(s) (%s) serve header %X with priorities %X",
				len(g), g[0].prov, g[0].lb.Hash(), g[0].lb.ValidatorSet.ProposerPriorityHash()))
		}
		v.split = true
		return v
	}
	v.winner = top[0].lb
	for _, a := range top {
		v.agree = append(v.agree, a.prov)
	}
	for _, k := range keys[1:] {
		for _, a := range groups[k] {
			v.dissent = append(v.dissent, a.prov)
			v.problems = append(v.problems, fmt.Sprintf("%s at %d: outvoted (priorities %X)", a.prov, height,
				a.lb.ValidatorSet.ProposerPriorityHash()))
		}
	}
	return v
}

// crossCheckPriorities asks every provider for the light blocks at the
// heights of blocks, which the light client verified, and settles their
// proposer priorities, which no header commits to: at least two providers
// must serve each block, and all of them, or a strict majority of three or
// more, the same priorities. The light client compares witnesses when it
// verifies a header forwards, but not for headers verified backwards or
// earlier, so it is done here for the sets State installs. A majority that
// differs from the block the light client holds replaces it in blocks.
// Dissenters are reported and dropped (see exclude).
func (p *lightStateProvider) crossCheckPriorities(ctx context.Context, blocks []*types.LightBlock) error {
	for i, want := range blocks {
		v := settle(want.Height, p.pollProviders(ctx, want.Height), want.Hash())
		if len(v.dissent) > 0 {
			p.exclude(ctx, v.dissent, fmt.Errorf("%w: light block at height %d: %s", ErrProvidersDisagree,
				want.Height, strings.Join(v.problems, "; ")))
		}
		switch {
		case v.split:
			return fmt.Errorf("%w: %w: validator set proposer priorities at height %d differ between "+
				"providers and no majority of three or more settles it (%s): refusing to install either",
				ErrProviderTransient, ErrProvidersDisagree, want.Height, strings.Join(v.problems, "; "))
		case len(v.agree) < 2:
			kind := ErrProviderTransient
			if v.missing {
				kind = ErrHeightNotAvailable
			}
			err := fmt.Errorf("%w: the validator set at height %d was confirmed by %d provider(s), 2 are "+
				"needed to cross-check proposer priorities (%s)", kind, want.Height, len(v.agree),
				strings.Join(v.problems, "; "))
			if ctx.Err() != nil {
				return fmt.Errorf("%w: %w", err, context.Cause(ctx))
			}
			return err
		}
		if !bytes.Equal(v.winner.ValidatorSet.ProposerPriorityHash(), want.ValidatorSet.ProposerPriorityHash()) {
			lb := *want
			lb.ValidatorSet = v.winner.ValidatorSet.Copy()
			blocks[i] = &lb
		}
	}
	return nil
}

// isDivergence reports whether err is the light client finding that its
// providers disagree (rather than failing to reach them). A light client
// attack (a conflicting header that verifies) is not one: that is a fork
// of the chain, and fails verification.
func isDivergence(err error) bool {
	var diverge light.ErrProposerPrioritiesDiverge
	var conflict light.ErrConflictingHeaders
	return errors.As(err, &diverge) || errors.As(err, &conflict) || errors.Is(err, ErrProvidersDisagree)
}

// resolve settles a disagreement the light client found at height:
// with a majority, the dissenters are excluded and resolve reports true
// (verify again); without, it returns an error wrapping
// ErrProvidersDisagree and ErrProviderTransient.
func (p *lightStateProvider) resolve(ctx context.Context, height int64, wantHash []byte, cause error) (bool, error) {
	v := settle(height, p.pollProviders(ctx, height), wantHash)
	if v.split || len(v.dissent) == 0 || len(v.agree) < 2 {
		return false, fmt.Errorf("%w: %w: the providers disagree at height %d and no majority of three or more "+
			"settles it (%s): %w", ErrProviderTransient, ErrProvidersDisagree, height,
			strings.Join(v.problems, "; "), cause)
	}
	if !p.exclude(ctx, v.dissent, fmt.Errorf("%w: light block at height %d: %s", ErrProvidersDisagree, height,
		strings.Join(v.problems, "; "))) {
		return false, fmt.Errorf("%w: %w: at height %d only %d provider(s) would be left after leaving out "+
			"those outvoted (%s): %w", ErrProviderTransient, ErrProvidersDisagree, height, len(v.agree),
			strings.Join(v.problems, "; "), cause)
	}
	return true, nil
}
