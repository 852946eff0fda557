package statesync

import (
	"strings"
	"testing"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/stretchr/testify/require"
)

func TestConfigValidateBasicNamesTheField(t *testing.T) {
	require.NoError(t, DefaultConfig().ValidateBasic())
	require.NoError(t, TestConfig().ValidateBasic())
	cases := map[string]func(c *Config){
		"trust_period":          func(c *Config) { c.TrustPeriod = 0 },
		"discovery_time":        func(c *Config) { c.DiscoveryTime = -1 },
		"chunk_request_timeout": func(c *Config) { c.ChunkRequestTimeout = 0 },
		"chunk_fetchers":        func(c *Config) { c.ChunkFetchers = -1 },
		"max_snapshot_chunks":   func(c *Config) { c.MaxSnapshotChunks = 0 },
		"discovery_timeout":     func(c *Config) { c.DiscoveryTimeout = time.Second },
		"chunk_window":          func(c *Config) { c.ChunkWindow = 0 },
		"verify_timeout":        func(c *Config) { c.VerifyTimeout = 0 },
		"serve_workers":         func(c *Config) { c.ServeWorkers = 0 },
		"serve_per_peer":        func(c *Config) { c.ServePerPeer = 0 },
		"serve_queue_per_peer":  func(c *Config) { c.ServeQueuePerPeer = 1 },
		"trust_hash":            func(c *Config) { c.TrustHash = "zz" },
		"trust_height":          func(c *Config) { c.Enable = true },
		"rpc_servers": func(c *Config) {
			c.Enable, c.TrustHeight, c.TrustHash = true, 1, strings.Repeat("ab", 32)
			c.RPCServers = []string{"a:1"}
		},
	}
	for key, mutate := range cases {
		c := DefaultConfig()
		mutate(&c)
		err := c.ValidateBasic()
		require.ErrorIs(t, err, ErrInvalidConfig, key)
		require.ErrorContains(t, err, "statesync."+key)
	}
}

func TestFromCometBFT(t *testing.T) {
	cc := cmtcfg.DefaultStateSyncConfig()
	cc.Enable = true
	cc.RPCServers = []string{"a:1", "b:2"}
	cc.TrustHeight = 7
	cc.TrustHash = strings.Repeat("cd", 32)
	c := FromCometBFT(cc)
	require.Equal(t, cc.RPCServers, c.RPCServers)
	require.Equal(t, cc.DiscoveryTime, c.DiscoveryTime)
	require.Equal(t, cc.MaxSnapshotChunks, c.MaxSnapshotChunks)
	require.Equal(t, DefaultConfig().ChunkWindow, c.ChunkWindow)
	require.NoError(t, c.ValidateBasic())
	require.Len(t, c.TrustHashBytes(), 32)
}
