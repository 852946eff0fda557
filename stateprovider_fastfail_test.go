package statesync

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestP2PVerificationFailsFast: with use_p2p and every connected peer a
// stock node (no 0x62/0x63), building the P2P state provider fails after
// light_peers_timeout, not after the whole discovery_timeout, and the
// error says what to change. (Before: it waited discovery_timeout.)
func TestP2PVerificationFailsFast(t *testing.T) {
	chain := p2pChain(t, 20, nil)
	n := newBackfillNode(t, chain, func(c *Config) {
		c.DiscoveryTimeout = 10 * time.Minute
		c.LightPeersTimeout = 100 * time.Millisecond
	})
	n.net.add("stock1", &fakePeer{chain: chain, channels: []byte{SnapshotChannel, ChunkChannel}})
	n.net.add("stock2", &fakePeer{chain: chain, channels: []byte{SnapshotChannel, ChunkChannel}})
	_, err := newP2PStateProvider(backfillCtx(t), n.r, chain.TrustOptions(1, 24*time.Hour))
	require.ErrorIs(t, err, ErrNotEnoughPeers)
	require.ErrorContains(t, err, "statesync.light_peers_timeout")
	require.ErrorContains(t, err, "0 of 2 connected peers")
	require.ErrorContains(t, err, "statesync.rpc_servers")
}

// TestTrustHeightBelowEveryPeer: a trust height every peer has pruned is
// not "not available yet": the error says it will never be and what to
// change. (Before: ErrHeightNotAvailable.)
func TestTrustHeightBelowEveryPeer(t *testing.T) {
	chain := p2pChain(t, 200, nil)
	n := newBackfillNode(t, chain, nil)
	n.net.add("pruned1", &fakePeer{chain: chain, base: 100})
	n.net.add("pruned2", &fakePeer{chain: chain, base: 100})
	_, err := newP2PStateProvider(backfillCtx(t), n.r, chain.TrustOptions(5, 24*time.Hour))
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.NotErrorIs(t, err, ErrHeightNotAvailable)
	require.ErrorContains(t, err, "statesync.trust_height")
	require.ErrorContains(t, err, "below the lowest height")
}
