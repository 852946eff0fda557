// Package chaingen generates real signed CometBFT v0.40 chains for tests:
// ed25519 validator keys (deterministic from the chain ID and a seed),
// commits signed by the validators, validator-set and consensus-params
// changes at chosen heights, chosen app hashes, and an initial height
// above 1 if wanted.
//
// The chain follows CometBFT's rules wherever a verifier or a store looks:
//
//   - header h carries ValidatorsHash of the set at h, NextValidatorsHash of
//     the set at h+1, ConsensusHash of the params in effect at h, the chosen
//     AppHash(h), LastBlockID and LastCommitHash of h-1, LastResultsHash of
//     an empty block, and the round-0 proposer of the set at h;
//   - the set at h+1 is the set at h with its proposer priorities
//     incremented once; a change at c is applied to the set at c-1 with
//     UpdateWithChangeSet and then incremented, as CometBFT does for
//     validator updates returned by FinalizeBlock(c-2);
//   - commit h is signed (precommits, round 0) by every validator of the set
//     at h, in set order, with timestamp Time(h+1): header h+1's time is the
//     BFT time of commit h. Times increase by BlockInterval;
//   - blocks are real types.Block values with empty data and evidence, so
//     their hash and part set header are the real ones.
//
// Everything is generated and cached by New; accessors return copies, so
// callers may modify what they get.
package chaingen

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cometbft/cometbft/crypto"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/crypto/tmhash"
	"github.com/cometbft/cometbft/light"
	cmtstate "github.com/cometbft/cometbft/proto/tendermint/state"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	cmtversion "github.com/cometbft/cometbft/proto/tendermint/version"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"
)

// ErrOutOfRange is returned for heights the chain does not have.
var ErrOutOfRange = errors.New("chaingen: height out of range")

// Power is the voting power of every generated validator.
const Power = 10

// Options describe the chain.
type Options struct {
	ChainID       string // default "test-chain"
	InitialHeight int64  // default 1
	Height        int64  // last height generated (>= InitialHeight)
	Validators    int    // initial validator count (default 4)
	// ValSetChanges: from height h on, the set has this many validators:
	// about half of the previous set stays, fresh keys fill the rest. A
	// change height must be >= InitialHeight+2 (the earliest a validator
	// update can take effect); changes beyond Height+2 are ignored.
	ValSetChanges map[int64]int
	// ConsensusParams in effect from the initial height (default
	// types.DefaultConsensusParams(), with Version.App = AppVersion).
	ConsensusParams *types.ConsensusParams
	// ParamsChanges: from height h on (h > InitialHeight), these params
	// are in effect (header h's ConsensusHash is their hash).
	ParamsChanges map[int64]types.ConsensusParams
	// AppHash gives the AppHash to put in the header at height (the app
	// state after height-1). Default: a hash of the height.
	AppHash       func(height int64) []byte
	StartTime     time.Time     // time of the initial block (default 2026-01-01 UTC)
	BlockInterval time.Duration // default 1s
	// AppVersion sets Version.App of the default params (default 1) and
	// so the app version in every header. Ignored if ConsensusParams is
	// given with a non-zero Version.App.
	AppVersion uint64
	// Seed varies the validator keys (which are deterministic from the
	// chain ID and the seed: equal Options give equal chains).
	Seed int64
	// Absent, if set, leaves validator index's signature out of commit
	// height (BlockIDFlagAbsent). Keep more than 2/3 of the power signing.
	Absent func(height int64, index int) bool
}

// Chain is a generated chain. Safe for concurrent use.
type Chain struct {
	opts      Options
	keys      []crypto.PrivKey          // key pool, in creation order
	byAddr    map[string]crypto.PrivKey // address -> key
	vals      map[int64]*types.ValidatorSet
	params    []paramsFrom // sorted by height
	blocks    map[int64]*types.Block
	parts     map[int64]*types.PartSet
	commits   map[int64]*types.Commit
	valChange []int64 // sorted change heights (applied ones)
}

type paramsFrom struct {
	height int64
	params types.ConsensusParams
}

// New generates the chain: blocks and commits for heights
// InitialHeight..Height and validator sets up to Height+2.
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
	if opts.AppHash == nil {
		opts.AppHash = func(h int64) []byte { return tmhash.Sum([]byte(fmt.Sprintf("app-%d", h))) }
	}
	if opts.Height < opts.InitialHeight {
		return nil, fmt.Errorf("chaingen: height %d below initial height %d", opts.Height, opts.InitialHeight)
	}
	c := &Chain{
		opts:    opts,
		byAddr:  make(map[string]crypto.PrivKey),
		vals:    make(map[int64]*types.ValidatorSet),
		blocks:  make(map[int64]*types.Block),
		parts:   make(map[int64]*types.PartSet),
		commits: make(map[int64]*types.Commit),
	}
	if err := c.makeParams(); err != nil {
		return nil, err
	}
	if err := c.makeValidatorSets(); err != nil {
		return nil, err
	}
	for h := opts.InitialHeight; h <= opts.Height; h++ {
		if err := c.makeBlock(h); err != nil {
			return nil, fmt.Errorf("chaingen: height %d: %w", h, err)
		}
	}
	return c, nil
}

func (c *Chain) makeParams() error {
	var base types.ConsensusParams
	if c.opts.ConsensusParams != nil {
		base = *c.opts.ConsensusParams
	} else {
		base = *types.DefaultConsensusParams()
	}
	if base.Version.App == 0 {
		base.Version.App = max(c.opts.AppVersion, 1)
	}
	if err := base.ValidateBasic(); err != nil {
		return fmt.Errorf("chaingen: consensus params: %w", err)
	}
	c.params = []paramsFrom{{c.opts.InitialHeight, base}}
	heights := make([]int64, 0, len(c.opts.ParamsChanges))
	for h := range c.opts.ParamsChanges {
		heights = append(heights, h)
	}
	slices.Sort(heights)
	for _, h := range heights {
		p := c.opts.ParamsChanges[h]
		if h <= c.opts.InitialHeight {
			return fmt.Errorf("chaingen: params change at %d: not after the initial height", h)
		}
		if err := p.ValidateBasic(); err != nil {
			return fmt.Errorf("chaingen: params change at %d: %w", h, err)
		}
		c.params = append(c.params, paramsFrom{h, p})
	}
	return nil
}

// newKey adds a deterministic key to the pool.
func (c *Chain) newKey() crypto.PrivKey {
	secret := fmt.Sprintf("chaingen/%s/%d/%d", c.opts.ChainID, c.opts.Seed, len(c.keys))
	k := ed25519.GenPrivKeyFromSecret([]byte(secret))
	c.keys = append(c.keys, k)
	c.byAddr[string(k.PubKey().Address())] = k
	return k
}

func (c *Chain) makeValidatorSets() error {
	first := c.opts.InitialHeight
	last := c.opts.Height + 2
	var changes []int64
	for h, n := range c.opts.ValSetChanges {
		switch {
		case h < first+2:
			return fmt.Errorf("chaingen: validator-set change at %d: the earliest possible is %d", h, first+2)
		case n <= 0:
			return fmt.Errorf("chaingen: validator-set change at %d to %d validators", h, n)
		case h <= last:
			changes = append(changes, h)
		}
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i] < changes[j] })
	c.valChange = changes

	// The current members, as keys, in the order they joined.
	var members []crypto.PrivKey
	vals := make([]*types.Validator, 0, c.opts.Validators)
	for i := 0; i < c.opts.Validators; i++ {
		k := c.newKey()
		members = append(members, k)
		vals = append(vals, types.NewValidator(k.PubKey(), Power))
	}
	set := types.NewValidatorSet(vals) // as sm.MakeGenesisState builds it
	set.GetProposer()                  // cache the proposer: later reads do not write
	c.vals[first] = set
	for h := first + 1; h <= last; h++ {
		next := set.Copy()
		if n, ok := c.opts.ValSetChanges[h]; ok {
			// Keep the newer half (at least one), add fresh keys up to n.
			keep := min(n, max(1, (len(members)+1)/2))
			stay, leave := members[len(members)-keep:], members[:len(members)-keep]
			var updates []*types.Validator
			for _, k := range leave {
				updates = append(updates, types.NewValidator(k.PubKey(), 0))
			}
			members = slices.Clone(stay)
			for len(members) < n {
				k := c.newKey()
				members = append(members, k)
				updates = append(updates, types.NewValidator(k.PubKey(), Power))
			}
			if err := next.UpdateWithChangeSet(updates); err != nil {
				return fmt.Errorf("chaingen: validator-set change at %d: %w", h, err)
			}
		}
		next.IncrementProposerPriority(1)
		next.GetProposer()
		c.vals[h] = next
		set = next
	}
	return nil
}

// sign makes the commit of (h, id) signed by the set at h at time ts.
func (c *Chain) sign(h int64, id types.BlockID, ts time.Time) (*types.Commit, error) {
	vals := c.vals[h]
	commit := &types.Commit{Height: h, Round: 0, BlockID: id, Signatures: make([]types.CommitSig, vals.Size())}
	for i, v := range vals.Validators {
		if c.opts.Absent != nil && c.opts.Absent(h, i) {
			commit.Signatures[i] = types.NewCommitSigAbsent()
			continue
		}
		vote := &types.Vote{
			Type: cmtproto.PrecommitType, Height: h, Round: 0, BlockID: id, Timestamp: ts,
			ValidatorAddress: v.Address, ValidatorIndex: int32(i),
		}
		key, ok := c.byAddr[string(v.Address)]
		if !ok {
			return nil, fmt.Errorf("no key for validator %X", v.Address)
		}
		sig, err := key.Sign(types.VoteSignBytes(c.opts.ChainID, vote.ToProto()))
		if err != nil {
			return nil, err
		}
		commit.Signatures[i] = types.CommitSig{
			BlockIDFlag: types.BlockIDFlagCommit, ValidatorAddress: v.Address, Timestamp: ts, Signature: sig,
		}
	}
	return commit, nil
}

// header fills the header of a block at h.
func (c *Chain) header(h int64, lastID types.BlockID) types.Header {
	params := c.paramsAt(h)
	var hd types.Header
	hd.Height = h
	hd.Populate(
		cmtversion.Consensus{Block: version.BlockProtocol, App: params.Version.App},
		c.opts.ChainID, c.Time(h), lastID,
		c.vals[h].Hash(), c.vals[h+1].Hash(), params.Hash(), c.opts.AppHash(h), sm.TxResultsHash(nil),
		c.vals[h].GetProposer().Address,
	)
	return hd
}

func (c *Chain) makeBlock(h int64) error {
	lastCommit := &types.Commit{} // the initial block's last commit is empty
	var lastID types.BlockID
	if h > c.opts.InitialHeight {
		lastCommit = c.commits[h-1]
		lastID = lastCommit.BlockID
	}
	block := types.MakeBlock(h, nil, lastCommit, nil)
	hd := c.header(h, lastID)
	hd.LastCommitHash, hd.DataHash, hd.EvidenceHash = block.LastCommitHash, block.DataHash, block.EvidenceHash
	block.Header = hd
	ps, err := block.MakePartSet(types.BlockPartSizeBytes)
	if err != nil {
		return err
	}
	id := types.BlockID{Hash: block.Hash(), PartSetHeader: ps.Header()}
	commit, err := c.sign(h, id, c.Time(h+1))
	if err != nil {
		return err
	}
	c.blocks[h], c.parts[h], c.commits[h] = block, ps, commit
	return nil
}

// ChainID returns the chain ID.
func (c *Chain) ChainID() string { return c.opts.ChainID }

// InitialHeight returns the first height.
func (c *Chain) InitialHeight() int64 { return c.opts.InitialHeight }

// Height returns the last height.
func (c *Chain) Height() int64 { return c.opts.Height }

// Has reports whether the chain has a block at h.
func (c *Chain) Has(h int64) bool { return h >= c.opts.InitialHeight && h <= c.opts.Height }

// Time returns the header time at h.
func (c *Chain) Time(h int64) time.Time {
	return c.opts.StartTime.Add(time.Duration(h-c.opts.InitialHeight) * c.opts.BlockInterval)
}

// ValSetChanges returns the heights at which the validator set changes
// (up to Height+2), ascending.
func (c *Chain) ValSetChanges() []int64 { return slices.Clone(c.valChange) }

// Block returns (a copy of) the block at h, or nil beyond the chain.
func (c *Chain) Block(h int64) *types.Block {
	b, ok := c.blocks[h]
	if !ok {
		return nil
	}
	pb, err := b.ToProto()
	if err != nil {
		panic(err)
	}
	var cp cmtproto.Block
	deepCopy(pb, &cp)
	out, err := types.BlockFromProto(&cp)
	if err != nil {
		panic(err)
	}
	return out
}

// deepCopy copies a proto message through its encoding (ToProto and
// FromProto alone share byte slices).
func deepCopy(from interface{ Marshal() ([]byte, error) }, to interface{ Unmarshal([]byte) error }) {
	bz, err := from.Marshal()
	if err != nil {
		panic(err)
	}
	if err := to.Unmarshal(bz); err != nil {
		panic(err)
	}
}

// PartSet returns the part set of the block at h, or nil.
func (c *Chain) PartSet(h int64) *types.PartSet { return c.parts[h] }

// BlockID returns the block ID of h (zero beyond the chain).
func (c *Chain) BlockID(h int64) types.BlockID {
	if cm, ok := c.commits[h]; ok {
		return cm.BlockID
	}
	return types.BlockID{}
}

// Commit returns (a copy of) the commit of h, or nil.
func (c *Chain) Commit(h int64) *types.Commit {
	cm, ok := c.commits[h]
	if !ok {
		return nil
	}
	var cp cmtproto.Commit
	deepCopy(cm.ToProto(), &cp)
	out, err := types.CommitFromProto(&cp)
	if err != nil {
		panic(err)
	}
	return out
}

// ValidatorSet returns a copy of the validator set at h (its validators
// are copies; their keys and addresses are shared: do not modify those
// bytes), for InitialHeight <= h <= Height+2, else nil.
func (c *Chain) ValidatorSet(h int64) *types.ValidatorSet {
	if v, ok := c.vals[h]; ok {
		return v.Copy()
	}
	return nil
}

// Signers returns the private validators of the set at h, in set order
// (to sign forged blocks, votes or evidence), or nil.
func (c *Chain) Signers(h int64) []types.PrivValidator {
	set, ok := c.vals[h]
	if !ok {
		return nil
	}
	out := make([]types.PrivValidator, 0, set.Size())
	for _, v := range set.Validators {
		out = append(out, types.NewMockPVWithParams(c.byAddr[string(v.Address)], false, false))
	}
	return out
}

func (c *Chain) paramsAt(h int64) types.ConsensusParams {
	p := c.params[0].params
	for _, pf := range c.params[1:] {
		if pf.height > h {
			break
		}
		p = pf.params
	}
	return p
}

// lastParamsChange is the height from which the params at h are in effect.
func (c *Chain) lastParamsChange(h int64) int64 {
	at := c.params[0].height
	for _, pf := range c.params[1:] {
		if pf.height > h {
			break
		}
		at = pf.height
	}
	return at
}

// Params returns the consensus params in effect at height (header
// height's ConsensusHash is their hash). Without a height: those at
// Height. (Variadic so that chains without params changes can call
// Params().)
func (c *Chain) Params(height ...int64) types.ConsensusParams {
	h := c.opts.Height
	if len(height) > 0 {
		h = height[0]
	}
	return c.paramsAt(h)
}

// LightBlock returns (a copy of) the light block at h, or nil.
func (c *Chain) LightBlock(h int64) *types.LightBlock {
	b, ok := c.blocks[h]
	if !ok {
		return nil
	}
	hd := b.Header
	return copyLightBlock(&types.LightBlock{
		SignedHeader: &types.SignedHeader{Header: &hd, Commit: c.commits[h]},
		ValidatorSet: c.vals[h],
	})
}

// copyLightBlock deep-copies lb.
func copyLightBlock(lb *types.LightBlock) *types.LightBlock {
	pb, err := lb.ToProto()
	if err != nil {
		panic(err)
	}
	var pb2 cmtproto.LightBlock
	deepCopy(pb, &pb2)
	cp, err := types.LightBlockFromProto(&pb2)
	if err != nil {
		panic(err)
	}
	cp.ValidatorSet.GetProposer()
	return cp
}

// ForgeLightBlock returns the light block at h with its header changed by
// mutate and re-signed by the real validators of h: a valid-looking block
// of a fork (for lunatic or equivocation tests). Nil beyond the chain.
func (c *Chain) ForgeLightBlock(h int64, mutate func(*types.Header)) *types.LightBlock {
	lb := c.LightBlock(h)
	if lb == nil {
		return nil
	}
	mutate(lb.Header)
	id := types.BlockID{Hash: lb.Header.Hash(), PartSetHeader: lb.Commit.BlockID.PartSetHeader}
	commit, err := c.sign(h, id, lb.Commit.Signatures[0].Timestamp)
	if err != nil {
		panic(err)
	}
	lb.Commit = commit
	return lb
}

// Genesis returns the genesis doc of the chain (its AppHash is
// AppHash(InitialHeight)).
func (c *Chain) Genesis() *types.GenesisDoc {
	vals := c.vals[c.opts.InitialHeight]
	gvs := make([]types.GenesisValidator, 0, vals.Size())
	for i, v := range vals.Validators {
		gvs = append(gvs, types.GenesisValidator{
			Address: v.Address, PubKey: v.PubKey, Power: v.VotingPower, Name: fmt.Sprintf("val-%d", i),
		})
	}
	params := c.paramsAt(c.opts.InitialHeight)
	return &types.GenesisDoc{
		GenesisTime: c.opts.StartTime, ChainID: c.opts.ChainID, InitialHeight: c.opts.InitialHeight,
		ConsensusParams: &params, Validators: gvs, AppHash: c.opts.AppHash(c.opts.InitialHeight),
	}
}

// GenesisState returns sm.MakeGenesisState(Genesis()).
func (c *Chain) GenesisState() sm.State {
	s, err := sm.MakeGenesisState(c.Genesis())
	if err != nil {
		panic(err)
	}
	return s
}

// lastValsChange is the height from which the set at h has been the
// current one's ancestor without change (CometBFT's
// LastHeightValidatorsChanged as seen for the set at h).
func (c *Chain) lastValsChange(h int64) int64 {
	at := c.opts.InitialHeight
	for _, ch := range c.valChange {
		if ch > h {
			break
		}
		at = ch
	}
	return at
}

// State returns the state CometBFT has after committing h, for
// InitialHeight <= h <= Height: LastBlockHeight h, LastValidators,
// Validators and NextValidators the sets at h, h+1 and h+2, the params in
// effect at h+1, AppHash = AppHash(h+1), LastResultsHash of an empty
// block, and LastHeightValidatorsChanged/LastHeightConsensusParamsChanged
// as CometBFT computes them. For h < InitialHeight it returns
// GenesisState(). It panics beyond Height.
func (c *Chain) State(h int64) sm.State {
	if h < c.opts.InitialHeight {
		return c.GenesisState()
	}
	if h > c.opts.Height {
		panic(fmt.Sprintf("chaingen: State(%d) beyond height %d", h, c.opts.Height))
	}
	params := c.paramsAt(h + 1)
	st := sm.State{
		Version: cmtstateVersion(params.Version.App),
		ChainID: c.opts.ChainID, InitialHeight: c.opts.InitialHeight,
		LastBlockHeight:                  h,
		LastBlockID:                      c.commits[h].BlockID,
		LastBlockTime:                    c.Time(h),
		LastValidators:                   c.vals[h].Copy(),
		Validators:                       c.vals[h+1].Copy(),
		NextValidators:                   c.vals[h+2].Copy(),
		LastHeightValidatorsChanged:      c.lastValsChange(h + 2),
		ConsensusParams:                  params,
		LastHeightConsensusParamsChanged: c.lastParamsChange(h + 1),
		LastResultsHash:                  sm.TxResultsHash(nil),
		AppHash:                          c.opts.AppHash(h + 1),
	}
	return st
}

func cmtstateVersion(app uint64) cmtstate.Version {
	v := sm.InitStateVersion
	v.Consensus.App = app
	return v
}

// TrustOptions returns light-client trust options rooted at h.
func (c *Chain) TrustOptions(h int64, period time.Duration) light.TrustOptions {
	return light.TrustOptions{Period: period, Height: h, Hash: c.blocks[h].Hash()}
}
