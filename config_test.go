package statesync

import (
	"reflect"
	"strings"
	"testing"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/stretchr/testify/require"
)

var validTrustHash = strings.Repeat("ab", 32)

func TestConfigDefaultsAreValid(t *testing.T) {
	require.NoError(t, DefaultConfig().ValidateBasic())
	require.NoError(t, testConfig().ValidateBasic())
	d := DefaultConfig()
	require.False(t, d.Enable)
	require.True(t, d.Backfill)
	require.Equal(t, 168*time.Hour, d.TrustPeriod)
	require.Equal(t, 4, d.ChunkWindow)
	require.Equal(t, 2*time.Minute, d.DiscoveryTimeout)
	require.Equal(t, 10*time.Second, d.LightBlockTimeout)
	require.Equal(t, 30*time.Second, d.VerifyTimeout)
	require.Equal(t, 128, d.BackfillWindow)
	require.Equal(t, 128, d.ServeQueuePerPeer)
}

func TestConfigValidateBasicNamesTheField(t *testing.T) {
	enabled := func(c *Config) {
		c.Enable, c.TrustHeight, c.TrustHash = true, 1, validTrustHash
		c.RPCServers = []string{"a:1", "b:2"}
	}
	cases := map[string]func(c *Config){
		"trust_period":          func(c *Config) { c.TrustPeriod = 0 },
		"discovery_time":        func(c *Config) { c.DiscoveryTime = -1 },
		"chunk_request_timeout": func(c *Config) { c.ChunkRequestTimeout = 0 },
		"chunk_fetchers":        func(c *Config) { c.ChunkFetchers = -1 },
		"max_snapshot_chunks":   func(c *Config) { c.MaxSnapshotChunks = 0 },
		"discovery_timeout":     func(c *Config) { c.DiscoveryTimeout = time.Second },
		"chunk_window":          func(c *Config) { c.ChunkWindow = 65 },
		"backfill_window":       func(c *Config) { c.BackfillWindow = 257 },
		"verify_timeout":        func(c *Config) { c.VerifyTimeout = 0 },
		"light_block_timeout":   func(c *Config) { c.LightBlockTimeout = -time.Second },
		"serve_workers":         func(c *Config) { c.ServeWorkers = 0 },
		"serve_per_peer":        func(c *Config) { c.ServePerPeer = 0 },
		"serve_queue_per_peer":  func(c *Config) { c.ServeQueuePerPeer = 1 },
		"serve_chunk_rate":      func(c *Config) { c.ServeChunkRate = 0 },
		"serve_chunk_cache":     func(c *Config) { c.ServeChunkCache = -1 },
		"serve_light_time":      func(c *Config) { c.ServeLightTime = 2 * time.Second },
		"serve_light_cache":     func(c *Config) { c.ServeLightCache = -1 },
		"trust_height":          func(c *Config) { c.TrustHeight = -1 },
		"trust_hash":            func(c *Config) { c.TrustHash = "zz" },
		"rpc_servers":           func(c *Config) { c.RPCServers = []string{"ftp://a:1"} },
	}
	enabledCases := map[string]func(c *Config){
		"trust_height": func(c *Config) { c.TrustHeight = 0 },
		"trust_hash":   func(c *Config) { c.TrustHash = "" },
		"rpc_servers":  func(c *Config) { c.RPCServers = []string{"a:1", "http://A:1/", "tcp://a:1"} },
	}
	short := func(c *Config) { c.TrustHash = "abcd" }
	check := func(key string, mutate func(c *Config), base func(c *Config)) {
		t.Helper()
		c := DefaultConfig()
		if base != nil {
			base(&c)
			require.NoError(t, c.ValidateBasic(), "base for %s", key)
		}
		mutate(&c)
		err := c.ValidateBasic()
		require.ErrorIs(t, err, ErrInvalidConfig, key)
		require.ErrorContains(t, err, "statesync."+key+":", key)
	}
	for key, mutate := range cases {
		check(key, mutate, nil)
	}
	for key, mutate := range enabledCases {
		check(key, mutate, enabled)
	}
	check("trust_hash", short, nil)

	// Same server in three spellings: the message says why that is refused.
	c := DefaultConfig()
	enabled(&c)
	c.RPCServers = []string{"127.0.0.1:26657", "HTTP://127.0.0.1:26657/", "tcp://127.0.0.1:26657"}
	require.ErrorContains(t, c.ValidateBasic(), "the same server twice gives no witness cross-check")
}

func TestConfigEnableRequirements(t *testing.T) {
	c := DefaultConfig()
	c.Enable, c.TrustHeight, c.TrustHash = true, 100, validTrustHash
	require.ErrorContains(t, c.ValidateBasic(), "statesync.rpc_servers")

	c.UseP2P = true // peers verify instead of RPC servers
	require.NoError(t, c.ValidateBasic())

	c.UseP2P = false
	c.RPCServers = []string{"rpc-1.example.com:26657", "https://rpc-2.example.com"}
	require.NoError(t, c.ValidateBasic())
	require.Len(t, c.TrustHashBytes(), 32)
}

func TestConfigTrustHashBytes(t *testing.T) {
	c := DefaultConfig()
	require.Nil(t, c.TrustHashBytes())
	c.TrustHash = "not hex"
	require.Nil(t, c.TrustHashBytes())
	c.TrustHash = strings.ToUpper(validTrustHash)
	require.Equal(t, byte(0xab), c.TrustHashBytes()[0])
}

// TestConfigTags: every field has matching toml and mapstructure keys, and
// the keys shared with CometBFT's [statesync] section are CometBFT's.
func TestConfigTags(t *testing.T) {
	ours := reflect.TypeOf(Config{})
	keys := map[string]string{}
	for i := 0; i < ours.NumField(); i++ {
		f := ours.Field(i)
		ms, toml := f.Tag.Get("mapstructure"), f.Tag.Get("toml")
		require.NotEmpty(t, ms, f.Name)
		require.Equal(t, ms, toml, f.Name)
		require.Equal(t, strings.ToLower(ms), ms, f.Name)
		keys[f.Name] = ms
	}
	theirs := reflect.TypeOf(cmtcfg.StateSyncConfig{})
	for i := 0; i < theirs.NumField(); i++ {
		f := theirs.Field(i)
		require.Equal(t, f.Tag.Get("mapstructure"), keys[f.Name], "CometBFT's %s", f.Name)
		of, ok := ours.FieldByName(f.Name)
		require.True(t, ok, f.Name)
		require.Equal(t, f.Type, of.Type, f.Name)
	}
}

func TestFromCometBFT(t *testing.T) {
	require.Equal(t, DefaultConfig(), FromCometBFT(nil))

	cc := cmtcfg.DefaultStateSyncConfig()
	cc.Enable = true
	cc.RPCServers = []string{"a:1", "b:2"}
	cc.TrustHeight = 7
	cc.TrustHash = strings.Repeat("cd", 32)
	cc.TrustPeriod = 100 * time.Hour
	cc.TempDir = "/var/tmp/ss"
	cc.ChunkFetchers = 9
	c := FromCometBFT(cc)
	require.NoError(t, c.ValidateBasic())
	require.Equal(t, cc.RPCServers, c.RPCServers)
	cc.RPCServers[0] = "changed"
	require.Equal(t, "a:1", c.RPCServers[0], "the slice is copied")
	require.Equal(t, cc.TrustPeriod, c.TrustPeriod)
	require.Equal(t, cc.TrustHeight, c.TrustHeight)
	require.Equal(t, cc.TempDir, c.TempDir)
	require.Equal(t, cc.DiscoveryTime, c.DiscoveryTime)
	require.Equal(t, cc.ChunkRequestTimeout, c.ChunkRequestTimeout)
	require.Equal(t, cc.ChunkFetchers, c.ChunkFetchers)
	require.Equal(t, cc.MaxSnapshotChunks, c.MaxSnapshotChunks)
	require.Equal(t, DefaultConfig().ChunkWindow, c.ChunkWindow)
	require.True(t, c.Backfill)
	require.Len(t, c.TrustHashBytes(), 32)

	// discovery_time = 0 means no wait, from CometBFT's config too; other
	// zero values keep our defaults; a long discovery_time stretches
	// discovery_timeout.
	zero := FromCometBFT(&cmtcfg.StateSyncConfig{})
	want := DefaultConfig()
	want.DiscoveryTime = 0
	require.Equal(t, want, zero)
	require.NoError(t, zero.ValidateBasic())
	noWait := cmtcfg.DefaultStateSyncConfig()
	noWait.DiscoveryTime = 0
	require.Zero(t, FromCometBFT(noWait).DiscoveryTime, "discovery_time = 0 in config.toml is no wait")
	long := FromCometBFT(&cmtcfg.StateSyncConfig{DiscoveryTime: 5 * time.Minute})
	require.Equal(t, 10*time.Minute, long.DiscoveryTimeout)
	require.NoError(t, long.ValidateBasic())
}

// TestNormaliseServersLoopback: the loopback interface has many names;
// listing it twice under two of them is the same server twice (no witness
// cross-check), and is refused. (Before: localhost and 127.0.0.1 passed as
// two servers.)
func TestNormaliseServersLoopback(t *testing.T) {
	got, err := normaliseServers([]string{"localhost:26657", "127.0.0.1:26657", "http://[::1]:26657/",
		"tcp://127.0.0.2:26657", "http://LOCALHOST:26657", "localhost:26658", "https://localhost"})
	require.NoError(t, err)
	require.Equal(t, []string{"http://localhost:26657", "http://localhost:26658", "https://localhost"}, got)
	got, err = normaliseServers([]string{"http://10.0.0.1", "http://10.0.0.1:80", "http://010.0.0.1"})
	require.NoError(t, err)
	require.Len(t, got, 2, "IP literals compare by value; 010.0.0.1 is not an IP literal Go parses")
}
