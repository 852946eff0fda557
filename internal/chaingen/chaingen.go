// Package chaingen generates real signed CometBFT v0.40 chains for tests:
// ed25519 validator keys, commits signed by every validator, validator-set
// changes at chosen heights and chosen app hashes.
package chaingen

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cometbft/cometbft/crypto/tmhash"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	cmtversion "github.com/cometbft/cometbft/proto/tendermint/version"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"
)

// Options describe the chain.
type Options struct {
	ChainID       string
	InitialHeight int64 // default 1
	Height        int64 // last height generated
	Validators    int   // initial validator count (default 4)
	// ValSetChanges: from height h on, the set has this many validators,
	// drawn from a fresh window of keys (half of them new).
	ValSetChanges map[int64]int
	// AppHash gives the AppHash to put in the header at height (the app
	// state after height-1). Default: a hash of the height.
	AppHash       func(height int64) []byte
	StartTime     time.Time     // time of the initial block (default 2026-01-01)
	BlockInterval time.Duration // default 1s
	AppVersion    uint64        // default 1
}

// Chain is a generated chain. Safe for concurrent reads.
type Chain struct {
	opts    Options
	params  types.ConsensusParams
	keys    []types.PrivValidator
	vals    map[int64]*types.ValidatorSet
	blocks  map[int64]*types.Block
	parts   map[int64]*types.PartSet
	commits map[int64]*types.Commit
}

// New generates the chain: heights InitialHeight..Height, with commits for
// every height and validator sets up to Height+1.
func New(opts Options) (*Chain, error) {
	if opts.InitialHeight <= 0 {
		opts.InitialHeight = 1
	}
	if opts.Validators <= 0 {
		opts.Validators = 4
	}
	if opts.ChainID == "" {
		opts.ChainID = "test-chain"
	}
	if opts.StartTime.IsZero() {
		opts.StartTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if opts.BlockInterval <= 0 {
		opts.BlockInterval = time.Second
	}
	if opts.AppVersion == 0 {
		opts.AppVersion = 1
	}
	if opts.AppHash == nil {
		opts.AppHash = func(h int64) []byte { return tmhash.Sum([]byte(fmt.Sprintf("app-%d", h))) }
	}
	if opts.Height < opts.InitialHeight {
		return nil, fmt.Errorf("height %d below initial height %d", opts.Height, opts.InitialHeight)
	}
	c := &Chain{
		opts:    opts,
		params:  *types.DefaultConsensusParams(),
		vals:    make(map[int64]*types.ValidatorSet),
		blocks:  make(map[int64]*types.Block),
		parts:   make(map[int64]*types.PartSet),
		commits: make(map[int64]*types.Commit),
	}
	c.params.Version.App = opts.AppVersion
	if err := c.makeValidatorSets(); err != nil {
		return nil, err
	}
	for h := opts.InitialHeight; h <= opts.Height; h++ {
		if err := c.makeBlock(h); err != nil {
			return nil, fmt.Errorf("height %d: %w", h, err)
		}
	}
	return c, nil
}

func (c *Chain) makeValidatorSets() error {
	changes := make([]int64, 0, len(c.opts.ValSetChanges))
	maxSize := c.opts.Validators
	for h, n := range c.opts.ValSetChanges {
		changes = append(changes, h)
		maxSize = max(maxSize, n)
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i] < changes[j] })
	// A key pool large enough for every window.
	for i := 0; i < maxSize+len(changes)*maxSize; i++ {
		c.keys = append(c.keys, types.NewMockPV())
	}
	window := func(epoch, n int) (*types.ValidatorSet, error) {
		start := epoch * max(1, n/2) // half of the previous window stays
		vs := make([]*types.Validator, 0, n)
		for i := start; i < start+n; i++ {
			pk, err := c.keys[i].GetPubKey()
			if err != nil {
				return nil, err
			}
			vs = append(vs, types.NewValidator(pk, 10))
		}
		return types.NewValidatorSet(vs), nil
	}
	set, err := window(0, c.opts.Validators)
	if err != nil {
		return err
	}
	epoch := 0
	for h := c.opts.InitialHeight; h <= c.opts.Height+2; h++ {
		if n, ok := c.opts.ValSetChanges[h]; ok && h > c.opts.InitialHeight {
			epoch++
			if set, err = window(epoch, n); err != nil {
				return err
			}
		} else if h > c.opts.InitialHeight {
			set = set.CopyIncrementProposerPriority(1)
		}
		c.vals[h] = set
	}
	return nil
}

func (c *Chain) privsFor(set *types.ValidatorSet) []types.PrivValidator {
	byAddr := make(map[string]types.PrivValidator, len(c.keys))
	for _, k := range c.keys {
		pk, _ := k.GetPubKey()
		byAddr[string(pk.Address())] = k
	}
	out := make([]types.PrivValidator, 0, set.Size())
	for _, v := range set.Validators {
		out = append(out, byAddr[string(v.Address)])
	}
	return out
}

func (c *Chain) makeBlock(h int64) error {
	lastCommit := &types.Commit{} // the initial block's last commit is empty
	var lastID types.BlockID
	if h > c.opts.InitialHeight {
		lastCommit = c.commits[h-1]
		lastID = lastCommit.BlockID
	}
	block := types.MakeBlock(h, nil, lastCommit, nil)
	vals := c.vals[h]
	block.Header.Populate(
		cmtversion.Consensus{Block: version.BlockProtocol, App: c.opts.AppVersion},
		c.opts.ChainID, c.Time(h), lastID,
		vals.Hash(), c.vals[h+1].Hash(), c.params.Hash(), c.opts.AppHash(h), tmhash.Sum(nil),
		vals.GetProposer().Address,
	)
	ps, err := block.MakePartSet(types.BlockPartSizeBytes)
	if err != nil {
		return err
	}
	id := types.BlockID{Hash: block.Hash(), PartSetHeader: ps.Header()}
	voteSet := types.NewVoteSet(c.opts.ChainID, h, 0, cmtproto.PrecommitType, vals)
	ext, err := types.MakeExtCommit(id, h, 0, voteSet, c.privsFor(vals), c.Time(h).Add(c.opts.BlockInterval/2), false)
	if err != nil {
		return err
	}
	c.blocks[h], c.parts[h], c.commits[h] = block, ps, ext.ToCommit()
	return nil
}

// ChainID returns the chain ID.
func (c *Chain) ChainID() string { return c.opts.ChainID }

// InitialHeight returns the first height.
func (c *Chain) InitialHeight() int64 { return c.opts.InitialHeight }

// Height returns the last height.
func (c *Chain) Height() int64 { return c.opts.Height }

// Time returns the header time at h.
func (c *Chain) Time(h int64) time.Time {
	return c.opts.StartTime.Add(time.Duration(h-c.opts.InitialHeight) * c.opts.BlockInterval)
}

// Block returns the block at h (nil beyond the chain).
func (c *Chain) Block(h int64) *types.Block { return c.blocks[h] }

// Commit returns the commit of h.
func (c *Chain) Commit(h int64) *types.Commit { return c.commits[h] }

// ValidatorSet returns the validator set at h (up to Height+2).
func (c *Chain) ValidatorSet(h int64) *types.ValidatorSet { return c.vals[h] }

// Params returns the consensus params (constant over the chain).
func (c *Chain) Params() types.ConsensusParams { return c.params }

// LightBlock returns the light block at h, or nil.
func (c *Chain) LightBlock(h int64) *types.LightBlock {
	b, ok := c.blocks[h]
	if !ok {
		return nil
	}
	return &types.LightBlock{
		SignedHeader: &types.SignedHeader{Header: &b.Header, Commit: c.commits[h]},
		ValidatorSet: c.vals[h],
	}
}

// Genesis returns a genesis doc for the chain.
func (c *Chain) Genesis() *types.GenesisDoc {
	vals := c.vals[c.opts.InitialHeight]
	gvs := make([]types.GenesisValidator, 0, vals.Size())
	for _, v := range vals.Validators {
		gvs = append(gvs, types.GenesisValidator{Address: v.Address, PubKey: v.PubKey, Power: v.VotingPower})
	}
	params := c.params
	return &types.GenesisDoc{
		GenesisTime: c.opts.StartTime, ChainID: c.opts.ChainID, InitialHeight: c.opts.InitialHeight,
		ConsensusParams: &params, Validators: gvs,
	}
}

// GenesisState returns sm.MakeGenesisState of Genesis.
func (c *Chain) GenesisState() sm.State {
	s, err := sm.MakeGenesisState(c.Genesis())
	if err != nil {
		panic(err)
	}
	return s
}

// State returns the state CometBFT has after committing h (h < Height).
func (c *Chain) State(h int64) sm.State {
	next := c.blocks[h+1]
	return sm.State{
		Version:                          sm.InitStateVersion,
		ChainID:                          c.opts.ChainID,
		InitialHeight:                    c.opts.InitialHeight,
		LastBlockHeight:                  h,
		LastBlockID:                      c.commits[h].BlockID,
		LastBlockTime:                    c.blocks[h].Time,
		NextValidators:                   c.vals[h+2],
		Validators:                       c.vals[h+1],
		LastValidators:                   c.vals[h],
		LastHeightValidatorsChanged:      h + 1,
		ConsensusParams:                  c.params,
		LastHeightConsensusParamsChanged: h + 1,
		LastResultsHash:                  next.LastResultsHash,
		AppHash:                          next.AppHash,
	}
}

// Populate saves blocks from..to into bs (with their seen commits) and the
// validator sets and params of those heights into ss, ending with ss's
// current state at to (to must be below Height).
func (c *Chain) Populate(bs *store.BlockStore, ss sm.Store, from, to int64) error {
	for h := from; h <= to; h++ {
		bs.SaveBlock(c.blocks[h], c.parts[h], c.commits[h])
		st := c.State(h)
		st.Version.Consensus.App = c.opts.AppVersion
		if err := ss.Bootstrap(st); err != nil {
			return err
		}
	}
	return nil
}

// TrustOptions returns light-client trust options rooted at h.
func (c *Chain) TrustOptions(h int64, period time.Duration) light.TrustOptions {
	return light.TrustOptions{Period: period, Height: h, Hash: c.blocks[h].Hash()}
}

// Provider is a light provider backed by the chain, with knobs.
type Provider struct {
	c      *Chain
	mtx    sync.Mutex
	top    int64         // highest height served (default: Height)
	gate   chan struct{} // if set, calls block until closed or ctx ends
	failed error         // if set, every call fails with it
}

// Provider returns a light provider serving the chain.
func (c *Chain) Provider() *Provider { return &Provider{c: c, top: c.opts.Height} }

// SetTop limits the heights served to <= top (the chain "tip").
func (p *Provider) SetTop(top int64) { p.mtx.Lock(); p.top = top; p.mtx.Unlock() }

// Block makes calls block until the gate is closed (nil to unblock).
func (p *Provider) Block(gate chan struct{}) { p.mtx.Lock(); p.gate = gate; p.mtx.Unlock() }

// Fail makes every call fail with err (nil to heal).
func (p *Provider) Fail(err error) { p.mtx.Lock(); p.failed = err; p.mtx.Unlock() }

// ChainID implements provider.Provider.
func (p *Provider) ChainID() string { return p.c.opts.ChainID }

// LightBlock implements provider.Provider.
func (p *Provider) LightBlock(ctx context.Context, h int64) (*types.LightBlock, error) {
	p.mtx.Lock()
	top, gate, failed := p.top, p.gate, p.failed
	p.mtx.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if failed != nil {
		return nil, failed
	}
	if h == 0 {
		h = top
	}
	if h > top {
		return nil, provider.ErrHeightTooHigh
	}
	lb := p.c.LightBlock(h)
	if lb == nil {
		return nil, provider.ErrLightBlockNotFound
	}
	return lb, nil
}

// ReportEvidence implements provider.Provider.
func (p *Provider) ReportEvidence(context.Context, types.Evidence) error { return nil }

// ConsensusParams serves the chain's params (a statesync ParamsSource).
func (p *Provider) ConsensusParams(ctx context.Context, h int64) (types.ConsensusParams, error) {
	if _, err := p.LightBlock(ctx, h); err != nil {
		return types.ConsensusParams{}, err
	}
	return p.c.params, nil
}
