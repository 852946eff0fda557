package ssproto_test

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	cmtss "github.com/cometbft/cometbft/proto/tendermint/statesync"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cometbft/cometbft/types"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	ssproto "github.com/statesync/statesync/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var vectorMessages = map[string]proto.Message{
	"SnapshotsRequest{}":                      &ssproto.SnapshotsRequest{},
	"ChunkRequest{height:1,format:2,index:3}": &ssproto.ChunkRequest{Height: 1, Format: 2, Index: 3},
	"LightBlockRequest{height:100}":           &ssproto.LightBlockRequest{Height: 100},
	"LightBlockResponse{nil}":                 &ssproto.LightBlockResponse{},
	"ParamsRequest{height:9}":                 &ssproto.ParamsRequest{Height: 9},
	"ChunkResponse{height:1,format:2,index:3,chunk:04}": &ssproto.ChunkResponse{
		Height: 1, Format: 2, Index: 3, Chunk: []byte{4},
	},
	"ChunkResponse{height:1,format:2,index:3,missing:true}": &ssproto.ChunkResponse{
		Height: 1, Format: 2, Index: 3, Missing: true,
	},
	"SnapshotsResponse{height:1,format:2,chunks:3,hash:04,metadata:05}": &ssproto.SnapshotsResponse{
		Height: 1, Format: 2, Chunks: 3, Hash: []byte{4}, Metadata: []byte{5},
	},
}

func TestEncodingVectors(t *testing.T) {
	raw, err := os.ReadFile("../testdata/wire_vectors.json")
	require.NoError(t, err)
	var file struct {
		Vectors []struct{ Name, Hex string }
	}
	require.NoError(t, json.Unmarshal(raw, &file))
	require.Len(t, file.Vectors, len(vectorMessages))
	for _, v := range file.Vectors {
		msg, ok := vectorMessages[v.Name]
		require.True(t, ok, v.Name)
		bz, err := proto.Marshal(msg.(interface{ Wrap() proto.Message }).Wrap())
		require.NoError(t, err)
		require.Equal(t, v.Hex, hex.EncodeToString(bz), v.Name)

		// And back: decode the vector, unwrap, compare.
		want, err := hex.DecodeString(v.Hex)
		require.NoError(t, err)
		var env ssproto.Message
		require.NoError(t, proto.Unmarshal(want, &env))
		inner, err := env.Unwrap()
		require.NoError(t, err)
		require.True(t, proto.Equal(msg, inner), v.Name)
	}
}

// TestCometBFTInterop round-trips messages 1-4 through CometBFT v0.40's own
// statesync types in both directions.
func TestCometBFTInterop(t *testing.T) {
	ours := []proto.Message{
		&ssproto.SnapshotsRequest{},
		&ssproto.SnapshotsResponse{Height: 7, Format: 1, Chunks: 12, Hash: []byte("hash"), Metadata: []byte("meta")},
		&ssproto.ChunkRequest{Height: 7, Format: 1, Index: 11},
		&ssproto.ChunkResponse{Height: 7, Format: 1, Index: 11, Chunk: []byte("chunk")},
		&ssproto.ChunkResponse{Height: 7, Format: 1, Index: 3, Missing: true},
	}
	theirs := []proto.Message{
		&cmtss.SnapshotsRequest{},
		&cmtss.SnapshotsResponse{Height: 7, Format: 1, Chunks: 12, Hash: []byte("hash"), Metadata: []byte("meta")},
		&cmtss.ChunkRequest{Height: 7, Format: 1, Index: 11},
		&cmtss.ChunkResponse{Height: 7, Format: 1, Index: 11, Chunk: []byte("chunk")},
		&cmtss.ChunkResponse{Height: 7, Format: 1, Index: 3, Missing: true},
	}
	for i := range ours {
		// ours -> theirs
		bz, err := proto.Marshal(ours[i].(interface{ Wrap() proto.Message }).Wrap())
		require.NoError(t, err)
		var their cmtss.Message
		require.NoError(t, proto.Unmarshal(bz, &their))
		got, err := their.Unwrap()
		require.NoError(t, err)
		require.True(t, proto.Equal(theirs[i], got), "%T", theirs[i])

		// theirs -> ours
		bz2, err := proto.Marshal(theirs[i].(interface{ Wrap() proto.Message }).Wrap())
		require.NoError(t, err)
		require.Equal(t, bz, bz2, "identical bytes")
		var env ssproto.Message
		require.NoError(t, proto.Unmarshal(bz2, &env))
		inner, err := env.Unwrap()
		require.NoError(t, err)
		require.True(t, proto.Equal(ours[i], inner), "%T", ours[i])
	}
}

func TestUnwrapEmpty(t *testing.T) {
	_, err := (&ssproto.Message{}).Unwrap()
	require.ErrorIs(t, err, ssproto.ErrInvalidMessage)
	_, err = (&ssproto.Message{Sum: &ssproto.Message_ChunkRequest{}}).Unwrap()
	require.ErrorIs(t, err, ssproto.ErrInvalidMessage)
}

func validParams() cmtproto.ConsensusParams {
	return types.DefaultConsensusParams().ToProto()
}

func TestValidate(t *testing.T) {
	l := ssproto.DefaultLimits()
	l.MaxSnapshotChunks = 10
	okSnap := func() *ssproto.SnapshotsResponse {
		return &ssproto.SnapshotsResponse{Height: 1, Format: 1, Chunks: 3, Hash: []byte{1}}
	}
	cases := []struct {
		name string
		msg  proto.Message
		err  error // nil = valid
	}{
		{"snapshots request", &ssproto.SnapshotsRequest{}, nil},
		{"snapshot ok", okSnap(), nil},
		{"snapshot height 0", func() proto.Message { s := okSnap(); s.Height = 0; return s }(), ssproto.ErrInvalidMessage},
		{"snapshot 0 chunks", func() proto.Message { s := okSnap(); s.Chunks = 0; return s }(), ssproto.ErrInvalidMessage},
		{"snapshot too many chunks", func() proto.Message { s := okSnap(); s.Chunks = 11; return s }(), ssproto.ErrTooManyChunks},
		{"snapshot no hash", func() proto.Message { s := okSnap(); s.Hash = nil; return s }(), ssproto.ErrInvalidMessage},
		{"snapshot long hash", func() proto.Message { s := okSnap(); s.Hash = make([]byte, 65); return s }(), ssproto.ErrInvalidMessage},
		{"snapshot big metadata", func() proto.Message { s := okSnap(); s.Metadata = make([]byte, 64<<10+1); return s }(), ssproto.ErrInvalidMessage},
		{"chunk request ok", &ssproto.ChunkRequest{Height: 1, Index: 9}, nil},
		{"chunk request height 0", &ssproto.ChunkRequest{}, ssproto.ErrInvalidMessage},
		{"chunk request index beyond cap", &ssproto.ChunkRequest{Height: 1, Index: 10}, ssproto.ErrInvalidMessage},
		{"chunk ok", &ssproto.ChunkResponse{Height: 1, Chunk: []byte{1}}, nil},
		{"chunk missing ok", &ssproto.ChunkResponse{Height: 1, Missing: true}, nil},
		{"chunk height 0", &ssproto.ChunkResponse{Chunk: []byte{1}}, ssproto.ErrInvalidMessage},
		{"chunk missing with body", &ssproto.ChunkResponse{Height: 1, Missing: true, Chunk: []byte{1}}, ssproto.ErrInvalidMessage},
		{"chunk empty not missing", &ssproto.ChunkResponse{Height: 1}, ssproto.ErrInvalidMessage},
		{"chunk too big", &ssproto.ChunkResponse{Height: 1, Chunk: make([]byte, l.MaxChunkSize+1)}, ssproto.ErrInvalidMessage},
		{"light block request ok", &ssproto.LightBlockRequest{Height: 1}, nil},
		{"light block request height 0", &ssproto.LightBlockRequest{}, ssproto.ErrInvalidMessage},
		{"light block response empty", &ssproto.LightBlockResponse{}, nil},
		{"light block nil header", &ssproto.LightBlockResponse{LightBlock: &cmtproto.LightBlock{}}, ssproto.ErrInvalidMessage},
		{"light block nil commit", &ssproto.LightBlockResponse{LightBlock: &cmtproto.LightBlock{
			SignedHeader: &cmtproto.SignedHeader{Header: &cmtproto.Header{Height: 1}}, ValidatorSet: &cmtproto.ValidatorSet{},
		}}, ssproto.ErrInvalidMessage},
		{"light block garbage", &ssproto.LightBlockResponse{LightBlock: &cmtproto.LightBlock{
			SignedHeader: &cmtproto.SignedHeader{Header: &cmtproto.Header{Height: 1}, Commit: &cmtproto.Commit{Height: 1}},
			ValidatorSet: &cmtproto.ValidatorSet{},
		}}, ssproto.ErrInvalidMessage},
		{"params request ok", &ssproto.ParamsRequest{Height: 1}, nil},
		{"params request height 0", &ssproto.ParamsRequest{}, ssproto.ErrInvalidMessage},
		{"params ok", &ssproto.ParamsResponse{Height: 1, ConsensusParams: validParams()}, nil},
		{"params height 0", &ssproto.ParamsResponse{ConsensusParams: validParams()}, ssproto.ErrInvalidMessage},
		{"params empty", &ssproto.ParamsResponse{Height: 1}, ssproto.ErrInvalidMessage},
		{"params invalid", &ssproto.ParamsResponse{Height: 1, ConsensusParams: func() cmtproto.ConsensusParams {
			p := validParams()
			p.Block.MaxBytes = -5
			return p
		}()}, ssproto.ErrInvalidMessage},
		{"unknown type", &cmtproto.Header{}, ssproto.ErrInvalidMessage},
		{"nil snapshot response", (*ssproto.SnapshotsResponse)(nil), ssproto.ErrInvalidMessage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ssproto.Validate(tc.msg, l)
			if tc.err == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.err)
			}
		})
	}
}

// FuzzDecodeValidate feeds arbitrary bytes through what the switch and the
// reactor do with a message: unmarshal, unwrap, validate. None may panic.
func FuzzDecodeValidate(f *testing.F) {
	for _, s := range []string{"0a00", "1a06080110021803", "2a020864", "3200", "120c0801100218032201042a0105",
		"2209080110021803220104", "22080801100218032801", "3a020809", "32020a00", "42020801"} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	l := ssproto.DefaultLimits()
	f.Fuzz(func(t *testing.T, data []byte) {
		var env ssproto.Message
		if err := proto.Unmarshal(data, &env); err != nil {
			return
		}
		inner, err := env.Unwrap()
		if err != nil {
			return
		}
		_ = ssproto.Validate(inner, l)
	})
}
