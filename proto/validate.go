package ssproto

import (
	"errors"
	"fmt"

	"github.com/cosmos/gogoproto/proto"

	"github.com/cometbft/cometbft/types"
)

// ErrInvalidMessage is wrapped by every validation error: the sender broke
// the protocol and should be disconnected.
var ErrInvalidMessage = errors.New("ssproto: invalid message")

// ErrTooManyChunks is returned (wrapping ErrInvalidMessage) for a snapshot
// advertising more chunks than Limits.MaxSnapshotChunks.
var ErrTooManyChunks = fmt.Errorf("%w: too many chunks", ErrInvalidMessage)

// Limits caps what a peer can make us hold.
type Limits struct {
	MaxSnapshotChunks uint32 // chunks per snapshot (CometBFT's max_snapshot_chunks)
	MaxHashSize       int    // bytes of a snapshot hash
	MaxMetadataSize   int    // bytes of snapshot metadata
	MaxChunkSize      int    // bytes of one chunk
}

// DefaultLimits returns CometBFT's default chunk cap (100000), 64-byte
// hashes, 64 KiB metadata and chunks up to the chunk channel's message
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

// Validate checks an inner (unwrapped) message against the protocol and l.
// It never panics; every error wraps ErrInvalidMessage.
func Validate(msg proto.Message, l Limits) error {
	switch m := msg.(type) {
	case *SnapshotsRequest:
		if m == nil {
			return invalid("nil SnapshotsRequest")
		}
		return nil

	case *SnapshotsResponse:
		switch {
		case m == nil:
			return invalid("nil SnapshotsResponse")
		case m.Height == 0:
			return invalid("snapshot height 0")
		case m.Chunks == 0:
			return invalid("snapshot with no chunks")
		case m.Chunks > l.MaxSnapshotChunks:
			return fmt.Errorf("%w: %d > %d", ErrTooManyChunks, m.Chunks, l.MaxSnapshotChunks)
		case len(m.Hash) == 0:
			return invalid("snapshot without hash")
		case len(m.Hash) > l.MaxHashSize:
			return invalid("snapshot hash of %d bytes > %d", len(m.Hash), l.MaxHashSize)
		case len(m.Metadata) > l.MaxMetadataSize:
			return invalid("snapshot metadata of %d bytes > %d", len(m.Metadata), l.MaxMetadataSize)
		}
		return nil

	case *ChunkRequest:
		switch {
		case m == nil:
			return invalid("nil ChunkRequest")
		case m.Height == 0:
			return invalid("chunk request for height 0")
		case m.Index >= l.MaxSnapshotChunks:
			return invalid("chunk index %d beyond the %d-chunk cap", m.Index, l.MaxSnapshotChunks)
		}
		return nil

	case *ChunkResponse:
		switch {
		case m == nil:
			return invalid("nil ChunkResponse")
		case m.Height == 0:
			return invalid("chunk response for height 0")
		case m.Index >= l.MaxSnapshotChunks:
			return invalid("chunk index %d beyond the %d-chunk cap", m.Index, l.MaxSnapshotChunks)
		case m.Missing && len(m.Chunk) > 0:
			return invalid("chunk marked missing has a body")
		case !m.Missing && len(m.Chunk) == 0:
			return invalid("chunk without body not marked missing")
		case len(m.Chunk) > l.MaxChunkSize:
			return invalid("chunk of %d bytes > %d", len(m.Chunk), l.MaxChunkSize)
		}
		return nil

	case *LightBlockRequest:
		if m == nil || m.Height == 0 {
			return invalid("light block request for height 0")
		}
		return nil

	case *LightBlockResponse:
		if m == nil {
			return invalid("nil LightBlockResponse")
		}
		if m.LightBlock == nil {
			return nil // "I do not have it"
		}
		return validateLightBlock(m)

	case *ParamsRequest:
		if m == nil || m.Height == 0 {
			return invalid("params request for height 0")
		}
		return nil

	case *ParamsResponse:
		if m == nil || m.Height == 0 {
			return invalid("params response for height 0")
		}
		if _, err := ToConsensusParams(m); err != nil {
			return err
		}
		return nil

	default:
		return invalid("unknown message type %T", msg)
	}
}

func validateLightBlock(m *LightBlockResponse) (err error) {
	lb, err := ToLightBlock(m)
	if err != nil {
		return err
	}
	if lb.Height <= 0 {
		return invalid("light block at height %d", lb.Height)
	}
	return nil
}

// ToLightBlock converts and checks the light block of a response: signed
// header and validator set present, internally consistent
// (LightBlock.ValidateBasic with its own chain ID). The result is nil when
// the response carries no light block.
func ToLightBlock(m *LightBlockResponse) (lb *types.LightBlock, err error) {
	if m == nil || m.LightBlock == nil {
		return nil, nil
	}
	defer func() {
		if r := recover(); r != nil { // CometBFT's converters must not take us down
			lb, err = nil, invalid("light block conversion panicked: %v", r)
		}
	}()
	p := m.LightBlock
	if p.SignedHeader == nil || p.SignedHeader.Header == nil || p.SignedHeader.Commit == nil || p.ValidatorSet == nil {
		return nil, invalid("light block misses its header, commit or validators")
	}
	lb, err = types.LightBlockFromProto(p)
	if err != nil {
		return nil, invalid("light block: %v", err)
	}
	if err := lb.ValidateBasic(lb.ChainID); err != nil {
		return nil, invalid("light block: %v", err)
	}
	return lb, nil
}

// ToConsensusParams converts and checks the params of a response.
func ToConsensusParams(m *ParamsResponse) (params types.ConsensusParams, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = invalid("consensus params conversion panicked: %v", r)
		}
	}()
	if m.ConsensusParams.Block == nil || m.ConsensusParams.Evidence == nil || m.ConsensusParams.Validator == nil {
		return params, invalid("consensus params miss block, evidence or validator params")
	}
	params = types.ConsensusParamsFromProto(m.ConsensusParams)
	if err := params.ValidateBasic(); err != nil {
		return params, invalid("consensus params: %v", err)
	}
	return params, nil
}
