// Package ssproto holds the state sync wire messages (generated from
// statesync/v1/statesync.proto with gogoproto), their p2p wrapping, and
// the validation every inbound message must pass before it is acted on.
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

// ErrEmptyMessage is returned by Unwrap for an envelope with no message.
var ErrEmptyMessage = errors.New("ssproto: empty message")

// Unwrap implements p2p.Unwrapper: it returns the inner message. An
// envelope without one (or with a nil one) is an error wrapping
// ErrInvalidMessage.
func (m *Message) Unwrap() (proto.Message, error) {
	var inner proto.Message
	switch s := m.Sum.(type) {
	case *Message_SnapshotsRequest:
		if s.SnapshotsRequest != nil {
			inner = s.SnapshotsRequest
		}
	case *Message_SnapshotsResponse:
		if s.SnapshotsResponse != nil {
			inner = s.SnapshotsResponse
		}
	case *Message_ChunkRequest:
		if s.ChunkRequest != nil {
			inner = s.ChunkRequest
		}
	case *Message_ChunkResponse:
		if s.ChunkResponse != nil {
			inner = s.ChunkResponse
		}
	case *Message_LightBlockRequest:
		if s.LightBlockRequest != nil {
			inner = s.LightBlockRequest
		}
	case *Message_LightBlockResponse:
		if s.LightBlockResponse != nil {
			inner = s.LightBlockResponse
		}
	case *Message_ParamsRequest:
		if s.ParamsRequest != nil {
			inner = s.ParamsRequest
		}
	case *Message_ParamsResponse:
		if s.ParamsResponse != nil {
			inner = s.ParamsResponse
		}
	default:
		return nil, fmt.Errorf("%w: %w (%T)", ErrInvalidMessage, ErrEmptyMessage, s)
	}
	if inner == nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMessage, ErrEmptyMessage)
	}
	return inner, nil
}
