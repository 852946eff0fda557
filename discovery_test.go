package statesync

import (
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/stretchr/testify/require"
)

func TestDiscoveryReady(t *testing.T) {
	now := time.Now()
	d := newDiscovery(now, 10*time.Second)
	ok, at := d.ready(now, []p2p.ID{"a", "b", "c"}, false, 0)
	require.False(t, ok, "nothing usable")
	require.Equal(t, now.Add(10*time.Second), at)

	d.advertised("a", now)
	ok, at = d.ready(now, []p2p.ID{"a", "b", "c"}, true, 1)
	require.False(t, ok, "one peer of three, alone on its snapshot")
	require.Equal(t, now.Add(10*time.Second), at)

	d.advertised("b", now.Add(time.Second))
	ok, at = d.ready(now.Add(time.Second), []p2p.ID{"a", "b", "c"}, true, 2)
	require.False(t, ok, "two agree, but not quiet yet")
	require.Equal(t, now.Add(time.Second+discoveryQuiet), at)
	ok, _ = d.ready(now.Add(time.Second+discoveryQuiet), []p2p.ID{"a", "b", "c"}, true, 2)
	require.True(t, ok)

	d = newDiscovery(now, 10*time.Second)
	d.advertised("a", now)
	ok, _ = d.ready(now.Add(discoveryQuiet), []p2p.ID{"a"}, true, 1)
	require.True(t, ok, "every capable peer answered")

	d = newDiscovery(now, 10*time.Second)
	ok, _ = d.ready(now.Add(10*time.Second), nil, false, 0)
	require.True(t, ok, "the deadline ends it whatever was learnt")

	d = newDiscovery(now, 0)
	ok, _ = d.ready(now, nil, false, 0)
	require.True(t, ok, "discovery_time 0 does not wait")
}
