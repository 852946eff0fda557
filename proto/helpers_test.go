package ssproto_test

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/crypto/tmhash"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	cmtversion "github.com/cometbft/cometbft/proto/tendermint/version"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"
	"github.com/stretchr/testify/require"
)

const testChainID = "ssproto-test"

// makeLightBlock builds a valid, signed light block at height with nVals
// validators, deterministically (fixed keys and times).
func makeLightBlock(tb testing.TB, height int64, nVals int) *types.LightBlock {
	tb.Helper()
	pvs := make(map[string]types.PrivValidator, nVals)
	vals := make([]*types.Validator, 0, nVals)
	for i := 0; i < nVals; i++ {
		pv := types.NewMockPVWithParams(ed25519.GenPrivKeyFromSecret([]byte{byte(i), 's', 's'}), false, false)
		pub, err := pv.GetPubKey()
		require.NoError(tb, err)
		pvs[string(pub.Address())] = pv
		vals = append(vals, types.NewValidator(pub, int64(10+i)))
	}
	valSet := types.NewValidatorSet(vals)
	now := time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	header := &types.Header{
		Version:            cmtversion.Consensus{Block: version.BlockProtocol, App: 1},
		ChainID:            testChainID,
		Height:             height,
		Time:               now,
		LastBlockID:        types.BlockID{Hash: tmhash.Sum([]byte("last")), PartSetHeader: types.PartSetHeader{Total: 1, Hash: tmhash.Sum([]byte("lastparts"))}},
		LastCommitHash:     tmhash.Sum([]byte("lastcommit")),
		DataHash:           tmhash.Sum([]byte("data")),
		ValidatorsHash:     valSet.Hash(),
		NextValidatorsHash: valSet.Hash(),
		ConsensusHash:      types.DefaultConsensusParams().Hash(),
		AppHash:            []byte("app hash of any length"),
		LastResultsHash:    tmhash.Sum([]byte("results")),
		EvidenceHash:       tmhash.Sum([]byte("evidence")),
		ProposerAddress:    valSet.Proposer.Address,
	}
	blockID := types.BlockID{Hash: header.Hash(), PartSetHeader: types.PartSetHeader{Total: 1, Hash: tmhash.Sum([]byte("parts"))}}
	voteSet := types.NewVoteSet(testChainID, height, 0, cmtproto.PrecommitType, valSet)
	ordered := make([]types.PrivValidator, 0, nVals) // in validator set order
	for _, v := range valSet.Validators {
		ordered = append(ordered, pvs[string(v.Address)])
	}
	extCommit, err := types.MakeExtCommit(blockID, height, 0, voteSet, ordered, now, false)
	require.NoError(tb, err)
	lb := &types.LightBlock{
		SignedHeader: &types.SignedHeader{Header: header, Commit: extCommit.ToCommit()},
		ValidatorSet: valSet,
	}
	require.NoError(tb, lb.ValidateBasic(testChainID))
	return lb
}

// lightBlockProto is makeLightBlock as a proto, for a LightBlockResponse.
func lightBlockProto(tb testing.TB, height int64, nVals int) *cmtproto.LightBlock {
	tb.Helper()
	p, err := makeLightBlock(tb, height, nVals).ToProto()
	require.NoError(tb, err)
	return p
}

func defaultParamsProto() cmtproto.ConsensusParams {
	return types.DefaultConsensusParams().ToProto()
}

type wireVector struct {
	Name string `json:"name"`
	Hex  string `json:"hex"`
}

// loadVectors reads testdata/wire_vectors.json at the repository root.
func loadVectors(tb testing.TB) []wireVector {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "wire_vectors.json"))
	require.NoError(tb, err)
	var file struct {
		Vectors []wireVector `json:"vectors"`
	}
	require.NoError(tb, json.Unmarshal(raw, &file))
	require.NotEmpty(tb, file.Vectors)
	return file.Vectors
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(tb, err)
	return b
}
