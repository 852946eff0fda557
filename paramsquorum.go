package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"
)

// The consensus params quorum: the one rule deciding which params a
// bootstrapped State gets, for RPC servers and peers alike.
//
// Why a rule at all: the ConsensusHash a verified header commits to covers
// only Block.MaxBytes and Block.MaxGas (types.ConsensusParams.Hash). The
// evidence, validator, version, ABCI and feature params are covered by
// nothing a light client verifies, so a source could forge them undetected.
// Hence:
//
//  1. an answer whose hash is not the verified header's ConsensusHash, or
//     that is invalid, is provably wrong: it is left out (and, over P2P,
//     its sender punished);
//  2. every remaining answer must be identical in every field: if two
//     differ, nobody can tell which is forged, and the decision fails
//     transiently (ErrProvidersDisagree, wrapping ErrProviderTransient:
//     the snapshot is kept and tried again, never rejected for it);
//  3. at least need sources must have answered (2 whenever two or more
//     sources exist), else it fails transiently too.
//
// A majority is never enough: two colluding sources must not outvote an
// honest one on fields nothing verifies.

// paramsVote is one source's answer to a params request.
type paramsVote struct {
	source string
	params types.ConsensusParams
	err    error // the source failed; params unset
}

// decideParams applies the quorum rule to votes for the params at height,
// want being the verified header's ConsensusHash (nil: no hash check, for
// callers that check it later). It returns the params, the indexes of
// the votes that are provably wrong (rule 1), and an error wrapping
// ErrProviderTransient (with ErrProvidersDisagree for rule 2) or
// ErrHeightNotAvailable (no source has the height yet).
func decideParams(height int64, want []byte, votes []paramsVote, need int) (types.ConsensusParams, []int, error) {
	var (
		wrong    []int
		problems []string
		failures []error
		camps    []paramsCamp // the valid answers, grouped by identical encoding
	)
	for i, v := range votes {
		if v.err != nil {
			failures = append(failures, v.err)
			continue
		}
		enc, problem := checkParams(v.params, want)
		if problem != "" {
			wrong = append(wrong, i)
			problems = append(problems, v.source+": "+problem)
			continue
		}
		camps = joinCamp(camps, v, enc)
	}
	if len(camps) > 1 {
		return types.ConsensusParams{}, wrong, fmt.Errorf("%w: %w: consensus params at height %d: sources "+
			"disagree on fields the header's params hash does not cover (%s): no header commits to these "+
			"fields, so no vote can settle them; refusing to install any", ErrProviderTransient,
			ErrProvidersDisagree, height, describeCamps(camps))
	}
	what := fmt.Sprintf("consensus params at height %d", height)
	switch {
	case len(camps) == 1 && len(camps[0].sources) >= need:
		return camps[0].params, wrong, nil
	case len(camps) == 1:
		return types.ConsensusParams{}, wrong, fmt.Errorf("%w: %s: only %d of %d sources returned params "+
			"matching the header, %d needed to cross-check the fields its hash does not cover: %w",
			ErrProviderTransient, what, len(camps[0].sources), len(votes), need,
			errors.Join(append(stringErrs(problems), failures...)...))
	case len(problems) > 0:
		return types.ConsensusParams{}, wrong, fmt.Errorf("%w: %w: %s: header %d commits to params hash %X, "+
			"but: %s", ErrProviderTransient, ErrProvidersDisagree, what, height, want, strings.Join(problems, "; "))
	}
	err := errors.Join(failures...)
	if err == nil {
		err = errors.New("no source answered")
	}
	if errors.Is(err, provider.ErrHeightTooHigh) || errors.Is(err, provider.ErrLightBlockNotFound) {
		return types.ConsensusParams{}, wrong, fmt.Errorf("%w: %s: no source has them yet: %w",
			ErrHeightNotAvailable, what, err)
	}
	// However a source fails, the params exist (the header commits to
	// them); the source did not deliver. That says nothing about the
	// snapshot.
	return types.ConsensusParams{}, wrong, fmt.Errorf("%w: %s: %w", ErrProviderTransient, what, err)
}

// checkParams returns the canonical encoding of params, or why they are
// provably wrong: a hash other than want (when set), or invalid params.
func checkParams(params types.ConsensusParams, want []byte) ([]byte, string) {
	if got := params.Hash(); want != nil && !bytes.Equal(got, want) {
		return nil, fmt.Sprintf("params hash to %X", got)
	}
	if err := params.ValidateBasic(); err != nil {
		return nil, err.Error()
	}
	pb := params.ToProto()
	enc, err := pb.Marshal()
	if err != nil {
		return nil, err.Error()
	}
	return enc, ""
}

// paramsCamp is the sources that sent one set of params.
type paramsCamp struct {
	enc     []byte
	params  types.ConsensusParams
	sources []string
}

// joinCamp adds v (encoded as enc) to the camp sending the same params,
// or opens a new one.
func joinCamp(camps []paramsCamp, v paramsVote, enc []byte) []paramsCamp {
	for i := range camps {
		if bytes.Equal(camps[i].enc, enc) {
			camps[i].sources = append(camps[i].sources, v.source)
			return camps
		}
	}
	p := v.params
	p.Validator.PubKeyTypes = slices.Clone(p.Validator.PubKeyTypes) // the only reference field
	return append(camps, paramsCamp{enc: enc, params: p, sources: []string{v.source}})
}

// describeCamps names who sent what: "peer a, peer b sent {...}; peer c
// sent {...}".
func describeCamps(camps []paramsCamp) string {
	parts := make([]string, len(camps))
	for i, c := range camps {
		parts[i] = fmt.Sprintf("%s sent %v", strings.Join(c.sources, ", "), c.params)
	}
	return strings.Join(parts, "; ")
}

func stringErrs(ss []string) []error {
	out := make([]error, len(ss))
	for i, s := range ss {
		out[i] = errors.New(s)
	}
	return out
}

// ParamsSource fetches the consensus params in force at a height. Sources
// need not be trusted: the light state provider accepts params only as
// the quorum rule above allows. Errors follow the light provider
// conventions (wrap provider.ErrHeightTooHigh when the height does not
// exist yet, provider.ErrNoResponse or a net.Error when the source is
// unavailable).
type ParamsSource interface {
	ConsensusParams(ctx context.Context, height int64) (types.ConsensusParams, error)
}

// paramsSources is several sources, every one of which is asked (one
// vote each). Pass one as the ParamsSource of newLightStateProvider.
type paramsSources []ParamsSource

// ConsensusParams implements ParamsSource with the first source that
// answers (without any check); the light state provider asks every source
// instead (see poll).
func (s paramsSources) ConsensusParams(ctx context.Context, height int64) (types.ConsensusParams, error) {
	var errs []error
	for _, src := range s {
		p, err := src.ConsensusParams(ctx, height)
		if err == nil {
			return p, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return types.ConsensusParams{}, errors.New("no params sources")
	}
	return types.ConsensusParams{}, errors.Join(errs...)
}

// poll asks every source at once, each within timeout, and returns their
// votes in the sources' order.
func (s paramsSources) poll(ctx context.Context, height int64, timeout time.Duration) []paramsVote {
	votes := make([]paramsVote, len(s))
	done := make(chan struct{}, len(s))
	for i, src := range s {
		go func() {
			defer func() { done <- struct{}{} }()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			p, err := src.ConsensusParams(pctx, height)
			votes[i] = paramsVote{source: sourceName(i, src), params: p, err: err}
		}()
	}
	for range s {
		<-done // each call ends within timeout (or with ctx)
	}
	return votes
}

func sourceName(i int, src ParamsSource) string {
	if st, ok := src.(fmt.Stringer); ok {
		return st.String()
	}
	return fmt.Sprintf("source %d", i)
}

// consensusParams fetches the params in force at current's height from
// the provider's params sources and decides with decideParams.
func (p *lightStateProvider) consensusParams(ctx context.Context, current *types.LightBlock) (types.ConsensusParams, error) {
	sources, ok := p.params.(paramsSources)
	if !ok {
		sources = paramsSources{p.params}
	}
	votes := sources.poll(ctx, current.Height, p.timeout)
	params, _, err := decideParams(current.Height, current.ConsensusHash, votes, min(2, len(sources)))
	if err != nil && ctx.Err() != nil {
		return types.ConsensusParams{}, fmt.Errorf("%w: fetching the consensus params at height %d: %w",
			ErrProviderTransient, current.Height, context.Cause(ctx))
	}
	return params, err
}

const (
	// maxParamsPeers caps the peers asked for consensus params at once.
	// Every one that answers must agree.
	maxParamsPeers = 8
	// paramsQuorum is how many distinct peers must send params, all
	// identical.
	paramsQuorum = 2
	// paramsBackoff and paramsMaxBackoff shape the jittered exponential
	// wait between rounds of params requests.
	paramsBackoff    = 100 * time.Millisecond
	paramsMaxBackoff = 2 * time.Second
)

// fetchParams asks peers speaking 0x63 for the consensus params at height
// (up to maxParamsPeers at once, those in prefer first), waits for every
// one asked to answer or time out, and decides with decideParams: a peer
// whose params do not hash to want (when want is set) is punished and left
// out; the others must all agree, and at least paramsQuorum must answer.
// Too few answers: it asks again (other peers first, with a jittered
// exponential backoff) until ctx ends. Errors: disagreement wraps
// ErrProvidersDisagree (returned at once); ctx ending wraps
// provider.ErrNoResponse and ctx.Err().
func (r *Reactor) fetchParams(ctx context.Context, height int64, want []byte, prefer []p2p.ID) (types.ConsensusParams, error) {
	pp := &paramsPoll{r: r, height: height, want: want, prefer: prefer, timeout: r.cfg.lightBlockTimeout(),
		sink: make(chan response, maxParamsPeers), voted: make(map[p2p.ID]bool)}
	for round := 0; ; round++ {
		changed := r.peers.changed()
		if err := pp.round(ctx); err != nil {
			return types.ConsensusParams{}, paramsErr(height, err, pp.lastErr)
		}
		params, _, err := decideParams(height, want, pp.votes, paramsQuorum)
		if err == nil {
			return params, nil
		}
		if errors.Is(err, ErrProvidersDisagree) && countValid(pp.votes, want) > 1 {
			r.logger.Info("Peers disagree on consensus params the header does not commit to",
				"height", height, "peers", len(pp.votes))
			return types.ConsensusParams{}, err
		}
		pp.lastErr = err
		backoff := min(paramsMaxBackoff, paramsBackoff<<min(round, 16))
		backoff = backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return types.ConsensusParams{}, paramsErr(height, ctx.Err(), pp.lastErr)
		}
	}
}

// paramsPoll is one fetchParams: the votes gathered so far.
type paramsPoll struct {
	r       *Reactor
	height  int64
	want    []byte
	prefer  []p2p.ID
	timeout time.Duration
	sink    chan response // room for one round's requests
	voted   map[p2p.ID]bool
	votes   []paramsVote
	lastErr error
}

// round asks every peer speaking 0x63 that has not answered yet (up to
// maxParamsPeers) and waits until each answered or timed out. It returns
// ctx.Err() if ctx ended first (its requests are then cancelled).
func (pp *paramsPoll) round(ctx context.Context) error {
	var outstanding []requestKey
	defer func() {
		for _, key := range outstanding {
			pp.r.dispatcher.cancel(key, pp.sink)
		}
	}()
	var ask []p2p.ID // silent peers are asked again
	for _, id := range paramsCandidates(pp.r.peers.capable(ParamsChannel), pp.prefer) {
		if !pp.voted[id] {
			ask = append(ask, id)
		}
	}
	for _, id := range ask[:min(maxParamsPeers, len(ask))] {
		key := requestKey{peer: id, kind: kindParams, height: pp.height}
		if err := pp.r.dispatcher.start(key, pp.timeout, pp.sink); err != nil {
			pp.lastErr = err
			continue
		}
		outstanding = append(outstanding, key)
	}
	for len(outstanding) > 0 {
		select {
		case resp := <-pp.sink:
			outstanding = removeKey(outstanding, resp.key)
			pp.take(resp)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// take records one outcome; a peer whose params contradict the verified
// header is punished (its vote is then left out by decideParams).
func (pp *paramsPoll) take(resp response) {
	if resp.err != nil {
		pp.lastErr = resp.err
		return
	}
	peer := resp.key.peer
	pp.voted[peer] = true
	pp.votes = append(pp.votes, paramsVote{source: "peer " + string(peer), params: resp.params})
	if got := resp.params.Hash(); pp.want != nil && !bytes.Equal(got, pp.want) {
		err := fmt.Errorf("%w: peer %s sent consensus params hashing to %X, header %d commits to %X",
			ErrVerifyFailed, peer, got, pp.height, pp.want)
		pp.r.punish(peer, fmt.Errorf("%w: %w", ErrPeerMisbehaved, err))
	}
}

// countValid counts the votes that answered with params hashing to want.
func countValid(votes []paramsVote, want []byte) int {
	n := 0
	for _, v := range votes {
		if v.err == nil && (want == nil || bytes.Equal(v.params.Hash(), want)) {
			n++
		}
	}
	return n
}

func paramsErr(height int64, ctxErr, last error) error {
	if last == nil {
		last = errors.New("no peer serves consensus params (channel 0x63)")
	}
	return fmt.Errorf("%w: consensus params at height %d from peers: %w (last failure: %w)",
		provider.ErrNoResponse, height, ctxErr, last)
}

// paramsCandidates orders the peers speaking 0x63: those in prefer first.
func paramsCandidates(capable, prefer []p2p.ID) []p2p.ID {
	in := make(map[p2p.ID]bool, len(capable))
	for _, id := range capable {
		in[id] = true
	}
	out := make([]p2p.ID, 0, len(capable))
	seen := make(map[p2p.ID]bool, len(capable))
	for _, id := range prefer {
		if in[id] && !seen[id] {
			out = append(out, id)
			seen[id] = true
		}
	}
	for _, id := range capable {
		if !seen[id] {
			out = append(out, id)
		}
	}
	return out
}

func removeKey(keys []requestKey, key requestKey) []requestKey {
	for i, k := range keys {
		if k == key {
			return append(keys[:i], keys[i+1:]...)
		}
	}
	return keys
}
