package statesync

import (
	"testing"

	"github.com/cometbft/cometbft/p2p"
	"github.com/stretchr/testify/require"
)

// TestRepeatGuard: an honest restorer (each chunk once; re-asked after a
// dropped answer; a late answer crossing a re-ask; a second full restore
// over the same connection) is never reported; a peer asking again and
// again for chunks it was given is reported once, after maxRepeats
// repeats; a reconnection starts clean.
func TestRepeatGuard(t *testing.T) {
	g := newRepeatGuard()
	key := func(i int) chunkKey { return chunkKey{height: 10, format: 1, index: uint32(i)} }
	const chunks = 100

	for round := 0; round < repeatDeliveries; round++ { // two full restores
		for i := range chunks {
			require.NoError(t, g.asked("honest", key(i)))
			if i%7 == 0 {
				require.NoError(t, g.asked("honest", key(i))) // re-asked: the first answer was dropped
			}
			g.delivered("honest", key(i))
		}
	}

	// A flooder cycling over the chunks.
	var reports int
	for k := range 10 * chunks {
		if err := g.asked("flooder", key(k%chunks)); err != nil {
			require.ErrorIs(t, err, ErrPeerMisbehaved)
			require.Equal(t, repeatDeliveries*chunks+maxRepeats, k, "reported on the first repeat past the limit")
			reports++
		}
		g.delivered("flooder", key(k%chunks))
	}
	require.Equal(t, 1, reports, "reported once")

	g.removePeer("flooder")
	require.NotContains(t, g.peers, p2p.ID("flooder"))
	require.NoError(t, g.asked("flooder", key(0)), "a new connection starts clean")

	// Memory: a peer asking for ever new chunks holds at most
	// maxTrackedChunks entries.
	for i := range 3 * maxTrackedChunks {
		g.delivered("wide", key(i))
	}
	require.LessOrEqual(t, len(g.peers["wide"].delivered), maxTrackedChunks)
}
