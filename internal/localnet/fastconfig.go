package localnet

import (
	"time"

	"github.com/statesync/statesync"
)

// FastConfig returns statesync.DefaultConfig with timeouts short enough for
// tests on one machine. The root package's tests have the same settings
// in their own testConfig (they cannot import this package).
func FastConfig() statesync.Config {
	c := statesync.DefaultConfig()
	c.DiscoveryTime = 200 * time.Millisecond
	c.DiscoveryTimeout = 5 * time.Second
	c.ChunkRequestTimeout = 2 * time.Second
	c.VerifyTimeout = 5 * time.Second
	c.LightBlockTimeout = 2 * time.Second
	return c
}
