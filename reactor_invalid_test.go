package statesync

import (
	"testing"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/p2p"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cosmos/gogoproto/proto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
	ssproto "github.com/statesync/statesync/proto"
)

// newBareReactor is a reactor on an empty app and empty stores.
func newBareReactor(t *testing.T, metrics *Metrics) *Reactor {
	t.Helper()
	conns := newAppConns(t, kvapp.New(kvapp.Options{}))
	r, err := NewReactor(testConfig(), Deps{
		Snapshots: conns.Snapshot(), Query: conns.Query(),
		StateStore: sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{}), BlockStore: store.NewBlockStore(dbm.NewMemDB()),
		Metrics: metrics,
	})
	require.NoError(t, err)
	return r
}

// TestInvalidMessagesPunishPeer sends an invalid message of every type over
// a real MConnection; the receiver disconnects the sender for cause (counted
// by reason, so a recovered panic would not pass) and keeps running.
func TestInvalidMessagesPunishPeer(t *testing.T) {
	tooManyChunks := &ssproto.SnapshotsResponse{Height: 1, Format: 1, Chunks: 100_001, Hash: []byte{1}}
	cases := []struct {
		name   string
		ch     byte
		msg    proto.Message
		reason string
	}{
		{"snapshot height 0", SnapshotChannel, &ssproto.SnapshotsResponse{Chunks: 1, Hash: []byte{1}}, "invalid_message"},
		{"snapshot 0 chunks", SnapshotChannel, &ssproto.SnapshotsResponse{Height: 1, Hash: []byte{1}}, "invalid_message"},
		{"snapshot too many chunks", SnapshotChannel, tooManyChunks, "too_many_chunks"},
		{"chunk request height 0", ChunkChannel, &ssproto.ChunkRequest{}, "invalid_message"},
		{"chunk missing with body", ChunkChannel, &ssproto.ChunkResponse{Height: 1, Missing: true, Chunk: []byte{1}}, "invalid_message"},
		{"chunk on snapshot channel", SnapshotChannel, &ssproto.ChunkResponse{Height: 1, Chunk: []byte{1}}, "invalid_message"},
		{"light block request height 0", LightBlockChannel, &ssproto.LightBlockRequest{}, "invalid_message"},
		{"light block without header", LightBlockChannel, &ssproto.LightBlockResponse{LightBlock: &cmtproto.LightBlock{}}, "invalid_message"},
		{"params request height 0", ParamsChannel, &ssproto.ParamsRequest{}, "invalid_message"},
		{"params response empty params", ParamsChannel, &ssproto.ParamsResponse{Height: 1}, "invalid_message"},
		// An envelope with no message never reaches the reactor: the
		// switch's Unwrap fails and the switch itself drops the peer.
		{"empty envelope", SnapshotChannel, &ssproto.Message{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			metrics, err := NewMetrics(reg, "test")
			require.NoError(t, err)
			receiver := newBareReactor(t, metrics)
			sender := newBareReactor(t, nil)
			nodes := p2ptest.Network(t, p2ptest.Config(0), []map[string]p2p.Reactor{
				{"STATESYNC": receiver}, {"STATESYNC": sender},
			})
			peer := nodes[1].Switch.Peers().Get(nodes[0].ID())
			require.NotNil(t, peer)
			require.True(t, peer.Send(p2p.Envelope{ChannelID: tc.ch, Message: tc.msg}))
			waitFor(t, "sender disconnected", func() bool {
				return !nodes[0].Switch.Peers().Has(nodes[1].ID())
			})
			if tc.reason != "" {
				require.Equal(t, 1.0, metricValue(t, reg, "test_statesync_peers_punished_total", tc.reason))
			}
			require.True(t, receiver.IsRunning())
		})
	}
}

// TestUnsolicitedSnapshotsDropped: snapshot responses nobody asked for are
// dropped and counted, not pooled.
func TestUnsolicitedResponsesDropped(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg, "test")
	require.NoError(t, err)
	r := newBareReactor(t, metrics)
	require.NoError(t, r.Start())
	t.Cleanup(func() { _ = r.Stop() })
	r.PeerUp("peer", nil)
	r.Deliver("peer", SnapshotChannel, &ssproto.SnapshotsResponse{Height: 1, Format: 1, Chunks: 1, Hash: []byte{1}})
	r.Deliver("peer", ChunkChannel, &ssproto.ChunkResponse{Height: 1, Chunk: []byte{1}})
	r.Deliver("peer", LightBlockChannel, &ssproto.LightBlockResponse{})
	require.Equal(t, 3.0, metricValue(t, reg, "test_statesync_unsolicited_messages_total", ""))
}
