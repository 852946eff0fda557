package tm35compat_test

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
	gogoproto "github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"
	tmss "github.com/tendermint/tendermint/proto/tendermint/statesync"
	tmproto "github.com/tendermint/tendermint/proto/tendermint/types"
	"go.uber.org/goleak"

	ssproto "github.com/statesync/statesync/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const chainID = "tm35-compat"

// marshalOurs encodes an inner ssproto message in its envelope.
func marshalOurs(t *testing.T, m interface{ Wrap() gogoproto.Message }) []byte {
	t.Helper()
	bz, err := gogoproto.Marshal(m.Wrap())
	require.NoError(t, err)
	return bz
}

// decodeTheirs decodes bytes with tendermint v0.35.9's envelope.
func decodeTheirs(t *testing.T, bz []byte) *tmss.Message {
	t.Helper()
	var m tmss.Message
	require.NoError(t, m.Unmarshal(bz))
	return &m
}

// decodeOurs decodes bytes with ours and unwraps.
func decodeOurs(t *testing.T, bz []byte) gogoproto.Message {
	t.Helper()
	var env ssproto.Message
	require.NoError(t, gogoproto.Unmarshal(bz, &env))
	inner, err := env.Unwrap()
	require.NoError(t, err)
	return inner
}

// TestVectors: tendermint v0.35.9 decodes every wire vector and encodes
// what it decoded to the same bytes, except for CometBFT-only fields it
// does not know (ConsensusParams.abci), which it drops.
func TestVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "wire_vectors.json"))
	require.NoError(t, err)
	var file struct {
		Vectors []struct{ Name, Hex string }
	}
	require.NoError(t, json.Unmarshal(raw, &file))
	require.NotEmpty(t, file.Vectors)
	byName := map[string]string{}
	for _, v := range file.Vectors {
		byName[v.Name] = v.Hex
	}
	const withABCI = "ParamsResponse{height:1,consensus_params:{...as above...,abci:{vote_extensions_enable_height:10}}}"
	const withoutABCI = "ParamsResponse{height:1,consensus_params:{block:{22020096,-1},evidence:{100000,48h,1048576},validator:{ed25519},version:{app:1}}}"
	for _, v := range file.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			bz, err := hex.DecodeString(v.Hex)
			require.NoError(t, err)
			m := decodeTheirs(t, bz)
			inner, err := m.Unwrap()
			require.NoError(t, err)
			require.NotNil(t, inner)
			out, err := m.Marshal()
			require.NoError(t, err)
			want := v.Hex
			if v.Name == withABCI {
				want = byName[withoutABCI]
				require.NotEmpty(t, want)
			}
			require.Equal(t, want, hex.EncodeToString(out))
		})
	}
}

func TestRequests(t *testing.T) {
	for _, h := range []uint64{1, 42, 1 << 40} {
		// ours -> theirs
		m := decodeTheirs(t, marshalOurs(t, &ssproto.LightBlockRequest{Height: h}))
		require.Equal(t, h, m.GetLightBlockRequest().GetHeight())
		m = decodeTheirs(t, marshalOurs(t, &ssproto.ParamsRequest{Height: h}))
		require.Equal(t, h, m.GetParamsRequest().GetHeight())

		// theirs -> ours
		theirs := &tmss.Message{}
		require.NoError(t, theirs.Wrap(&tmss.LightBlockRequest{Height: h}))
		bz, err := theirs.Marshal()
		require.NoError(t, err)
		require.Equal(t, &ssproto.LightBlockRequest{Height: h}, decodeOurs(t, bz))
		require.NoError(t, theirs.Wrap(&tmss.ParamsRequest{Height: h}))
		bz, err = theirs.Marshal()
		require.NoError(t, err)
		require.Equal(t, &ssproto.ParamsRequest{Height: h}, decodeOurs(t, bz))
	}
}

// TestSnapshotMessages: messages 1-4 agree with v0.35 too.
func TestSnapshotMessages(t *testing.T) {
	snap := &ssproto.SnapshotsResponse{Height: 9, Format: 2, Chunks: 30, Hash: []byte("hash"), Metadata: []byte("meta")}
	m := decodeTheirs(t, marshalOurs(t, snap)).GetSnapshotsResponse()
	require.Equal(t, tmss.SnapshotsResponse{Height: 9, Format: 2, Chunks: 30, Hash: []byte("hash"), Metadata: []byte("meta")}, *m)
	chunk := &ssproto.ChunkResponse{Height: 9, Format: 2, Index: 29, Chunk: []byte("body")}
	c := decodeTheirs(t, marshalOurs(t, chunk)).GetChunkResponse()
	require.Equal(t, tmss.ChunkResponse{Height: 9, Format: 2, Index: 29, Chunk: []byte("body")}, *c)

	theirs := &tmss.Message{}
	require.NoError(t, theirs.Wrap(&tmss.ChunkResponse{Height: 9, Format: 2, Index: 3, Missing: true}))
	bz, err := theirs.Marshal()
	require.NoError(t, err)
	require.Equal(t, &ssproto.ChunkResponse{Height: 9, Format: 2, Index: 3, Missing: true}, decodeOurs(t, bz))
	require.NoError(t, theirs.Wrap(&tmss.ChunkRequest{Height: 9, Format: 2, Index: 3}))
	bz, err = theirs.Marshal()
	require.NoError(t, err)
	require.Equal(t, &ssproto.ChunkRequest{Height: 9, Format: 2, Index: 3}, decodeOurs(t, bz))
}

// makeLightBlock builds a valid light block with CometBFT v0.40's types.
func makeLightBlock(t *testing.T, height int64, nVals int) *types.LightBlock {
	t.Helper()
	pvs := map[string]types.PrivValidator{}
	vals := make([]*types.Validator, 0, nVals)
	for i := 0; i < nVals; i++ {
		pv := types.NewMockPVWithParams(ed25519.GenPrivKeyFromSecret([]byte{byte(i), 't', 'm'}), false, false)
		pub, err := pv.GetPubKey()
		require.NoError(t, err)
		pvs[string(pub.Address())] = pv
		vals = append(vals, types.NewValidator(pub, int64(100+i)))
	}
	valSet := types.NewValidatorSet(vals)
	now := time.Date(2023, 1, 2, 3, 4, 5, 600, time.UTC)
	header := &types.Header{
		Version:            cmtversion.Consensus{Block: version.BlockProtocol, App: 3},
		ChainID:            chainID,
		Height:             height,
		Time:               now,
		LastBlockID:        types.BlockID{Hash: tmhash.Sum([]byte("last")), PartSetHeader: types.PartSetHeader{Total: 2, Hash: tmhash.Sum([]byte("p"))}},
		LastCommitHash:     tmhash.Sum([]byte("lc")),
		DataHash:           tmhash.Sum([]byte("d")),
		ValidatorsHash:     valSet.Hash(),
		NextValidatorsHash: valSet.Hash(),
		ConsensusHash:      types.DefaultConsensusParams().Hash(),
		AppHash:            []byte("app"),
		LastResultsHash:    tmhash.Sum([]byte("r")),
		EvidenceHash:       tmhash.Sum([]byte("e")),
		ProposerAddress:    valSet.Proposer.Address,
	}
	blockID := types.BlockID{Hash: header.Hash(), PartSetHeader: types.PartSetHeader{Total: 1, Hash: tmhash.Sum([]byte("parts"))}}
	voteSet := types.NewVoteSet(chainID, height, 1, cmtproto.PrecommitType, valSet)
	ordered := make([]types.PrivValidator, 0, nVals)
	for _, v := range valSet.Validators {
		ordered = append(ordered, pvs[string(v.Address)])
	}
	ext, err := types.MakeExtCommit(blockID, height, 1, voteSet, ordered, now, false)
	require.NoError(t, err)
	lb := &types.LightBlock{SignedHeader: &types.SignedHeader{Header: header, Commit: ext.ToCommit()}, ValidatorSet: valSet}
	require.NoError(t, lb.ValidateBasic(chainID))
	return lb
}

// requireSameLightBlock compares every field of a CometBFT v0.40 light
// block proto with a tendermint v0.35 one.
func requireSameLightBlock(t *testing.T, ours *cmtproto.LightBlock, theirs *tmproto.LightBlock) {
	t.Helper()
	require.NotNil(t, theirs)
	oh, th := ours.SignedHeader.Header, theirs.SignedHeader.Header
	require.Equal(t, oh.Version.Block, th.Version.Block)
	require.Equal(t, oh.Version.App, th.Version.App)
	require.Equal(t, oh.ChainID, th.ChainID)
	require.Equal(t, oh.Height, th.Height)
	require.True(t, oh.Time.Equal(th.Time), "%v != %v", oh.Time, th.Time)
	require.Equal(t, oh.LastBlockId.Hash, th.LastBlockId.Hash)
	require.Equal(t, oh.LastBlockId.PartSetHeader.Total, th.LastBlockId.PartSetHeader.Total)
	require.Equal(t, oh.LastBlockId.PartSetHeader.Hash, th.LastBlockId.PartSetHeader.Hash)
	require.Equal(t, oh.LastCommitHash, th.LastCommitHash)
	require.Equal(t, oh.DataHash, th.DataHash)
	require.Equal(t, oh.ValidatorsHash, th.ValidatorsHash)
	require.Equal(t, oh.NextValidatorsHash, th.NextValidatorsHash)
	require.Equal(t, oh.ConsensusHash, th.ConsensusHash)
	require.Equal(t, oh.AppHash, th.AppHash)
	require.Equal(t, oh.LastResultsHash, th.LastResultsHash)
	require.Equal(t, oh.EvidenceHash, th.EvidenceHash)
	require.Equal(t, oh.ProposerAddress, th.ProposerAddress)

	oc, tc := ours.SignedHeader.Commit, theirs.SignedHeader.Commit
	require.Equal(t, oc.Height, tc.Height)
	require.Equal(t, oc.Round, tc.Round)
	require.Equal(t, oc.BlockID.Hash, tc.BlockID.Hash)
	require.Equal(t, oc.BlockID.PartSetHeader.Total, tc.BlockID.PartSetHeader.Total)
	require.Equal(t, oc.BlockID.PartSetHeader.Hash, tc.BlockID.PartSetHeader.Hash)
	require.Len(t, tc.Signatures, len(oc.Signatures))
	for i := range oc.Signatures {
		os, ts := oc.Signatures[i], tc.Signatures[i]
		require.Equal(t, int32(os.BlockIdFlag), int32(ts.BlockIdFlag))
		require.Equal(t, os.ValidatorAddress, ts.ValidatorAddress)
		require.True(t, os.Timestamp.Equal(ts.Timestamp))
		require.Equal(t, os.Signature, ts.Signature)
	}

	ov, tv := ours.ValidatorSet, theirs.ValidatorSet
	require.Equal(t, ov.TotalVotingPower, tv.TotalVotingPower)
	require.Len(t, tv.Validators, len(ov.Validators))
	sameValidator := func(o *cmtproto.Validator, v *tmproto.Validator) {
		require.Equal(t, o.Address, v.Address)
		require.Equal(t, o.PubKey.GetEd25519(), v.PubKey.GetEd25519())
		require.Len(t, v.PubKey.GetEd25519(), ed25519.PubKeySize)
		require.Equal(t, o.VotingPower, v.VotingPower)
		require.Equal(t, o.ProposerPriority, v.ProposerPriority)
	}
	for i := range ov.Validators {
		sameValidator(ov.Validators[i], tv.Validators[i])
	}
	sameValidator(ov.Proposer, tv.Proposer)
}

// TestLightBlockResponse round-trips a real light block both ways.
func TestLightBlockResponse(t *testing.T) {
	lb := makeLightBlock(t, 77, 5)
	pb, err := lb.ToProto()
	require.NoError(t, err)
	ours := &ssproto.LightBlockResponse{LightBlock: pb}
	require.NoError(t, ssproto.Validate(ours, ssproto.DefaultLimits()))

	// ours -> theirs
	bz := marshalOurs(t, ours)
	theirMsg := decodeTheirs(t, bz)
	theirs := theirMsg.GetLightBlockResponse()
	require.NotNil(t, theirs)
	requireSameLightBlock(t, pb, theirs.LightBlock)

	// theirs -> ours: tendermint's encoder writes the same bytes, and
	// what we decode is the block we started from.
	bz2, err := theirMsg.Marshal()
	require.NoError(t, err)
	require.Equal(t, bz, bz2)
	back, ok := decodeOurs(t, bz2).(*ssproto.LightBlockResponse)
	require.True(t, ok)
	requireSameLightBlock(t, back.LightBlock, theirs.LightBlock)
	got, err := ssproto.ToLightBlock(back)
	require.NoError(t, err)
	require.Equal(t, lb.Hash(), got.Hash())
	require.Equal(t, lb.ValidatorSet.Hash(), got.ValidatorSet.Hash())

	// "I do not have it", both ways.
	empty := decodeTheirs(t, marshalOurs(t, &ssproto.LightBlockResponse{}))
	require.NotNil(t, empty.GetLightBlockResponse())
	require.Nil(t, empty.GetLightBlockResponse().LightBlock)
	out := &tmss.Message{}
	require.NoError(t, out.Wrap(&tmss.LightBlockResponse{}))
	bz, err = out.Marshal()
	require.NoError(t, err)
	require.Equal(t, &ssproto.LightBlockResponse{}, decodeOurs(t, bz))
}

// TestParamsResponse round-trips consensus params both ways. v0.35 has
// block, evidence, validator and version params; CometBFT's ABCI and
// authority params are dropped by v0.35 and absent from what it sends.
func TestParamsResponse(t *testing.T) {
	params := types.DefaultConsensusParams()
	params.Version.App = 5
	params.Validator.PubKeyTypes = []string{types.ABCIPubKeyTypeEd25519, types.ABCIPubKeyTypeSecp256k1}
	params.ABCI.VoteExtensionsEnableHeight = 10
	ours := &ssproto.ParamsResponse{Height: 12, ConsensusParams: params.ToProto()}
	require.NoError(t, ssproto.Validate(ours, ssproto.DefaultLimits()))

	// ours -> theirs
	m := decodeTheirs(t, marshalOurs(t, ours)).GetParamsResponse()
	require.NotNil(t, m)
	require.Equal(t, uint64(12), m.Height)
	tp := m.ConsensusParams
	require.Equal(t, params.Block.MaxBytes, tp.Block.MaxBytes)
	require.Equal(t, params.Block.MaxGas, tp.Block.MaxGas)
	require.Equal(t, params.Evidence.MaxAgeNumBlocks, tp.Evidence.MaxAgeNumBlocks)
	require.Equal(t, params.Evidence.MaxAgeDuration, tp.Evidence.MaxAgeDuration)
	require.Equal(t, params.Evidence.MaxBytes, tp.Evidence.MaxBytes)
	require.Equal(t, params.Validator.PubKeyTypes, tp.Validator.PubKeyTypes)
	require.Equal(t, params.Version.App, tp.Version.AppVersion)

	// theirs -> ours, all v0.35 fields set by hand
	theirs := &tmss.Message{}
	require.NoError(t, theirs.Wrap(&tmss.ParamsResponse{Height: 99, ConsensusParams: tmproto.ConsensusParams{
		Block:     &tmproto.BlockParams{MaxBytes: 1 << 20, MaxGas: 5_000_000},
		Evidence:  &tmproto.EvidenceParams{MaxAgeNumBlocks: 1000, MaxAgeDuration: 36 * time.Hour, MaxBytes: 4096},
		Validator: &tmproto.ValidatorParams{PubKeyTypes: []string{"ed25519", "secp256k1"}},
		Version:   &tmproto.VersionParams{AppVersion: 7},
	}}))
	bz, err := theirs.Marshal()
	require.NoError(t, err)
	got, ok := decodeOurs(t, bz).(*ssproto.ParamsResponse)
	require.True(t, ok)
	require.Equal(t, &ssproto.ParamsResponse{Height: 99, ConsensusParams: cmtproto.ConsensusParams{
		Block:     &cmtproto.BlockParams{MaxBytes: 1 << 20, MaxGas: 5_000_000},
		Evidence:  &cmtproto.EvidenceParams{MaxAgeNumBlocks: 1000, MaxAgeDuration: 36 * time.Hour, MaxBytes: 4096},
		Validator: &cmtproto.ValidatorParams{PubKeyTypes: []string{"ed25519", "secp256k1"}},
		Version:   &cmtproto.VersionParams{App: 7},
	}}, got)
	cp, err := ssproto.ToConsensusParams(got)
	require.NoError(t, err)
	require.Equal(t, uint64(7), cp.Version.App)
	require.Zero(t, cp.ABCI.VoteExtensionsEnableHeight)
}
