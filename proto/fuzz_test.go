package ssproto_test

import (
	"bytes"
	"testing"

	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cosmos/gogoproto/proto"

	ssproto "github.com/statesync/statesync/proto"
)

// FuzzDecodeValidate feeds arbitrary bytes through what the switch and the
// reactor do with an inbound message: unmarshal into the envelope, unwrap,
// validate, convert. None of it may panic, and what decodes re-encodes
// stably. Seeds: every wire vector, valid light blocks and params, and
// invalid variants of them. Run: make fuzz (or go test ./proto -run '^$'
// -fuzz FuzzDecodeValidate -fuzztime 30s).
func FuzzDecodeValidate(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(mustHex(f, v.Hex))
	}
	lb := lightBlockProto(f, 12, 3)
	noCommit := lightBlockProto(f, 12, 3)
	noCommit.SignedHeader.Commit = nil
	noProposer := lightBlockProto(f, 12, 1)
	noProposer.ValidatorSet.Proposer = nil
	params := defaultParamsProto()
	noVersion := defaultParamsProto()
	noVersion.Version = nil
	for _, m := range []interface{ Wrap() proto.Message }{
		&ssproto.LightBlockResponse{LightBlock: lb},
		&ssproto.LightBlockResponse{LightBlock: noCommit},
		&ssproto.LightBlockResponse{LightBlock: noProposer},
		&ssproto.LightBlockResponse{LightBlock: &cmtproto.LightBlock{SignedHeader: &cmtproto.SignedHeader{}}},
		&ssproto.ParamsResponse{Height: 4, ConsensusParams: params},
		&ssproto.ParamsResponse{Height: 4, ConsensusParams: noVersion},
		&ssproto.SnapshotsResponse{Height: 1, Chunks: 200000, Hash: []byte{1}},
		&ssproto.ChunkResponse{Height: 1, Missing: true, Chunk: []byte{1}},
	} {
		bz, err := proto.Marshal(m.Wrap())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bz)
		f.Add(bz[:len(bz)/2]) // truncated
	}
	f.Add([]byte{})
	f.Add([]byte{0x42, 0x02, 0x12, 0x00})                   // params response without params' contents, height 0
	f.Add([]byte{0x4a, 0x00})                               // unknown envelope field 9
	f.Add([]byte{0x0a, 0x00, 0x1a, 0x02, 0x08, 0x01})       // two sums: the last wins
	f.Add([]byte{0x2a, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff}) // length beyond the end

	l := ssproto.DefaultLimits()
	f.Fuzz(func(t *testing.T, data []byte) {
		var env ssproto.Message
		if err := proto.Unmarshal(data, &env); err != nil {
			return
		}
		inner, uerr := env.Unwrap()
		verr := ssproto.Validate(&env, l) // the envelope path unwraps too
		if uerr != nil {
			if verr == nil {
				t.Fatalf("Validate accepts an envelope Unwrap refuses: %v", uerr)
			}
			return
		}
		err := ssproto.Validate(inner, l)
		if (err == nil) != (verr == nil) {
			t.Fatalf("Validate(inner) = %v but Validate(envelope) = %v", err, verr)
		}
		switch m := inner.(type) {
		case *ssproto.LightBlockResponse:
			got, cerr := ssproto.ToLightBlock(m)
			if (cerr == nil) != (err == nil) {
				t.Fatalf("ToLightBlock = %v, Validate = %v", cerr, err)
			}
			if err == nil && (got == nil) != (m.LightBlock == nil) {
				t.Fatalf("ToLightBlock dropped or invented a light block")
			}
		case *ssproto.ParamsResponse:
			_, cerr := ssproto.ToConsensusParams(m)
			if err == nil && cerr != nil {
				t.Fatalf("Validate passed params ToConsensusParams refuses: %v", cerr)
			}
		}

		// What decodes re-encodes, and the re-encoding is a fixed point.
		bz, merr := proto.Marshal(&env)
		if merr != nil {
			return // e.g. a time out of range only on the way out; we never re-send peers' bytes
		}
		var again ssproto.Message
		if err := proto.Unmarshal(bz, &again); err != nil {
			t.Fatalf("re-encoding %x does not decode: %v", bz, err)
		}
		bz2, err := proto.Marshal(&again)
		if err != nil || !bytes.Equal(bz, bz2) {
			t.Fatalf("encoding not stable: %x then %x (%v)", bz, bz2, err)
		}
	})
}
