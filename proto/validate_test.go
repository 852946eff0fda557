package ssproto_test

import (
	"errors"
	"math"
	"testing"

	cmtcrypto "github.com/cometbft/cometbft/proto/tendermint/crypto"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cometbft/cometbft/types"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"

	ssproto "github.com/statesync/statesync/proto"
)

const tooHigh = uint64(math.MaxInt64) + 1

func TestErrorsVocabulary(t *testing.T) {
	require.ErrorIs(t, ssproto.ErrTooManyChunks, ssproto.ErrInvalidMessage)
	require.False(t, errors.Is(ssproto.ErrInvalidMessage, ssproto.ErrTooManyChunks))
	require.False(t, errors.Is(ssproto.ErrEmptyMessage, ssproto.ErrInvalidMessage))
}

// lbWith returns a LightBlockResponse with a valid light block changed by f.
func lbWith(t *testing.T, f func(*cmtproto.LightBlock)) *ssproto.LightBlockResponse {
	lb := lightBlockProto(t, 10, 4)
	f(lb)
	return &ssproto.LightBlockResponse{LightBlock: lb}
}

// paramsWith returns a ParamsResponse at height 5 with default params
// changed by f.
func paramsWith(f func(*cmtproto.ConsensusParams)) *ssproto.ParamsResponse {
	p := defaultParamsProto()
	f(&p)
	return &ssproto.ParamsResponse{Height: 5, ConsensusParams: p}
}

func TestValidate(t *testing.T) {
	l := ssproto.Limits{MaxSnapshotChunks: 10, MaxHashSize: 32, MaxMetadataSize: 100, MaxChunkSize: 1000}
	snap := func(f func(*ssproto.SnapshotsResponse)) *ssproto.SnapshotsResponse {
		s := &ssproto.SnapshotsResponse{Height: 1, Format: 1, Chunks: 3, Hash: []byte{1}, Metadata: []byte("m")}
		f(s)
		return s
	}
	keep := func(*ssproto.SnapshotsResponse) {}
	ok := error(nil)
	bad := ssproto.ErrInvalidMessage

	cases := []struct {
		name string
		msg  proto.Message
		want error // nil = valid; otherwise errors.Is target
	}{
		// SnapshotsRequest
		{"snapshots request", &ssproto.SnapshotsRequest{}, ok},
		{"snapshots request nil", (*ssproto.SnapshotsRequest)(nil), bad},

		// SnapshotsResponse
		{"snapshot", snap(keep), ok},
		{"snapshot at the limits", snap(func(s *ssproto.SnapshotsResponse) {
			s.Height, s.Chunks, s.Hash, s.Metadata = math.MaxInt64, 10, make([]byte, 32), make([]byte, 100)
		}), ok},
		{"snapshot without metadata", snap(func(s *ssproto.SnapshotsResponse) { s.Metadata = nil }), ok},
		{"snapshot height 0", snap(func(s *ssproto.SnapshotsResponse) { s.Height = 0 }), bad},
		{"snapshot height beyond int64", snap(func(s *ssproto.SnapshotsResponse) { s.Height = tooHigh }), bad},
		{"snapshot 0 chunks", snap(func(s *ssproto.SnapshotsResponse) { s.Chunks = 0 }), bad},
		{"snapshot too many chunks", snap(func(s *ssproto.SnapshotsResponse) { s.Chunks = 11 }), ssproto.ErrTooManyChunks},
		{"snapshot max uint32 chunks", snap(func(s *ssproto.SnapshotsResponse) { s.Chunks = math.MaxUint32 }), ssproto.ErrTooManyChunks},
		{"snapshot no hash", snap(func(s *ssproto.SnapshotsResponse) { s.Hash = nil }), bad},
		{"snapshot empty hash", snap(func(s *ssproto.SnapshotsResponse) { s.Hash = []byte{} }), bad},
		{"snapshot long hash", snap(func(s *ssproto.SnapshotsResponse) { s.Hash = make([]byte, 33) }), bad},
		{"snapshot big metadata", snap(func(s *ssproto.SnapshotsResponse) { s.Metadata = make([]byte, 101) }), bad},
		{"snapshot nil", (*ssproto.SnapshotsResponse)(nil), bad},

		// ChunkRequest
		{"chunk request", &ssproto.ChunkRequest{Height: 1, Index: 9}, ok},
		{"chunk request height 0", &ssproto.ChunkRequest{Index: 1}, bad},
		{"chunk request height beyond int64", &ssproto.ChunkRequest{Height: tooHigh}, bad},
		{"chunk request index at cap", &ssproto.ChunkRequest{Height: 1, Index: 10}, bad},
		{"chunk request nil", (*ssproto.ChunkRequest)(nil), bad},

		// ChunkResponse
		{"chunk", &ssproto.ChunkResponse{Height: 1, Index: 9, Chunk: []byte{1}}, ok},
		{"chunk of max size", &ssproto.ChunkResponse{Height: 1, Chunk: make([]byte, 1000)}, ok},
		{"chunk missing", &ssproto.ChunkResponse{Height: 1, Missing: true}, ok},
		{"chunk missing, empty body", &ssproto.ChunkResponse{Height: 1, Missing: true, Chunk: []byte{}}, ok},
		{"chunk height 0", &ssproto.ChunkResponse{Chunk: []byte{1}}, bad},
		{"chunk height beyond int64", &ssproto.ChunkResponse{Height: tooHigh, Chunk: []byte{1}}, bad},
		{"chunk index at cap", &ssproto.ChunkResponse{Height: 1, Index: 10, Chunk: []byte{1}}, bad},
		{"chunk missing with body", &ssproto.ChunkResponse{Height: 1, Missing: true, Chunk: []byte{1}}, bad},
		{"chunk empty, not missing", &ssproto.ChunkResponse{Height: 1}, bad},
		{"chunk too big", &ssproto.ChunkResponse{Height: 1, Chunk: make([]byte, 1001)}, bad},
		{"chunk nil", (*ssproto.ChunkResponse)(nil), bad},

		// LightBlockRequest
		{"light block request", &ssproto.LightBlockRequest{Height: 1}, ok},
		{"light block request max height", &ssproto.LightBlockRequest{Height: math.MaxInt64}, ok},
		{"light block request height 0", &ssproto.LightBlockRequest{}, bad},
		{"light block request height beyond int64", &ssproto.LightBlockRequest{Height: tooHigh}, bad},
		{"light block request nil", (*ssproto.LightBlockRequest)(nil), bad},

		// LightBlockResponse
		{"light block", &ssproto.LightBlockResponse{LightBlock: lightBlockProto(t, 10, 4)}, ok},
		{"light block, one validator", &ssproto.LightBlockResponse{LightBlock: lightBlockProto(t, 1, 1)}, ok},
		{"light block empty (not available)", &ssproto.LightBlockResponse{}, ok},
		{"light block nil", (*ssproto.LightBlockResponse)(nil), bad},
		{"light block all nil", &ssproto.LightBlockResponse{LightBlock: &cmtproto.LightBlock{}}, bad},
		{"light block no signed header", lbWith(t, func(lb *cmtproto.LightBlock) { lb.SignedHeader = nil }), bad},
		{"light block no header", lbWith(t, func(lb *cmtproto.LightBlock) { lb.SignedHeader.Header = nil }), bad},
		{"light block no commit", lbWith(t, func(lb *cmtproto.LightBlock) { lb.SignedHeader.Commit = nil }), bad},
		{"light block no validators", lbWith(t, func(lb *cmtproto.LightBlock) { lb.ValidatorSet = nil }), bad},
		{"light block empty validator set", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.ValidatorSet = &cmtproto.ValidatorSet{}
		}), bad},
		{"light block header height 0", lbWith(t, func(lb *cmtproto.LightBlock) { lb.SignedHeader.Header.Height = 0 }), bad},
		{"light block header height negative", lbWith(t, func(lb *cmtproto.LightBlock) { lb.SignedHeader.Header.Height = -1 }), bad},
		{"light block commit for another height", lbWith(t, func(lb *cmtproto.LightBlock) { lb.SignedHeader.Commit.Height = 11 }), bad},
		{"light block commit for another block", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.SignedHeader.Header.AppHash = []byte("other")
		}), bad},
		{"light block commit without signatures", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.SignedHeader.Commit.Signatures = nil
		}), bad},
		{"light block wrong block protocol", lbWith(t, func(lb *cmtproto.LightBlock) { lb.SignedHeader.Header.Version.Block = 10 }), bad},
		{"light block validators not the header's", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.ValidatorSet.Validators = lb.ValidatorSet.Validators[:1]
			lb.ValidatorSet.Proposer = lb.ValidatorSet.Validators[0]
		}), bad},
		{"light block validator without key", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.ValidatorSet.Validators[1].PubKey = cmtcrypto.PublicKey{}
		}), bad},
		{"light block validator with short key", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.ValidatorSet.Validators[1].PubKey = cmtcrypto.PublicKey{Sum: &cmtcrypto.PublicKey_Ed25519{Ed25519: []byte{1, 2}}}
		}), bad},
		{"light block validator with negative power", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.ValidatorSet.Validators[1].VotingPower = -1
		}), bad},
		{"light block validator with huge power", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.ValidatorSet.Validators[1].VotingPower = math.MaxInt64
		}), bad},
		{"light block no proposer", lbWith(t, func(lb *cmtproto.LightBlock) { lb.ValidatorSet.Proposer = nil }), bad},
		{"light block long chain ID", lbWith(t, func(lb *cmtproto.LightBlock) {
			lb.SignedHeader.Header.ChainID = string(make([]byte, types.MaxChainIDLen+1))
		}), bad},

		// ParamsRequest
		{"params request", &ssproto.ParamsRequest{Height: 1}, ok},
		{"params request height 0", &ssproto.ParamsRequest{}, bad},
		{"params request height beyond int64", &ssproto.ParamsRequest{Height: tooHigh}, bad},
		{"params request nil", (*ssproto.ParamsRequest)(nil), bad},

		// ParamsResponse
		{"params", paramsWith(func(*cmtproto.ConsensusParams) {}), ok},
		{"params without abci (tendermint v0.35)", paramsWith(func(p *cmtproto.ConsensusParams) { p.Abci = nil }), ok},
		{"params with authority", paramsWith(func(p *cmtproto.ConsensusParams) {
			p.Authority = &cmtproto.AuthorityParams{Authority: "gov"}
		}), ok},
		{"params unlimited block bytes", paramsWith(func(p *cmtproto.ConsensusParams) { p.Block.MaxBytes = -1 }), ok},
		{"params height 0", &ssproto.ParamsResponse{ConsensusParams: defaultParamsProto()}, bad},
		{"params height beyond int64", &ssproto.ParamsResponse{Height: tooHigh, ConsensusParams: defaultParamsProto()}, bad},
		{"params empty", &ssproto.ParamsResponse{Height: 1}, bad},
		{"params without block", paramsWith(func(p *cmtproto.ConsensusParams) { p.Block = nil }), bad},
		{"params without evidence", paramsWith(func(p *cmtproto.ConsensusParams) { p.Evidence = nil }), bad},
		{"params without validator", paramsWith(func(p *cmtproto.ConsensusParams) { p.Validator = nil }), bad},
		{"params without version", paramsWith(func(p *cmtproto.ConsensusParams) { p.Version = nil }), bad},
		{"params block bytes 0", paramsWith(func(p *cmtproto.ConsensusParams) { p.Block.MaxBytes = 0 }), bad},
		{"params block bytes negative", paramsWith(func(p *cmtproto.ConsensusParams) { p.Block.MaxBytes = -5 }), bad},
		{"params block bytes too big", paramsWith(func(p *cmtproto.ConsensusParams) { p.Block.MaxBytes = types.MaxBlockSizeBytes + 1 }), bad},
		{"params max gas below -1", paramsWith(func(p *cmtproto.ConsensusParams) { p.Block.MaxGas = -2 }), bad},
		{"params evidence age 0", paramsWith(func(p *cmtproto.ConsensusParams) { p.Evidence.MaxAgeNumBlocks = 0 }), bad},
		{"params evidence duration 0", paramsWith(func(p *cmtproto.ConsensusParams) { p.Evidence.MaxAgeDuration = 0 }), bad},
		{"params evidence bytes over block", paramsWith(func(p *cmtproto.ConsensusParams) {
			p.Evidence.MaxBytes = p.Block.MaxBytes + 1
		}), bad},
		{"params no key types", paramsWith(func(p *cmtproto.ConsensusParams) { p.Validator.PubKeyTypes = nil }), bad},
		{"params unknown key type", paramsWith(func(p *cmtproto.ConsensusParams) { p.Validator.PubKeyTypes = []string{"rsa"} }), bad},
		{"params negative vote extension height", paramsWith(func(p *cmtproto.ConsensusParams) {
			p.Abci = &cmtproto.ABCIParams{VoteExtensionsEnableHeight: -1}
		}), bad},
		{"params long authority", paramsWith(func(p *cmtproto.ConsensusParams) {
			p.Authority = &cmtproto.AuthorityParams{Authority: string(make([]byte, 257))}
		}), bad},
		{"params nil", (*ssproto.ParamsResponse)(nil), bad},

		// Envelopes and strangers
		{"envelope", (&ssproto.ChunkRequest{Height: 1}).Wrap(), ok},
		{"envelope of invalid", (&ssproto.ChunkRequest{}).Wrap(), bad},
		{"envelope empty", &ssproto.Message{}, bad},
		{"envelope nil", (*ssproto.Message)(nil), bad},
		{"unknown type", &cmtproto.Header{}, bad},
		{"nil interface", nil, bad},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ssproto.Validate(tc.msg, l)
			t.Log(err)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.ErrorIs(t, err, ssproto.ErrInvalidMessage)
			if !errors.Is(tc.want, ssproto.ErrTooManyChunks) {
				require.NotErrorIs(t, err, ssproto.ErrTooManyChunks)
			}
		})
	}
}

// TestValidateZeroLimits: a zero Limits allows nothing that is bounded.
func TestValidateZeroLimits(t *testing.T) {
	var l ssproto.Limits
	require.ErrorIs(t, ssproto.Validate(&ssproto.SnapshotsResponse{Height: 1, Chunks: 1, Hash: []byte{1}}, l), ssproto.ErrTooManyChunks)
	require.Error(t, ssproto.Validate(&ssproto.ChunkRequest{Height: 1}, l))
	require.Error(t, ssproto.Validate(&ssproto.ChunkResponse{Height: 1, Chunk: []byte{1}}, l))
	require.NoError(t, ssproto.Validate(&ssproto.SnapshotsRequest{}, l))
	require.NoError(t, ssproto.Validate(&ssproto.LightBlockRequest{Height: 1}, l))
}

func TestToLightBlock(t *testing.T) {
	lb, err := ssproto.ToLightBlock(nil)
	require.NoError(t, err)
	require.Nil(t, lb)
	lb, err = ssproto.ToLightBlock(&ssproto.LightBlockResponse{})
	require.NoError(t, err)
	require.Nil(t, lb)

	want := makeLightBlock(t, 7, 3)
	pb, err := want.ToProto()
	require.NoError(t, err)
	lb, err = ssproto.ToLightBlock(&ssproto.LightBlockResponse{LightBlock: pb})
	require.NoError(t, err)
	require.Equal(t, want.Hash(), lb.Hash())
	require.Equal(t, int64(7), lb.Height)
	require.Equal(t, testChainID, lb.ChainID)
	require.Equal(t, want.ValidatorSet.Hash(), lb.ValidatorSet.Hash())
	require.Equal(t, want.Commit.Signatures, lb.Commit.Signatures)
	require.NoError(t, lb.ValidateBasic(testChainID))
}

func TestToConsensusParams(t *testing.T) {
	_, err := ssproto.ToConsensusParams(nil)
	require.ErrorIs(t, err, ssproto.ErrInvalidMessage)

	want := *types.DefaultConsensusParams()
	got, err := ssproto.ToConsensusParams(&ssproto.ParamsResponse{Height: 3, ConsensusParams: want.ToProto()})
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, want.Hash(), got.Hash())

	got, err = ssproto.ToConsensusParams(paramsWith(func(p *cmtproto.ConsensusParams) { p.Version = nil }))
	require.ErrorIs(t, err, ssproto.ErrInvalidMessage)
	require.Equal(t, types.ConsensusParams{}, got, "no half-converted params on error")
}
