// Package ssproto holds the state sync wire messages (generated from
// statesync.proto with gogoproto's protoc-gen-gocosmos: make proto), their
// p2p wrapping, and the validation every inbound message must pass before it
// is acted on.
//
// The messages are the envelope Message (a oneof, field numbers 1-8 as in
// tendermint v0.35's tendermint.statesync; 1-4 as in CometBFT v0.40's) and
// its eight inner types. Each inner type implements p2p.Wrapper and Message
// implements p2p.Unwrapper, so a CometBFT switch whose channel descriptors
// name &Message{} as MessageType hands reactors inner messages and wraps
// what they send. Validate every inbound inner message before acting on it.
package ssproto

import (
	"errors"
	"fmt"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cosmos/gogoproto/proto"
)

// Channel IDs.
const (
	SnapshotChannel   = byte(0x60)
	ChunkChannel      = byte(0x61)
	LightBlockChannel = byte(0x62)
	ParamsChannel     = byte(0x63)
)

// Maximum size of one message on each channel (what the MConnection
// accepts), as in tendermint v0.35.
const (
	SnapshotMsgSize   = 4_000_000
	ChunkMsgSize      = 16_000_000
	LightBlockMsgSize = 10_000_000
	ParamsMsgSize     = 100_000
)

var (
	_ p2p.Unwrapper = (*Message)(nil)
	_ p2p.Wrapper   = (*SnapshotsRequest)(nil)
	_ p2p.Wrapper   = (*SnapshotsResponse)(nil)
	_ p2p.Wrapper   = (*ChunkRequest)(nil)
	_ p2p.Wrapper   = (*ChunkResponse)(nil)
	_ p2p.Wrapper   = (*LightBlockRequest)(nil)
	_ p2p.Wrapper   = (*LightBlockResponse)(nil)
	_ p2p.Wrapper   = (*ParamsRequest)(nil)
	_ p2p.Wrapper   = (*ParamsResponse)(nil)
)

// Wrap implements p2p.Wrapper.
func (m *SnapshotsRequest) Wrap() proto.Message {
	return &Message{Sum: &Message_SnapshotsRequest{SnapshotsRequest: m}}
}

// Wrap implements p2p.Wrapper.
func (m *SnapshotsResponse) Wrap() proto.Message {
	return &Message{Sum: &Message_SnapshotsResponse{SnapshotsResponse: m}}
}

// Wrap implements p2p.Wrapper.
func (m *ChunkRequest) Wrap() proto.Message {
	return &Message{Sum: &Message_ChunkRequest{ChunkRequest: m}}
}

// Wrap implements p2p.Wrapper.
func (m *ChunkResponse) Wrap() proto.Message {
	return &Message{Sum: &Message_ChunkResponse{ChunkResponse: m}}
}

// Wrap implements p2p.Wrapper.
func (m *LightBlockRequest) Wrap() proto.Message {
	return &Message{Sum: &Message_LightBlockRequest{LightBlockRequest: m}}
}

// Wrap implements p2p.Wrapper.
func (m *LightBlockResponse) Wrap() proto.Message {
	return &Message{Sum: &Message_LightBlockResponse{LightBlockResponse: m}}
}

// Wrap implements p2p.Wrapper.
func (m *ParamsRequest) Wrap() proto.Message {
	return &Message{Sum: &Message_ParamsRequest{ParamsRequest: m}}
}

// Wrap implements p2p.Wrapper.
func (m *ParamsResponse) Wrap() proto.Message {
	return &Message{Sum: &Message_ParamsResponse{ParamsResponse: m}}
}

// ErrEmptyMessage is wrapped (with ErrInvalidMessage) by the error of
// Unwrap for an envelope that holds no message: none set, a nil one, or one
// of a type this package does not know.
var ErrEmptyMessage = errors.New("ssproto: empty message")

// Unwrap implements p2p.Unwrapper: it returns the inner message, never nil
// when the error is nil. An envelope without one (see ErrEmptyMessage) is an
// error wrapping ErrInvalidMessage. A nil *Message is safe.
func (m *Message) Unwrap() (proto.Message, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: %w (nil envelope)", ErrInvalidMessage, ErrEmptyMessage)
	}
	var inner proto.Message
	switch s := m.Sum.(type) {
	case nil:
		return nil, fmt.Errorf("%w: %w (no message set)", ErrInvalidMessage, ErrEmptyMessage)
	// Each case guards against a typed nil wrapper and a nil inner message,
	// neither of which Unmarshal produces but a caller might.
	case *Message_SnapshotsRequest:
		if s != nil && s.SnapshotsRequest != nil {
			inner = s.SnapshotsRequest
		}
	case *Message_SnapshotsResponse:
		if s != nil && s.SnapshotsResponse != nil {
			inner = s.SnapshotsResponse
		}
	case *Message_ChunkRequest:
		if s != nil && s.ChunkRequest != nil {
			inner = s.ChunkRequest
		}
	case *Message_ChunkResponse:
		if s != nil && s.ChunkResponse != nil {
			inner = s.ChunkResponse
		}
	case *Message_LightBlockRequest:
		if s != nil && s.LightBlockRequest != nil {
			inner = s.LightBlockRequest
		}
	case *Message_LightBlockResponse:
		if s != nil && s.LightBlockResponse != nil {
			inner = s.LightBlockResponse
		}
	case *Message_ParamsRequest:
		if s != nil && s.ParamsRequest != nil {
			inner = s.ParamsRequest
		}
	case *Message_ParamsResponse:
		if s != nil && s.ParamsResponse != nil {
			inner = s.ParamsResponse
		}
	default:
		return nil, fmt.Errorf("%w: %w (unknown sum %T)", ErrInvalidMessage, ErrEmptyMessage, s)
	}
	if inner == nil {
		return nil, fmt.Errorf("%w: %w (nil %T)", ErrInvalidMessage, ErrEmptyMessage, m.Sum)
	}
	return inner, nil
}
