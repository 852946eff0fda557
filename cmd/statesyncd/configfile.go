package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/spf13/viper"

	"github.com/statesync/statesync"
)

// withOurKeys rewrites the [statesync] section of a CometBFT config.toml:
// the comments of CometBFT's keys that this module ignores or reads
// differently are replaced by ours (ourComments), and this module's keys
// are added at the end of the section.
func withOurKeys(toml string, c statesync.Config) (string, error) {
	start := strings.Index(toml, "\n[statesync]\n")
	if start < 0 {
		return "", errors.New("config.toml has no [statesync] section")
	}
	end := strings.Index(toml[start+1:], "\n[")
	if end < 0 {
		end = len(toml)
	} else {
		end += start + 1
		// Keep the next section's banner comments with it.
		if i := strings.LastIndex(toml[start:end], "\n\n"); i >= 0 {
			end = start + i + 1
		}
	}
	section := toml[start:end]
	for _, oc := range ourComments {
		var err error
		if section, err = replaceComment(section, oc.key, oc.comment); err != nil {
			return "", err
		}
	}
	return toml[:start] + section + ourKeys(c) + toml[end:], nil
}

// ourComments replace CometBFT's comments above the [statesync] keys whose
// meaning or default differs here (CometBFT's say, for example, that
// chunk_fetchers sets concurrent fetchers, and that chunk_request_timeout
// defaults to 1 minute).
var ourComments = []struct{ key, comment string }{
	{"rpc_servers", `RPC servers (comma-separated) for light client verification of the snapshot: at
least 2 distinct servers (the first is the primary, the others witnesses), unless
use_p2p is set below. Also needs a trusted height and the hash of its header, from
a source you trust, and a period during which validators can be trusted.

For Cosmos SDK-based chains, trust_period should usually be about 2/3 of the
unbonding time (~2 weeks) during which they can be financially punished (slashed)
for misbehavior.`},
	{"discovery_time", `The longest time spent collecting snapshot advertisements before choosing one;
discovery ends earlier once a usable snapshot is advertised by enough peers. While
no snapshot is usable, peers are asked again at this interval, up to
discovery_timeout (below).`},
	{"temp_dir", `Directory for the spool of fetched chunks (default: the OS temp dir), one
subdirectory per snapshot. A spool left by a crash is resumed by the next state
sync of the same snapshot; spools are removed when state sync ends.`},
	{"chunk_request_timeout", `The ceiling of a chunk request's deadline (default: 10s). Below it, each
request's deadline follows its peer's measured rate; a timed-out chunk is asked of
another peer.`},
	{"chunk_fetchers", `Accepted for compatibility and unused: there is no fixed number of fetchers;
every peer serving the snapshot gets its own window of chunk_window requests.`},
	{"max_snapshot_chunks", `Maximum number of chunks of a snapshot (default: 100000); a peer advertising
more is disconnected.`},
}

// replaceComment replaces the comment lines directly above "key = " in
// section with comment (one "# " line per line of it).
func replaceComment(section, key, comment string) (string, error) {
	at := strings.Index(section, "\n"+key+" = ")
	if at < 0 {
		return "", fmt.Errorf("config.toml: [statesync] has no %s key", key)
	}
	from := at + 1 // start of the key's line
	for {
		prev := strings.LastIndex(section[:from-1], "\n") + 1
		if from == 0 || !strings.HasPrefix(section[prev:from], "#") {
			break
		}
		from = prev
	}
	var b strings.Builder
	for _, l := range strings.Split(comment, "\n") {
		b.WriteString(strings.TrimRight("# "+l, " ") + "\n")
	}
	return section[:from] + b.String() + section[at+1:], nil
}

func ourKeys(c statesync.Config) string {
	return fmt.Sprintf(`
# ---- statesync library (github.com/statesync/statesync) ----
# Verify snapshots with light blocks and consensus params fetched from at
# least 2 peers (channels 0x62/0x63) instead of rpc_servers.
use_p2p = %t
# Bound on the search for a usable snapshot; then state sync fails and the
# node stops with the error, or, with on_no_snapshot = "blocksync", block-syncs
# from genesis.
discovery_timeout = %q
on_no_snapshot = %q
# Chunk requests in flight per peer (every peer advertising the snapshot is used).
chunk_window = %d
# Bound on every light-client verification, and on one light-block request.
verify_timeout = %q
light_block_timeout = %q
# Serving: worker goroutines, requests of one peer served at once, and
# queued or running (more are dropped).
serve_workers = %d
serve_per_peer = %d
serve_queue_per_peer = %d
# After restoring, fetch and verify headers back to the evidence horizon, in
# the background (from peers serving light blocks, else from rpc_servers).
backfill = %t
backfill_window = %d
`, c.UseP2P, c.DiscoveryTimeout, c.OnNoSnapshot, c.ChunkWindow, c.VerifyTimeout, c.LightBlockTimeout,
		c.ServeWorkers, c.ServePerPeer, c.ServeQueuePerPeer, c.Backfill, c.BackfillWindow)
}

// loadConfig reads home/config/config.toml into CometBFT's config and ours.
func loadConfig(home string) (*cmtcfg.Config, statesync.Config, error) {
	v := viper.New()
	v.SetConfigFile(filepath.Join(home, "config", "config.toml"))
	if err := v.ReadInConfig(); err != nil {
		return nil, statesync.Config{}, fmt.Errorf("reading config (run `statesyncd init --home %s` first?): %w", home, err)
	}
	// Durations first: the decoder's own errors name neither the value
	// nor the problem, and read a bare number as nanoseconds.
	if err := checkDurations(v, "", reflect.TypeFor[cmtcfg.Config]()); err != nil {
		return nil, statesync.Config{}, err
	}
	if err := checkDurations(v, "statesync.", reflect.TypeFor[statesync.Config]()); err != nil {
		return nil, statesync.Config{}, err
	}
	cfg := cmtcfg.DefaultConfig()
	if err := v.Unmarshal(cfg); err != nil {
		return nil, statesync.Config{}, fmt.Errorf("parsing config.toml: %w", err)
	}
	cfg.SetRoot(home)
	// Ours starts from CometBFT's [statesync] keys, then reads our own
	// from the same section.
	ss := statesync.FromCometBFT(cfg.StateSync)
	if err := v.UnmarshalKey("statesync", &ss); err != nil {
		return nil, statesync.Config{}, fmt.Errorf("parsing [statesync]: %w", err)
	}
	// CometBFT's own check of [statesync] insists on rpc_servers even with
	// use_p2p: leave that section to ours (node.New validates it).
	check := *cfg
	css := *cfg.StateSync
	css.Enable = false
	check.StateSync = &css
	if err := check.ValidateBasic(); err != nil {
		return nil, statesync.Config{}, fmt.Errorf("config.toml: %w", err)
	}
	return cfg, ss, nil
}

var durationType = reflect.TypeFor[time.Duration]()

// checkDurations checks every key of config.toml that t (a config struct,
// its keys under prefix) reads as a time.Duration: a string time.ParseDuration
// accepts, or 0. The error names the key and the bad value.
func checkDurations(v *viper.Viper, prefix string, t reflect.Type) error {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case !f.IsExported() || name == "-":
		case opts == "squash":
			if err := checkDurations(v, prefix, ft); err != nil {
				return err
			}
		case name == "":
		case ft == durationType:
			if err := checkDuration(prefix+name, v.Get(prefix+name)); err != nil {
				return err
			}
		case ft.Kind() == reflect.Struct:
			if err := checkDurations(v, prefix+name+".", ft); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkDuration(key string, val any) error {
	switch x := val.(type) {
	case nil, time.Duration:
		return nil
	case string:
		if _, err := time.ParseDuration(x); err != nil {
			return fmt.Errorf("config.toml: %s = %q is not a duration (write it like \"30s\", \"2m\" or \"1h30m\"): %w",
				key, x, err)
		}
		return nil
	case int, int64, int32, uint, uint64, uint32, float64:
		if reflect.ValueOf(x).IsZero() {
			return nil
		}
		return fmt.Errorf("config.toml: %s = %v is a bare number, which would be read as nanoseconds: "+
			"write it with a unit in quotes, like \"%vs\"", key, x, x)
	default:
		return fmt.Errorf("config.toml: %s = %v (a %T) is not a duration (write it like \"30s\")", key, x, x)
	}
}
