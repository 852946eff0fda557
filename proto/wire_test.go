package ssproto_test

import (
	"bytes"
	"encoding/hex"
	"math"
	"testing"
	"time"

	cmtss "github.com/cometbft/cometbft/proto/tendermint/statesync"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"

	ssproto "github.com/statesync/statesync/proto"
)

type wrapper interface {
	proto.Message
	Wrap() proto.Message
}

// fullParams is the consensus params of the ParamsResponse vectors.
func fullParams() cmtproto.ConsensusParams {
	return cmtproto.ConsensusParams{
		Block:     &cmtproto.BlockParams{MaxBytes: 22020096, MaxGas: -1},
		Evidence:  &cmtproto.EvidenceParams{MaxAgeNumBlocks: 100000, MaxAgeDuration: 48 * time.Hour, MaxBytes: 1048576},
		Validator: &cmtproto.ValidatorParams{PubKeyTypes: []string{"ed25519"}},
		Version:   &cmtproto.VersionParams{App: 1},
	}
}

// vectorMessages maps the names in testdata/wire_vectors.json to the
// message each encodes, and whether it passes Validate(DefaultLimits()).
var vectorMessages = map[string]struct {
	msg   wrapper
	valid bool
}{
	"SnapshotsRequest{}":                      {&ssproto.SnapshotsRequest{}, true},
	"ChunkRequest{height:1,format:2,index:3}": {&ssproto.ChunkRequest{Height: 1, Format: 2, Index: 3}, true},
	"LightBlockRequest{height:100}":           {&ssproto.LightBlockRequest{Height: 100}, true},
	"LightBlockResponse{nil}":                 {&ssproto.LightBlockResponse{}, true},
	"SnapshotsResponse{height:1,format:2,chunks:3,hash:04,metadata:05}": {&ssproto.SnapshotsResponse{
		Height: 1, Format: 2, Chunks: 3, Hash: []byte{4}, Metadata: []byte{5},
	}, true},
	"SnapshotsResponse{height:300,chunks:100000,hash:aa*32}": {&ssproto.SnapshotsResponse{
		Height: 300, Chunks: 100000, Hash: bytes.Repeat([]byte{0xaa}, 32),
	}, true},
	"ChunkRequest{height:1}": {&ssproto.ChunkRequest{Height: 1}, true},
	"ChunkResponse{height:1,format:2,index:3,chunk:04}": {&ssproto.ChunkResponse{
		Height: 1, Format: 2, Index: 3, Chunk: []byte{4},
	}, true},
	"ChunkResponse{height:1,format:2,index:3,missing:true}": {&ssproto.ChunkResponse{
		Height: 1, Format: 2, Index: 3, Missing: true,
	}, true},
	"ChunkResponse{height:2^63-1,index:99999,chunk:00*128}": {&ssproto.ChunkResponse{
		Height: math.MaxInt64, Index: 99999, Chunk: make([]byte, 128),
	}, true},
	"LightBlockRequest{height:2^63-1}": {&ssproto.LightBlockRequest{Height: math.MaxInt64}, true},
	"LightBlockResponse{light_block:{validator_set:{total_voting_power:10}}}": {&ssproto.LightBlockResponse{
		LightBlock: &cmtproto.LightBlock{ValidatorSet: &cmtproto.ValidatorSet{TotalVotingPower: 10}},
	}, false},
	"ParamsRequest{height:9}":  {&ssproto.ParamsRequest{Height: 9}, true},
	"ParamsResponse{height:9}": {&ssproto.ParamsResponse{Height: 9}, false},
	"ParamsResponse{height:1,consensus_params:{block:{22020096,-1},evidence:{100000,48h,1048576},validator:{ed25519},version:{app:1}}}": {
		&ssproto.ParamsResponse{Height: 1, ConsensusParams: fullParams()}, true,
	},
	"ParamsResponse{height:1,consensus_params:{...as above...,abci:{vote_extensions_enable_height:10}}}": {
		&ssproto.ParamsResponse{Height: 1, ConsensusParams: func() cmtproto.ConsensusParams {
			p := fullParams()
			p.Abci = &cmtproto.ABCIParams{VoteExtensionsEnableHeight: 10}
			return p
		}()}, true,
	},
}

// TestEncodingVectors checks every vector both ways: our encoding of the
// message is the vector, and the vector decodes and unwraps to the message.
func TestEncodingVectors(t *testing.T) {
	vectors := loadVectors(t)
	require.Len(t, vectors, len(vectorMessages), "every vector has a message and vice versa")
	seen := map[string]bool{}
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			want, ok := vectorMessages[v.Name]
			require.True(t, ok, "no message for vector %q", v.Name)
			require.False(t, seen[v.Name], "duplicate vector")
			seen[v.Name] = true

			bz, err := proto.Marshal(want.msg.Wrap())
			require.NoError(t, err)
			require.Equal(t, v.Hex, hex.EncodeToString(bz))

			var env ssproto.Message
			require.NoError(t, proto.Unmarshal(mustHex(t, v.Hex), &env))
			inner, err := env.Unwrap()
			require.NoError(t, err)
			require.Equal(t, want.msg, inner)

			err = ssproto.Validate(inner, ssproto.DefaultLimits())
			if want.valid {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ssproto.ErrInvalidMessage)
			}
		})
	}
	// The envelope field of each inner type, read off the vectors.
	sums := map[byte]bool{}
	for _, v := range vectors {
		sums[mustHex(t, v.Hex)[0]>>3] = true
	}
	for f := byte(1); f <= 8; f++ {
		require.True(t, sums[f], "no vector for envelope field %d", f)
	}
}

// TestCometBFTInterop round-trips messages 1-4 through CometBFT v0.40's own
// statesync types in both directions and compares every field.
func TestCometBFTInterop(t *testing.T) {
	cases := []struct {
		ours   wrapper
		theirs wrapper
	}{
		{&ssproto.SnapshotsRequest{}, &cmtss.SnapshotsRequest{}},
		{
			&ssproto.SnapshotsResponse{Height: 7, Format: 1, Chunks: 12, Hash: []byte("hash"), Metadata: []byte("meta")},
			&cmtss.SnapshotsResponse{Height: 7, Format: 1, Chunks: 12, Hash: []byte("hash"), Metadata: []byte("meta")},
		},
		{
			&ssproto.SnapshotsResponse{Height: math.MaxUint64, Format: math.MaxUint32, Chunks: math.MaxUint32},
			&cmtss.SnapshotsResponse{Height: math.MaxUint64, Format: math.MaxUint32, Chunks: math.MaxUint32},
		},
		{&ssproto.ChunkRequest{Height: 7, Format: 1, Index: 11}, &cmtss.ChunkRequest{Height: 7, Format: 1, Index: 11}},
		{&ssproto.ChunkRequest{}, &cmtss.ChunkRequest{}},
		{
			&ssproto.ChunkResponse{Height: 7, Format: 1, Index: 11, Chunk: []byte("chunk")},
			&cmtss.ChunkResponse{Height: 7, Format: 1, Index: 11, Chunk: []byte("chunk")},
		},
		{
			&ssproto.ChunkResponse{Height: 7, Format: 1, Index: 3, Missing: true},
			&cmtss.ChunkResponse{Height: 7, Format: 1, Index: 3, Missing: true},
		},
	}
	for _, tc := range cases {
		t.Run(tc.ours.String(), func(t *testing.T) {
			// ours -> theirs
			bz, err := proto.Marshal(tc.ours.Wrap())
			require.NoError(t, err)
			var their cmtss.Message
			require.NoError(t, proto.Unmarshal(bz, &their))
			got, err := their.Unwrap()
			require.NoError(t, err)
			requireSameFields(t, tc.ours, got)

			// theirs -> ours
			bz2, err := proto.Marshal(tc.theirs.Wrap())
			require.NoError(t, err)
			require.Equal(t, bz, bz2, "identical encodings")
			var env ssproto.Message
			require.NoError(t, proto.Unmarshal(bz2, &env))
			inner, err := env.Unwrap()
			require.NoError(t, err)
			requireSameFields(t, tc.theirs, inner)
		})
	}

	// CometBFT v0.40 knows no fields 5-8: it decodes them to an empty
	// envelope (which its Unwrap refuses), so stock nodes must not be sent
	// them (they do not advertise channels 0x62/0x63).
	for _, m := range []wrapper{
		&ssproto.LightBlockRequest{Height: 3}, &ssproto.LightBlockResponse{},
		&ssproto.ParamsRequest{Height: 3}, &ssproto.ParamsResponse{Height: 3, ConsensusParams: defaultParamsProto()},
	} {
		bz, err := proto.Marshal(m.Wrap())
		require.NoError(t, err)
		var their cmtss.Message
		require.NoError(t, proto.Unmarshal(bz, &their))
		require.Nil(t, their.Sum)
		_, err = their.Unwrap()
		require.Error(t, err)
	}
}

// requireSameFields compares the statesync fields of two messages of
// possibly different Go types (ours and CometBFT's).
func requireSameFields(t *testing.T, want, got proto.Message) {
	t.Helper()
	type fields struct {
		Height        uint64
		Format, Index uint32
		Chunks        uint32
		Hash, Meta    []byte
		Chunk         []byte
		Missing       bool
		Kind          string
	}
	extract := func(m proto.Message) fields {
		switch m := m.(type) {
		case *ssproto.SnapshotsRequest, *cmtss.SnapshotsRequest:
			return fields{Kind: "snapshots request"}
		case *ssproto.SnapshotsResponse:
			return fields{Kind: "snapshot", Height: m.Height, Format: m.Format, Chunks: m.Chunks, Hash: m.Hash, Meta: m.Metadata}
		case *cmtss.SnapshotsResponse:
			return fields{Kind: "snapshot", Height: m.Height, Format: m.Format, Chunks: m.Chunks, Hash: m.Hash, Meta: m.Metadata}
		case *ssproto.ChunkRequest:
			return fields{Kind: "chunk request", Height: m.Height, Format: m.Format, Index: m.Index}
		case *cmtss.ChunkRequest:
			return fields{Kind: "chunk request", Height: m.Height, Format: m.Format, Index: m.Index}
		case *ssproto.ChunkResponse:
			return fields{Kind: "chunk", Height: m.Height, Format: m.Format, Index: m.Index, Chunk: m.Chunk, Missing: m.Missing}
		case *cmtss.ChunkResponse:
			return fields{Kind: "chunk", Height: m.Height, Format: m.Format, Index: m.Index, Chunk: m.Chunk, Missing: m.Missing}
		}
		t.Fatalf("unexpected %T", m)
		return fields{}
	}
	require.Equal(t, extract(want), extract(got))
}

// TestWrapUnwrap checks the p2p.Wrapper/p2p.Unwrapper contract the switch
// relies on: Unwrap(Wrap(m)) is m itself, also across the wire.
func TestWrapUnwrap(t *testing.T) {
	msgs := []wrapper{
		&ssproto.SnapshotsRequest{},
		&ssproto.SnapshotsResponse{Height: 1, Format: 2, Chunks: 3, Hash: []byte{4}, Metadata: []byte{5}},
		&ssproto.ChunkRequest{Height: 1, Format: 2, Index: 3},
		&ssproto.ChunkResponse{Height: 1, Format: 2, Index: 3, Chunk: []byte{4}},
		&ssproto.LightBlockRequest{Height: 1},
		&ssproto.LightBlockResponse{LightBlock: lightBlockProto(t, 5, 3)},
		&ssproto.ParamsRequest{Height: 1},
		&ssproto.ParamsResponse{Height: 1, ConsensusParams: defaultParamsProto()},
	}
	for _, m := range msgs {
		w := m.Wrap()
		env, ok := w.(*ssproto.Message)
		require.True(t, ok, "%T wraps into %T", m, w)
		inner, err := env.Unwrap()
		require.NoError(t, err)
		require.Same(t, m, inner, "%T", m)

		bz, err := proto.Marshal(w)
		require.NoError(t, err)
		var decoded ssproto.Message
		require.NoError(t, proto.Unmarshal(bz, &decoded))
		inner, err = decoded.Unwrap()
		require.NoError(t, err)
		require.IsType(t, m, inner)
		bz2, err := proto.Marshal(inner.(wrapper).Wrap())
		require.NoError(t, err)
		require.Equal(t, bz, bz2, "%T survives the wire", m)
		require.NoError(t, ssproto.Validate(inner, ssproto.DefaultLimits()), "%T", m)
	}
}

func TestUnwrapEmpty(t *testing.T) {
	empty := []*ssproto.Message{
		nil,
		{},
		{Sum: &ssproto.Message_SnapshotsRequest{}},
		{Sum: &ssproto.Message_SnapshotsResponse{}},
		{Sum: &ssproto.Message_ChunkRequest{}},
		{Sum: &ssproto.Message_ChunkResponse{}},
		{Sum: &ssproto.Message_LightBlockRequest{}},
		{Sum: &ssproto.Message_LightBlockResponse{}},
		{Sum: &ssproto.Message_ParamsRequest{}},
		{Sum: &ssproto.Message_ParamsResponse{}},
		{Sum: (*ssproto.Message_SnapshotsRequest)(nil)},
		{Sum: (*ssproto.Message_SnapshotsResponse)(nil)},
		{Sum: (*ssproto.Message_ChunkRequest)(nil)},
		{Sum: (*ssproto.Message_ChunkResponse)(nil)},
		{Sum: (*ssproto.Message_LightBlockRequest)(nil)},
		{Sum: (*ssproto.Message_LightBlockResponse)(nil)},
		{Sum: (*ssproto.Message_ParamsRequest)(nil)},
		{Sum: (*ssproto.Message_ParamsResponse)(nil)},
	}
	for i, m := range empty {
		inner, err := m.Unwrap()
		require.ErrorIs(t, err, ssproto.ErrInvalidMessage, "case %d", i)
		require.ErrorIs(t, err, ssproto.ErrEmptyMessage, "case %d", i)
		require.Nil(t, inner)
		require.ErrorIs(t, ssproto.Validate(m, ssproto.DefaultLimits()), ssproto.ErrInvalidMessage)
	}
	// An empty envelope on the wire.
	var env ssproto.Message
	require.NoError(t, proto.Unmarshal(nil, &env))
	_, err := env.Unwrap()
	require.ErrorIs(t, err, ssproto.ErrEmptyMessage)
}

// TestChannelSizes: the largest chunk Validate accepts fits the chunk
// channel's message size once wrapped, as does a snapshot at the limits.
func TestChannelSizes(t *testing.T) {
	l := ssproto.DefaultLimits()
	require.Equal(t, ssproto.Limits{
		MaxSnapshotChunks: 100000, MaxHashSize: 64, MaxMetadataSize: 64 << 10, MaxChunkSize: 16e6 - 1024,
	}, l)
	chunk := &ssproto.ChunkResponse{Height: math.MaxInt64, Format: math.MaxUint32, Index: l.MaxSnapshotChunks - 1, Chunk: make([]byte, l.MaxChunkSize)}
	require.NoError(t, ssproto.Validate(chunk, l))
	require.LessOrEqual(t, proto.Size(chunk.Wrap()), ssproto.ChunkMsgSize)

	snap := &ssproto.SnapshotsResponse{Height: math.MaxInt64, Format: math.MaxUint32, Chunks: l.MaxSnapshotChunks,
		Hash: make([]byte, l.MaxHashSize), Metadata: make([]byte, l.MaxMetadataSize)}
	require.NoError(t, ssproto.Validate(snap, l))
	require.LessOrEqual(t, proto.Size(snap.Wrap()), ssproto.SnapshotMsgSize)

	require.Equal(t, []byte{0x60, 0x61, 0x62, 0x63},
		[]byte{ssproto.SnapshotChannel, ssproto.ChunkChannel, ssproto.LightBlockChannel, ssproto.ParamsChannel})
	require.Equal(t, []int{4e6, 16e6, 10e6, 1e5},
		[]int{ssproto.SnapshotMsgSize, ssproto.ChunkMsgSize, ssproto.LightBlockMsgSize, ssproto.ParamsMsgSize})
}

// TestRegistry: the file registers under a path matching its package
// (else gogoproto prints a warning at init in every binary) and the types
// are statesync.v1's, not tendermint.statesync's (a second registration of
// those panics at init).
func TestRegistry(t *testing.T) {
	require.NotNil(t, proto.FileDescriptor("statesync/v1/statesync.proto"), "regenerate with make proto")
	require.Equal(t, "statesync.v1.Message", proto.MessageName(&ssproto.Message{}))
	require.Equal(t, "statesync.v1.ParamsResponse", proto.MessageName(&ssproto.ParamsResponse{}))
	require.Equal(t, "tendermint.statesync.Message", proto.MessageName(&cmtss.Message{}))
}
