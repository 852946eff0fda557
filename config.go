package statesync

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
)

// Config configures the Reactor. It is the [statesync] section of a node's
// config.toml: the keys from Enable to MaxSnapshotChunks are CometBFT
// v0.40's and mean the same thing; the keys after them are this package's.
// Start from DefaultConfig (or FromCometBFT) and check the result with
// ValidateBasic; a zero Config is not valid.
type Config struct {
	// Enable (enable, default false): run Sync when the node starts without
	// state. Read by node wiring; the Reactor serves snapshots, chunks,
	// light blocks and params to peers whether or not it is set.
	Enable bool `mapstructure:"enable" toml:"enable"`

	// RPCServers (rpc_servers): CometBFT RPC servers ("host:port" or a URL)
	// the light client verifies the snapshot height against. The first is
	// the light client's primary, the others its witnesses. Addresses are
	// normalised (scheme http by default, lower-case host, no trailing
	// slash) and duplicates dropped: at least two distinct servers are
	// required unless UseP2P is set, because the same server listed twice
	// gives no witness cross-check.
	RPCServers []string `mapstructure:"rpc_servers" toml:"rpc_servers"`

	// TrustPeriod (trust_period, default 168h): the light client's trusting
	// period. It must be shorter than the chain's unbonding period. A trust
	// root (TrustHeight, TrustHash) whose header is older than this is
	// refused with ErrTrustExpired.
	TrustPeriod time.Duration `mapstructure:"trust_period" toml:"trust_period"`

	// TrustHeight (trust_height): height of the trusted header the light
	// client starts from. Required when Enable is set. Pick a recent height
	// from a source you trust (a block explorer, another operator).
	TrustHeight int64 `mapstructure:"trust_height" toml:"trust_height"`

	// TrustHash (trust_hash): hex-encoded hash (32 bytes) of the header at
	// TrustHeight. Required when Enable is set.
	TrustHash string `mapstructure:"trust_hash" toml:"trust_hash"`

	// DiscoveryTime (discovery_time, default 15s): the longest Sync collects
	// snapshot advertisements before choosing one. Discovery ends earlier
	// when it has learnt enough: a snapshot is usable, nothing new was
	// advertised for 250 ms, and either every connected peer speaking the
	// snapshot channels has advertised, or at least two peers advertise the
	// best snapshot. A better snapshot advertised later is still taken while
	// no chunk has been applied. 0 means no wait: the first usable snapshot
	// is taken. It is also the interval (at least 1s) between asking peers
	// again while no snapshot is usable.
	DiscoveryTime time.Duration `mapstructure:"discovery_time" toml:"discovery_time"`

	// TempDir (temp_dir, default the OS temporary directory): where fetched
	// chunks are spooled while a snapshot is restored, one subdirectory per
	// snapshot (statesync-spool-<height>-<format>-<key>). A spool survives a
	// crash or a cancelled Sync: a later Sync that chooses the same snapshot
	// applies the chunks found there instead of fetching them. Spools of
	// other snapshots are deleted when a spool is opened (unless another
	// running Sync holds them), a rejected snapshot's spool when it is
	// rejected, and every spool when Sync succeeds or fails.
	TempDir string `mapstructure:"temp_dir" toml:"temp_dir"`

	// ChunkRequestTimeout (chunk_request_timeout, default 10s): the ceiling
	// of a chunk request's deadline. Below it, each request's deadline is
	// three times the time its peer is expected to take (its queue at its
	// measured rate), at least a fifth of this and 0.5 s; a timed-out
	// request is asked of another peer, and the chunk the app needs next
	// is also asked of a second peer as soon as it is overdue. A peer is
	// dropped as silent after three timeouts in a row with nothing
	// delivered for this long. Fetched chunks are never discarded because
	// of a timeout.
	ChunkRequestTimeout time.Duration `mapstructure:"chunk_request_timeout" toml:"chunk_request_timeout"`

	// ChunkFetchers (chunk_fetchers, default 4): accepted for compatibility
	// with CometBFT's config and otherwise unused: instead of a fixed number
	// of fetchers, every peer serving the snapshot gets its own window of
	// ChunkWindow requests.
	ChunkFetchers int32 `mapstructure:"chunk_fetchers" toml:"chunk_fetchers"`

	// MaxSnapshotChunks (max_snapshot_chunks, default 100000): a peer
	// advertising a snapshot with more chunks is disconnected.
	MaxSnapshotChunks uint32 `mapstructure:"max_snapshot_chunks" toml:"max_snapshot_chunks"`

	// UseP2P (use_p2p, default false): verify the snapshot with light
	// blocks and consensus params fetched from peers (channels 0x62 and
	// 0x63, from at least two distinct peers) instead of RPCServers.
	UseP2P bool `mapstructure:"use_p2p" toml:"use_p2p"`

	// DiscoveryTimeout (discovery_timeout, default 2m): bound on how long
	// Sync looks for a usable snapshot while none is being restored. When
	// it runs out Sync fails with ErrNoSnapshots (none found) or
	// ErrAllSnapshotsRejected (all found were rejected), so the node can
	// fall back to block sync. Must not be shorter than DiscoveryTime.
	// Before discovery, unreachable RPC servers are retried with backoff
	// for up to the same bound (and the P2P provider waits that long for
	// two peers serving light blocks), so a Sync that finds nothing can
	// take up to about twice DiscoveryTimeout before it fails.
	DiscoveryTimeout time.Duration `mapstructure:"discovery_timeout" toml:"discovery_timeout"`

	// ChunkWindow (chunk_window, default 4, 1..64): chunk requests in flight
	// per peer.
	ChunkWindow int `mapstructure:"chunk_window" toml:"chunk_window"`

	// VerifyTimeout (verify_timeout, default 30s): bound on every
	// light-client verification and on each request to an RPC server. A
	// verification that runs out is a transient failure: the snapshot is
	// kept and tried again.
	VerifyTimeout time.Duration `mapstructure:"verify_timeout" toml:"verify_timeout"`

	// LightBlockTimeout (light_block_timeout, default 10s): how long to wait
	// for one peer's answer to a light-block or params request (UseP2P and
	// backfill) before asking another peer.
	LightBlockTimeout time.Duration `mapstructure:"light_block_timeout" toml:"light_block_timeout"`

	// ServeWorkers (serve_workers, default 8): goroutines serving peers'
	// snapshot, chunk, light-block and params requests. Requests are served
	// off the peer's receive routine, so slow application reads never stall
	// the connection.
	ServeWorkers int `mapstructure:"serve_workers" toml:"serve_workers"`

	// ServePerPeer (serve_per_peer, default 2): how many of one peer's
	// requests are served at the same time.
	ServePerPeer int `mapstructure:"serve_per_peer" toml:"serve_per_peer"`

	// ServeQueuePerPeer (serve_queue_per_peer, default 128): how many
	// requests one peer may have queued or running; more are dropped and
	// counted. Must not be below ServePerPeer. A backfilling peer keeps up
	// to its backfill_window requests in flight, so this should be at least
	// the backfill_window peers use (a smaller value makes them time out
	// and back off).
	ServeQueuePerPeer int `mapstructure:"serve_queue_per_peer" toml:"serve_queue_per_peer"`

	// ServeChunkRate (serve_chunk_rate, default 104857600 = 100 MiB/s):
	// bytes of snapshot chunks one peer may have loaded per second (burst
	// one second's worth). A peer over its budget has its chunk requests
	// held in its queue, unloaded, until the budget refills (more than
	// serve_queue_per_peer are dropped; a peer that keeps sending them is
	// disconnected for flooding). The default is 20 times CometBFT's
	// default connection rate, so it binds only peers asking for chunks
	// they do not read.
	ServeChunkRate int64 `mapstructure:"serve_chunk_rate" toml:"serve_chunk_rate"`

	// ServeChunkCache (serve_chunk_cache, default 33554432 = 32 MiB, 0 to
	// disable): bytes of loaded chunks kept and shared between peers asking
	// for the same chunk (peers restoring one snapshot ask for the same
	// chunks at about the same time). A chunk is kept once it is asked for
	// a second time, so a node serving a single restorer keeps none.
	ServeChunkCache int `mapstructure:"serve_chunk_cache" toml:"serve_chunk_cache"`

	// ServeLightTime (serve_light_time, default 250ms, at most 1s): load
	// time one peer's light-block and params requests may take per second.
	// A light block at a height far from a validator-set checkpoint costs
	// CometBFT's LoadValidators up to 100 000 proposer-priority increments
	// (tens of milliseconds with 150 validators); cached ones cost
	// microseconds; loads under 10 ms are not charged. A peer over its
	// budget has its requests held in its queue until the budget refills.
	ServeLightTime time.Duration `mapstructure:"serve_light_time" toml:"serve_light_time"`

	// ServeLightCache (serve_light_cache, default 8388608 = 8 MiB, 0 to
	// disable): bytes of recently served light blocks kept by height.
	ServeLightCache int `mapstructure:"serve_light_cache" toml:"serve_light_cache"`

	// Backfill (backfill, default true): after a restore, fetch and verify
	// the headers and commits below the snapshot height that the evidence
	// module needs (Evidence.MaxAgeNumBlocks and MaxAgeDuration). A failed
	// backfill is reported, never fatal.
	Backfill bool `mapstructure:"backfill" toml:"backfill"`

	// BackfillWindow (backfill_window, default 128, 1..256): light-block
	// requests in flight per peer during backfill. Each peer's window
	// starts at 4 and grows by one per answer up to this, and halves on a
	// timeout. Serving peers drop requests beyond their
	// serve_queue_per_peer (128 by default), so a larger window only helps
	// against peers configured to queue more.
	BackfillWindow int `mapstructure:"backfill_window" toml:"backfill_window"`

	// OnNoSnapshot (on_no_snapshot, default "stop"): what a node does when
	// state sync finds no usable snapshot within DiscoveryTimeout
	// (ErrNoSnapshots, ErrAllSnapshotsRejected). "stop" stops the node
	// with the error; "blocksync" boots it into block sync from genesis
	// instead (package node), which needs peers that still have every
	// block from the initial height. Other failures always stop the node.
	OnNoSnapshot string `mapstructure:"on_no_snapshot" toml:"on_no_snapshot"`
	// LightPeersTimeout (light_peers_timeout, default 10s; 0 means the
	// default): with UseP2P, how long Sync waits, once peers are connected,
	// for two of them to serve light blocks and consensus params (channels
	// 0x62 and 0x63, which stock CometBFT nodes do not serve) before it
	// fails with ErrNotEnoughPeers. While no peer is connected at all it
	// waits up to DiscoveryTimeout.
	LightPeersTimeout time.Duration `mapstructure:"light_peers_timeout" toml:"light_peers_timeout"`

	// ChunkMemoryBudget (chunk_memory_budget, bytes, default 0 = four times
	// the largest chunk seen): fetched chunks being written to the spool at
	// once (each by the connection that delivered it). Beyond it, chunks
	// wait in the peers' connections (backpressure).
	ChunkMemoryBudget int64 `mapstructure:"chunk_memory_budget" toml:"chunk_memory_budget"`

	// ChunkDiskBudget (chunk_disk_budget, bytes, default 0 = unlimited):
	// what the chunk spool under TempDir may hold. A snapshot that does not
	// fit fails Sync with ErrDiskBudget naming the size it needs.
	ChunkDiskBudget int64 `mapstructure:"chunk_disk_budget" toml:"chunk_disk_budget"`
}

// OnNoSnapshot policies.
const (
	OnNoSnapshotStop      = "stop"
	OnNoSnapshotBlockSync = "blocksync"
)

// Defaults, as documented on the Config fields.
const (
	DefaultTrustPeriod         = 168 * time.Hour
	DefaultDiscoveryTime       = 15 * time.Second
	DefaultChunkRequestTimeout = 10 * time.Second
	DefaultChunkFetchers       = 4
	DefaultMaxSnapshotChunks   = 100_000
	DefaultDiscoveryTimeout    = 2 * time.Minute
	DefaultChunkWindow         = 4
	DefaultVerifyTimeout       = 30 * time.Second
	DefaultLightBlockTimeout   = 10 * time.Second
	DefaultServeWorkers        = 8
	DefaultServePerPeer        = 2
	DefaultServeQueuePerPeer   = 128
	DefaultServeChunkRate      = 100 << 20
	DefaultServeChunkCache     = 32 << 20
	DefaultServeLightTime      = 250 * time.Millisecond
	DefaultServeLightCache     = 8 << 20
	DefaultBackfillWindow      = 128
	DefaultLightPeersTimeout   = 10 * time.Second

	// maxChunkWindow bounds ChunkWindow (chunks in flight per peer hold up
	// to MaxChunkSize each); maxBackfillWindow bounds BackfillWindow.
	maxChunkWindow    = 64
	maxBackfillWindow = 256
)

// DefaultConfig returns the defaults documented on each field. State sync
// is disabled and no trust root is set.
func DefaultConfig() Config {
	return Config{
		TrustPeriod:         DefaultTrustPeriod,
		DiscoveryTime:       DefaultDiscoveryTime,
		ChunkRequestTimeout: DefaultChunkRequestTimeout,
		ChunkFetchers:       DefaultChunkFetchers,
		MaxSnapshotChunks:   DefaultMaxSnapshotChunks,
		DiscoveryTimeout:    DefaultDiscoveryTimeout,
		ChunkWindow:         DefaultChunkWindow,
		VerifyTimeout:       DefaultVerifyTimeout,
		LightBlockTimeout:   DefaultLightBlockTimeout,
		ServeWorkers:        DefaultServeWorkers,
		ServePerPeer:        DefaultServePerPeer,
		ServeQueuePerPeer:   DefaultServeQueuePerPeer,
		ServeChunkRate:      DefaultServeChunkRate,
		ServeChunkCache:     DefaultServeChunkCache,
		ServeLightTime:      DefaultServeLightTime,
		ServeLightCache:     DefaultServeLightCache,
		Backfill:            true,
		BackfillWindow:      DefaultBackfillWindow,
		OnNoSnapshot:        OnNoSnapshotStop,
	}
}

// FromCometBFT starts from a node's [statesync] section: its keys are
// copied, ours keep their defaults, except that DiscoveryTimeout is at
// least twice DiscoveryTime. discovery_time is copied as is, 0 included: 0
// means no wait, in CometBFT's config as in ours (node wiring zeroes
// discovery_time only in the copy it gives CometBFT's built-in reactor,
// after this call). Other zero durations and counts in c leave our
// defaults in place. A nil c gives DefaultConfig.
func FromCometBFT(c *cmtcfg.StateSyncConfig) Config {
	out := DefaultConfig()
	if c == nil {
		return out
	}
	out.Enable = c.Enable
	out.TempDir = c.TempDir
	out.RPCServers = append([]string(nil), c.RPCServers...)
	out.TrustHeight = c.TrustHeight
	out.TrustHash = c.TrustHash
	if c.TrustPeriod > 0 {
		out.TrustPeriod = c.TrustPeriod
	}
	if c.DiscoveryTime >= 0 {
		out.DiscoveryTime = c.DiscoveryTime
		out.DiscoveryTimeout = max(out.DiscoveryTimeout, 2*c.DiscoveryTime)
	}
	if c.ChunkRequestTimeout > 0 {
		out.ChunkRequestTimeout = c.ChunkRequestTimeout
	}
	if c.ChunkFetchers > 0 {
		out.ChunkFetchers = c.ChunkFetchers
	}
	if c.MaxSnapshotChunks > 0 {
		out.MaxSnapshotChunks = c.MaxSnapshotChunks
	}
	return out
}

// TrustHashBytes decodes TrustHash; it returns nil if TrustHash is empty or
// not valid hex (ValidateBasic reports the latter).
func (c Config) TrustHashBytes() []byte {
	b, err := hex.DecodeString(c.TrustHash)
	if err != nil || len(b) == 0 {
		return nil
	}
	return b
}

// invalid returns an error wrapping ErrInvalidConfig that names the field by
// its TOML key, e.g. "statesync: invalid config: statesync.trust_hash: ...".
func invalid(key string, format string, args ...any) error {
	return fmt.Errorf("%w: statesync.%s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...))
}

// ValidateBasic checks every field and returns the first problem found, as
// an error wrapping ErrInvalidConfig whose message names the field by its
// TOML key ("statesync.chunk_window: ..."). The trust root and the RPC
// servers are required only when Enable is set (RPC servers only without
// UseP2P), but are checked for form whenever they are given.
func (c Config) ValidateBasic() error {
	positive := []struct {
		key string
		d   time.Duration
	}{
		{"trust_period", c.TrustPeriod},
		{"chunk_request_timeout", c.ChunkRequestTimeout},
		{"discovery_timeout", c.DiscoveryTimeout},
		{"verify_timeout", c.VerifyTimeout},
		{"light_block_timeout", c.LightBlockTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			return invalid(p.key, "must be a positive duration, got %v", p.d)
		}
	}
	switch {
	case c.DiscoveryTime < 0:
		return invalid("discovery_time", "must not be negative, got %v", c.DiscoveryTime)
	case c.DiscoveryTimeout < c.DiscoveryTime:
		return invalid("discovery_timeout", "%v is shorter than statesync.discovery_time %v",
			c.DiscoveryTimeout, c.DiscoveryTime)
	case c.ChunkFetchers < 0:
		return invalid("chunk_fetchers", "must not be negative, got %d", c.ChunkFetchers)
	case c.MaxSnapshotChunks == 0:
		return invalid("max_snapshot_chunks", "must be positive")
	case c.ChunkWindow < 1 || c.ChunkWindow > maxChunkWindow:
		return invalid("chunk_window", "must be in [1, %d], got %d", maxChunkWindow, c.ChunkWindow)
	case c.BackfillWindow < 1 || c.BackfillWindow > maxBackfillWindow:
		return invalid("backfill_window", "must be in [1, %d], got %d", maxBackfillWindow, c.BackfillWindow)
	case c.ServeWorkers < 1:
		return invalid("serve_workers", "must be at least 1, got %d", c.ServeWorkers)
	case c.ServePerPeer < 1:
		return invalid("serve_per_peer", "must be at least 1, got %d", c.ServePerPeer)
	case c.ServeQueuePerPeer < c.ServePerPeer:
		return invalid("serve_queue_per_peer", "%d is below statesync.serve_per_peer %d",
			c.ServeQueuePerPeer, c.ServePerPeer)
	case c.ServeChunkRate <= 0:
		return invalid("serve_chunk_rate", "must be positive, got %d", c.ServeChunkRate)
	case c.ServeChunkCache < 0:
		return invalid("serve_chunk_cache", "must not be negative, got %d", c.ServeChunkCache)
	case c.ServeLightTime <= 0 || c.ServeLightTime > time.Second:
		return invalid("serve_light_time", "must be in (0, 1s], got %v", c.ServeLightTime)
	case c.ServeLightCache < 0:
		return invalid("serve_light_cache", "must not be negative, got %d", c.ServeLightCache)
	case c.ChunkMemoryBudget < 0:
		return invalid("chunk_memory_budget", "must not be negative, got %d", c.ChunkMemoryBudget)
	case c.ChunkDiskBudget < 0:
		return invalid("chunk_disk_budget", "must not be negative, got %d", c.ChunkDiskBudget)
	case c.TrustHeight < 0:
		return invalid("trust_height", "must not be negative, got %d", c.TrustHeight)
	case c.OnNoSnapshot != "" && c.OnNoSnapshot != OnNoSnapshotStop && c.OnNoSnapshot != OnNoSnapshotBlockSync:
		return invalid("on_no_snapshot", "must be %q or %q, got %q", OnNoSnapshotStop, OnNoSnapshotBlockSync,
			c.OnNoSnapshot)
	}
	if c.TrustHash != "" {
		b, err := hex.DecodeString(c.TrustHash)
		if err != nil {
			return invalid("trust_hash", "not valid hex: %v", err)
		}
		if len(b) != 32 {
			return invalid("trust_hash", "must be a 32-byte hash (64 hex digits), got %d bytes", len(b))
		}
	}
	var distinct []string
	if len(c.RPCServers) > 0 {
		var err error
		if distinct, err = normaliseServers(c.RPCServers); err != nil {
			return err
		}
	}
	if !c.Enable {
		return nil
	}
	switch {
	case c.TrustHeight == 0:
		return invalid("trust_height", "required when statesync.enable is set")
	case c.TrustHash == "":
		return invalid("trust_hash", "required when statesync.enable is set")
	case !c.UseP2P && len(distinct) < 2:
		return invalid("rpc_servers", "at least 2 distinct RPC servers are required (or set statesync.use_p2p), "+
			"got %s", serversShortfall(c.RPCServers, distinct))
	}
	return nil
}

// serversShortfall says why servers (distinct after normalising) are too
// few for the light client: none, one, or the same server repeated.
func serversShortfall(servers, distinct []string) string {
	switch {
	case len(servers) == 0:
		return "none"
	case len(servers) == 1:
		return fmt.Sprintf("only %q: a second server is needed as the light client's witness", servers[0])
	}
	return fmt.Sprintf("%q, which is the same server %d times: the same server twice gives no witness cross-check",
		servers, len(servers))
}

// lightBlockTimeout is the one place the light-block (and params) request
// timeout gets its default.
func (c Config) lightBlockTimeout() time.Duration {
	if c.LightBlockTimeout <= 0 {
		return DefaultLightBlockTimeout
	}
	return c.LightBlockTimeout
}

// lightPeersTimeout is LightPeersTimeout with its default.
func (c Config) lightPeersTimeout() time.Duration {
	if c.LightPeersTimeout <= 0 {
		return DefaultLightPeersTimeout
	}
	return c.LightPeersTimeout
}

// normaliseServers canonicalises RPC server addresses and drops duplicates,
// keeping the order of first occurrences. Two addresses are the same
// server when they differ only in spelling: scheme case, tcp:// for
// http://, default ports, trailing slashes, host case, and the names of
// the loopback interface (localhost, 127.0.0.0/8, ::1 are one machine;
// IP literals compare by value). Other host names are not resolved.
// Errors wrap ErrInvalidConfig and name statesync.rpc_servers.
func normaliseServers(servers []string) ([]string, error) {
	seen := make(map[string]bool, len(servers))
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		norm, err := normaliseServer(s)
		if err != nil {
			return nil, err
		}
		if key := serverIdentity(norm); !seen[key] {
			seen[key] = true
			out = append(out, norm)
		}
	}
	return out, nil
}

// serverIdentity is what tells two normalised addresses apart: the
// address with its host replaced by a canonical form (loopback names and
// addresses all become "loopback", IP literals their canonical text).
func serverIdentity(norm string) string {
	u, err := url.Parse(norm)
	if err != nil || u.Host == "" {
		return norm
	}
	host := strings.TrimSuffix(u.Hostname(), ".")
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
		if ip.IsLoopback() {
			host = "loopback"
		}
	} else if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		host = "loopback"
	}
	port := u.Port()
	if port == "" && u.Scheme == "http" {
		port = "80"
	} else if port == "" && u.Scheme == "https" {
		port = "443"
	}
	u.Host = host + ":" + port
	return u.String()
}

func normaliseServer(s string) (string, error) {
	raw := strings.TrimSpace(s)
	if raw == "" {
		return "", invalid("rpc_servers", "empty entry")
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", invalid("rpc_servers", "invalid address %q: %v", s, err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Fragment, u.RawFragment, u.RawPath = "", "", ""
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return "", invalid("rpc_servers", "invalid address %q: no socket path", s)
		}
		return "unix://" + u.Path, nil
	case "tcp":
		u.Scheme = "http"
	case "http", "https":
	default:
		return "", invalid("rpc_servers", "invalid address %q: unsupported scheme %q", s, u.Scheme)
	}
	if u.Host == "" {
		return "", invalid("rpc_servers", "invalid address %q: no host", s)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	switch {
	case port != "":
		u.Host = net.JoinHostPort(host, port)
	case strings.Contains(host, ":"): // IPv6 literal
		u.Host = "[" + host + "]"
	default:
		u.Host = host
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u.String(), nil
}
