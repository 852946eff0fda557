package statesync

import (
	"encoding/hex"
	"fmt"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
)

// Config configures the Reactor. Field names and TOML keys follow
// CometBFT's [statesync] section; the keys after MaxSnapshotChunks are ours.
type Config struct {
	// Enable: run Sync at boot (read by node wiring; the Reactor serves
	// peers either way).
	Enable bool `mapstructure:"enable" toml:"enable"`
	// TempDir is where chunks are spooled while restoring (a fresh
	// subdirectory per snapshot, removed when Sync ends). Empty: the OS
	// temporary directory.
	TempDir string `mapstructure:"temp_dir" toml:"temp_dir"`
	// RPCServers are at least two distinct CometBFT RPC servers used by the
	// light client to verify the snapshot height.
	RPCServers []string `mapstructure:"rpc_servers" toml:"rpc_servers"`
	// TrustPeriod is the light client's trusting period (default 168h). A
	// trust root older than this is refused.
	TrustPeriod time.Duration `mapstructure:"trust_period" toml:"trust_period"`
	// TrustHeight and TrustHash are the trusted header the light client
	// starts from (hex hash).
	TrustHeight int64  `mapstructure:"trust_height" toml:"trust_height"`
	TrustHash   string `mapstructure:"trust_hash" toml:"trust_hash"`
	// DiscoveryTime is how long to collect snapshot advertisements before
	// choosing one, and the interval between re-asking peers (default 15s).
	DiscoveryTime time.Duration `mapstructure:"discovery_time" toml:"discovery_time"`
	// ChunkRequestTimeout: a chunk request times out when its peer delivers
	// nothing for this long; it is then requested from another peer
	// (default 10s).
	ChunkRequestTimeout time.Duration `mapstructure:"chunk_request_timeout" toml:"chunk_request_timeout"`
	// ChunkFetchers is accepted for compatibility with CometBFT's config and
	// not used: every peer serving the snapshot gets its own window of
	// ChunkWindow requests instead of a fixed number of fetchers.
	ChunkFetchers int32 `mapstructure:"chunk_fetchers" toml:"chunk_fetchers"`
	// MaxSnapshotChunks: a peer advertising a snapshot with more chunks is
	// disconnected (default 100000).
	MaxSnapshotChunks uint32 `mapstructure:"max_snapshot_chunks" toml:"max_snapshot_chunks"`

	// DiscoveryTimeout bounds how long Sync looks for a usable snapshot
	// (while none is being restored) before it fails with ErrNoSnapshots or
	// ErrAllSnapshotsRejected (default 2m).
	DiscoveryTimeout time.Duration `mapstructure:"discovery_timeout" toml:"discovery_timeout"`
	// ChunkWindow is the number of chunk requests in flight per peer
	// (default 4).
	ChunkWindow int `mapstructure:"chunk_window" toml:"chunk_window"`
	// VerifyTimeout bounds every light-client verification (default 30s).
	VerifyTimeout time.Duration `mapstructure:"verify_timeout" toml:"verify_timeout"`
	// ServeWorkers is the number of goroutines serving peers' requests
	// (default 8).
	ServeWorkers int `mapstructure:"serve_workers" toml:"serve_workers"`
	// ServePerPeer caps how many of one peer's requests are served at once
	// (default 2).
	ServePerPeer int `mapstructure:"serve_per_peer" toml:"serve_per_peer"`
	// ServeQueuePerPeer caps how many requests one peer may have queued or
	// running; more are dropped (default 16).
	ServeQueuePerPeer int `mapstructure:"serve_queue_per_peer" toml:"serve_queue_per_peer"`
}

// DefaultConfig returns the defaults documented on each field.
func DefaultConfig() Config {
	return Config{
		TrustPeriod:         168 * time.Hour,
		DiscoveryTime:       15 * time.Second,
		ChunkRequestTimeout: 10 * time.Second,
		ChunkFetchers:       4,
		MaxSnapshotChunks:   100_000,
		DiscoveryTimeout:    2 * time.Minute,
		ChunkWindow:         4,
		VerifyTimeout:       30 * time.Second,
		ServeWorkers:        8,
		ServePerPeer:        2,
		ServeQueuePerPeer:   16,
	}
}

// TestConfig returns a configuration with short timeouts for tests.
func TestConfig() Config {
	c := DefaultConfig()
	c.DiscoveryTime = 200 * time.Millisecond
	c.DiscoveryTimeout = 5 * time.Second
	c.ChunkRequestTimeout = 2 * time.Second
	c.VerifyTimeout = 5 * time.Second
	return c
}

// FromCometBFT starts from a node's [statesync] section, keeping our own
// settings at their defaults.
func FromCometBFT(c *cmtcfg.StateSyncConfig) Config {
	out := DefaultConfig()
	if c == nil {
		return out
	}
	out.Enable = c.Enable
	out.TempDir = c.TempDir
	out.RPCServers = append([]string(nil), c.RPCServers...)
	out.TrustPeriod = c.TrustPeriod
	out.TrustHeight = c.TrustHeight
	out.TrustHash = c.TrustHash
	out.DiscoveryTime = c.DiscoveryTime
	out.ChunkRequestTimeout = c.ChunkRequestTimeout
	out.ChunkFetchers = c.ChunkFetchers
	out.MaxSnapshotChunks = c.MaxSnapshotChunks
	return out
}

// TrustHashBytes decodes TrustHash (nil if it is not valid hex).
func (c Config) TrustHashBytes() []byte {
	b, err := hex.DecodeString(c.TrustHash)
	if err != nil {
		return nil
	}
	return b
}

func bad(key string, format string, args ...any) error {
	return fmt.Errorf("%w: statesync.%s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...))
}

// ValidateBasic checks every field; the error wraps ErrInvalidConfig and
// names the field by its TOML key. Settings that only matter to Sync (RPC
// servers, trust root) are checked when Enable is set.
func (c Config) ValidateBasic() error {
	switch {
	case c.TrustPeriod <= 0:
		return bad("trust_period", "must be positive, got %v", c.TrustPeriod)
	case c.DiscoveryTime <= 0:
		return bad("discovery_time", "must be positive, got %v", c.DiscoveryTime)
	case c.ChunkRequestTimeout <= 0:
		return bad("chunk_request_timeout", "must be positive, got %v", c.ChunkRequestTimeout)
	case c.ChunkFetchers < 0:
		return bad("chunk_fetchers", "must not be negative, got %d", c.ChunkFetchers)
	case c.MaxSnapshotChunks == 0:
		return bad("max_snapshot_chunks", "must be positive")
	case c.DiscoveryTimeout < c.DiscoveryTime:
		return bad("discovery_timeout", "%v is shorter than discovery_time %v", c.DiscoveryTimeout, c.DiscoveryTime)
	case c.ChunkWindow < 1 || c.ChunkWindow > 64:
		return bad("chunk_window", "must be in [1, 64], got %d", c.ChunkWindow)
	case c.VerifyTimeout <= 0:
		return bad("verify_timeout", "must be positive, got %v", c.VerifyTimeout)
	case c.ServeWorkers < 1:
		return bad("serve_workers", "must be at least 1, got %d", c.ServeWorkers)
	case c.ServePerPeer < 1:
		return bad("serve_per_peer", "must be at least 1, got %d", c.ServePerPeer)
	case c.ServeQueuePerPeer < c.ServePerPeer:
		return bad("serve_queue_per_peer", "%d is below serve_per_peer %d", c.ServeQueuePerPeer, c.ServePerPeer)
	}
	if c.TrustHash != "" {
		if _, err := hex.DecodeString(c.TrustHash); err != nil {
			return bad("trust_hash", "not hex: %v", err)
		}
	}
	if !c.Enable {
		return nil
	}
	switch {
	case c.TrustHeight <= 0:
		return bad("trust_height", "must be positive when state sync is enabled, got %d", c.TrustHeight)
	case len(c.TrustHashBytes()) != 32:
		return bad("trust_hash", "must be a 32-byte hex hash when state sync is enabled, got %q", c.TrustHash)
	case len(c.RPCServers) < 2:
		return bad("rpc_servers", "at least 2 distinct RPC servers are needed, got %d", len(c.RPCServers))
	}
	return nil
}
