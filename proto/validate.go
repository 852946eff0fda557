package ssproto

import (
	"errors"
	"fmt"
	"math"

	"github.com/cosmos/gogoproto/proto"

	"github.com/cometbft/cometbft/types"
)

// ErrInvalidMessage is wrapped by every error of Validate, ToLightBlock,
// ToConsensusParams and Unwrap: the sender broke the protocol and should be
// disconnected.
var ErrInvalidMessage = errors.New("ssproto: invalid message")

// ErrTooManyChunks is wrapped by the error of Validate for a snapshot that
// advertises more chunks than Limits.MaxSnapshotChunks (CometBFT's
// max_snapshot_chunks). It wraps ErrInvalidMessage itself, so
// errors.Is(err, ErrInvalidMessage) holds as well.
var ErrTooManyChunks = fmt.Errorf("%w: too many chunks", ErrInvalidMessage)

// Limits caps what a peer can make us hold. A zero field allows nothing:
// start from DefaultLimits.
type Limits struct {
	MaxSnapshotChunks uint32 // chunks per snapshot (CometBFT's max_snapshot_chunks); also bounds chunk indexes
	MaxHashSize       int    // bytes of a snapshot hash
	MaxMetadataSize   int    // bytes of snapshot metadata
	MaxChunkSize      int    // bytes of one chunk body
}

// DefaultLimits returns CometBFT's default chunk cap (100000), 64-byte
// hashes, 64 KiB of metadata and chunks up to the chunk channel's message
// size less 1 KiB of envelope.
func DefaultLimits() Limits {
	return Limits{
		MaxSnapshotChunks: 100_000,
		MaxHashSize:       64,
		MaxMetadataSize:   64 << 10,
		MaxChunkSize:      ChunkMsgSize - 1024,
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
}

// checkHeight rejects height 0 and heights that do not fit the int64
// heights the rest of CometBFT uses.
func checkHeight(what string, h uint64) error {
	switch {
	case h == 0:
		return invalid("%s at height 0", what)
	case h > math.MaxInt64:
		return invalid("%s at height %d beyond int64", what, h)
	}
	return nil
}

// Validate checks a message against the protocol and l before anything acts
// on it. msg is an inner message (what Unwrap returns); an envelope is
// unwrapped first. The rules:
//
//   - every height is non-zero and fits an int64, except that a
//     SnapshotsRequest has none and an empty LightBlockResponse ("I do not
//     have it") is valid;
//   - SnapshotsResponse: 0 < chunks <= l.MaxSnapshotChunks (else
//     ErrTooManyChunks), a hash of 1..l.MaxHashSize bytes, metadata of at
//     most l.MaxMetadataSize bytes;
//   - ChunkRequest, ChunkResponse: index < l.MaxSnapshotChunks; a response
//     is either missing with no body or carries a body of
//     1..l.MaxChunkSize bytes;
//   - LightBlockResponse: a light block, if any, passes ToLightBlock;
//   - ParamsResponse: the params pass ToConsensusParams.
//
// Every error wraps ErrInvalidMessage. Validate never panics, whatever msg
// holds (typed nil pointers included).
func Validate(msg proto.Message, l Limits) error {
	switch m := msg.(type) {
	case *Message:
		inner, err := m.Unwrap()
		if err != nil {
			return err
		}
		return Validate(inner, l)

	case *SnapshotsRequest:
		if m == nil {
			return invalid("nil SnapshotsRequest")
		}
		return nil

	case *SnapshotsResponse:
		if m == nil {
			return invalid("nil SnapshotsResponse")
		}
		if err := checkHeight("snapshot", m.Height); err != nil {
			return err
		}
		switch {
		case m.Chunks == 0:
			return invalid("snapshot with no chunks")
		case m.Chunks > l.MaxSnapshotChunks:
			return fmt.Errorf("%w: snapshot of %d chunks > %d", ErrTooManyChunks, m.Chunks, l.MaxSnapshotChunks)
		case len(m.Hash) == 0:
			return invalid("snapshot without hash")
		case len(m.Hash) > l.MaxHashSize:
			return invalid("snapshot hash of %d bytes > %d", len(m.Hash), l.MaxHashSize)
		case len(m.Metadata) > l.MaxMetadataSize:
			return invalid("snapshot metadata of %d bytes > %d", len(m.Metadata), l.MaxMetadataSize)
		}
		return nil

	case *ChunkRequest:
		if m == nil {
			return invalid("nil ChunkRequest")
		}
		if err := checkHeight("chunk request", m.Height); err != nil {
			return err
		}
		if m.Index >= l.MaxSnapshotChunks {
			return invalid("chunk request index %d beyond the %d-chunk cap", m.Index, l.MaxSnapshotChunks)
		}
		return nil

	case *ChunkResponse:
		if m == nil {
			return invalid("nil ChunkResponse")
		}
		if err := checkHeight("chunk response", m.Height); err != nil {
			return err
		}
		switch {
		case m.Index >= l.MaxSnapshotChunks:
			return invalid("chunk response index %d beyond the %d-chunk cap", m.Index, l.MaxSnapshotChunks)
		case m.Missing && len(m.Chunk) > 0:
			return invalid("chunk %d marked missing carries %d bytes", m.Index, len(m.Chunk))
		case !m.Missing && len(m.Chunk) == 0:
			return invalid("chunk %d has no body and is not marked missing", m.Index)
		case len(m.Chunk) > l.MaxChunkSize:
			return invalid("chunk %d of %d bytes > %d", m.Index, len(m.Chunk), l.MaxChunkSize)
		}
		return nil

	case *LightBlockRequest:
		if m == nil {
			return invalid("nil LightBlockRequest")
		}
		return checkHeight("light block request", m.Height)

	case *LightBlockResponse:
		if m == nil {
			return invalid("nil LightBlockResponse")
		}
		_, err := ToLightBlock(m) // nil light block: valid, "I do not have it"
		return err

	case *ParamsRequest:
		if m == nil {
			return invalid("nil ParamsRequest")
		}
		return checkHeight("params request", m.Height)

	case *ParamsResponse:
		if m == nil {
			return invalid("nil ParamsResponse")
		}
		if err := checkHeight("params response", m.Height); err != nil {
			return err
		}
		_, err := ToConsensusParams(m)
		return err

	default:
		return invalid("unknown message type %T", msg)
	}
}

// ToLightBlock converts the light block of a response and checks it on its
// own: signed header, commit and validator set present, header height
// positive, and LightBlock.ValidateBasic with the header's own chain ID
// (header and commit agree, the validator set hashes to the header's
// ValidatorsHash). Signatures are not verified: that is the light client's
// job. The result is nil, with no error, when the response carries no light
// block. Errors wrap ErrInvalidMessage; it never panics.
func ToLightBlock(m *LightBlockResponse) (lb *types.LightBlock, err error) {
	if m == nil || m.LightBlock == nil {
		return nil, nil
	}
	p := m.LightBlock
	switch {
	case p.SignedHeader == nil || p.SignedHeader.Header == nil:
		return nil, invalid("light block without header")
	case p.SignedHeader.Commit == nil:
		return nil, invalid("light block without commit")
	case p.ValidatorSet == nil:
		return nil, invalid("light block without validator set")
	case p.SignedHeader.Header.Height <= 0:
		return nil, invalid("light block at height %d", p.SignedHeader.Header.Height)
	}
	// Last line of defence: the checks above and ValidateBasic are meant to
	// rule out every panic in CometBFT's converters, and FuzzDecodeValidate
	// looks for the ones they miss; a peer must not crash us regardless.
	defer func() {
		if r := recover(); r != nil {
			lb, err = nil, invalid("light block conversion panicked: %v", r)
		}
	}()
	lb, err = types.LightBlockFromProto(p)
	if err != nil {
		return nil, invalid("light block: %v", err)
	}
	if err := lb.ValidateBasic(lb.ChainID); err != nil {
		return nil, invalid("light block at height %d: %v", lb.Height, err)
	}
	return lb, nil
}

// ToConsensusParams converts the params of a response and checks them:
// block, evidence, validator and version params present (CometBFT's
// converter needs all four; ABCI and authority params are optional, as
// tendermint v0.35 has neither) and ConsensusParams.ValidateBasic. It does
// not look at the height. Only the block params are covered by a header's
// ConsensusHash: callers must not trust the rest further than that. Errors
// wrap ErrInvalidMessage; it never panics.
func ToConsensusParams(m *ParamsResponse) (params types.ConsensusParams, err error) {
	if m == nil {
		return params, invalid("nil ParamsResponse")
	}
	p := m.ConsensusParams
	switch {
	case p.Block == nil:
		return params, invalid("consensus params without block params")
	case p.Evidence == nil:
		return params, invalid("consensus params without evidence params")
	case p.Validator == nil:
		return params, invalid("consensus params without validator params")
	case p.Version == nil:
		return params, invalid("consensus params without version params")
	}
	defer func() { // see ToLightBlock
		if r := recover(); r != nil {
			params, err = types.ConsensusParams{}, invalid("consensus params conversion panicked: %v", r)
		}
	}()
	params = types.ConsensusParamsFromProto(p)
	if err := params.ValidateBasic(); err != nil {
		return types.ConsensusParams{}, invalid("consensus params: %v", err)
	}
	return params, nil
}
