package main

import (
	"context"
	"syscall"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cosmos/gogoproto/proto"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// delayRouter sends through the switch after a fixed delay: every request
// of the backfilling node reaches its peer rtt later, which adds rtt to
// every round trip (loopback's own is negligible).
type delayRouter struct {
	sw  *p2p.Switch
	rtt time.Duration
}

func (d delayRouter) Send(peer p2p.ID, chID byte, msg proto.Message) bool {
	p := d.sw.Peers().Get(peer)
	if p == nil {
		return false
	}
	if d.rtt <= 0 {
		return p.Send(p2p.Envelope{ChannelID: chID, Message: msg})
	}
	time.AfterFunc(d.rtt, func() { p.Send(p2p.Envelope{ChannelID: chID, Message: msg}) })
	return true
}

func (d delayRouter) Punish(peer p2p.ID, reason error) {
	if p := d.sw.Peers().Get(peer); p != nil {
		d.sw.StopPeerForError(p, reason)
	}
}

type backfillResult struct {
	window  int
	cpu     time.Duration // process CPU time (user+sys) during the backfill
	rtt     time.Duration
	peers   int
	blocks  int
	took    time.Duration
	stopped statesync.BackfillStop
}

// runBackfill backfills blocks headers from peers serving nodes (their
// stores populated with a generated chain whose validator set changes
// twice) over real MConnections at CometBFT's default rate, with rtt added
// to every request, into fresh in-memory stores.
func runBackfill(blocks, peers, window int, rtts []time.Duration, logger log.Logger) (out []backfillResult, err error) {
	err = withEnv(func(e *env) error {
		chain, err := chaingen.New(chaingen.Options{
			ChainID: "bench", Height: int64(blocks) + 3, Validators: 4,
			ValSetChanges: map[int64]int{int64(blocks) / 4: 5, int64(blocks) * 3 / 4: 4},
			StartTime:     time.Now().Add(-time.Duration(blocks+3) * time.Second),
		})
		if err != nil {
			return err
		}
		p2pCfg := p2ptest.Config(0)
		var servers []*p2ptest.Node
		for i := 0; i < peers; i++ {
			bs := store.NewBlockStore(dbm.NewMemDB())
			ss := sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
			if err := chain.Populate(bs, ss, 1, chain.Height()); err != nil {
				return err
			}
			conns := appConns(e, kvapp.New(kvapp.Options{}))
			r, err := statesync.NewReactor(statesync.DefaultConfig(), statesync.Deps{
				Snapshots: conns.Snapshot(), Query: conns.Query(), StateStore: ss, BlockStore: bs,
				Genesis: chain.GenesisState(), Logger: logger.With("server", i),
			})
			if err != nil {
				return err
			}
			servers = append(servers, p2ptest.Start(e, p2pCfg, i, map[string]p2p.Reactor{"STATESYNC": r}, nil))
		}
		state := chain.State(int64(blocks))
		for _, rtt := range rtts {
			res, err := backfillOnce(chain, state, servers, window, rtt, logger)
			if err != nil {
				return err
			}
			res.peers = peers
			out = append(out, res)
		}
		return nil
	})
	return out, err
}

func backfillOnce(chain *chaingen.Chain, state sm.State, servers []*p2ptest.Node, window int, rtt time.Duration,
	logger log.Logger,
) (res backfillResult, err error) {
	res.rtt = rtt
	cfg := statesync.DefaultConfig()
	if window > 0 {
		cfg.BackfillWindow = window
	}
	res.window = cfg.BackfillWindow
	err = withEnv(func(e *env) error {
		conns := appConns(e, kvapp.New(kvapp.Options{}))
		blockDB, stateDB := dbm.NewMemDB(), dbm.NewMemDB()
		r, err := statesync.NewReactor(cfg, statesync.Deps{
			Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: sm.NewStore(stateDB, sm.StoreOptions{}), BlockStore: store.NewBlockStore(blockDB),
			Backfill: statesync.NewDBBackfillStore(blockDB, stateDB),
			Genesis:  chain.GenesisState(), Logger: logger.With("node", "backfill"),
		})
		if err != nil {
			return err
		}
		n := p2ptest.Start(e, p2ptest.Config(0), 100, map[string]p2p.Reactor{"STATESYNC": r}, nil)
		r.AttachRouter(delayRouter{sw: n.Switch, rtt: rtt})
		for _, s := range servers {
			p2ptest.Connect(e, n, s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		start, cpu0 := time.Now(), cpuTime()
		bf, err := r.Backfill(ctx, state)
		res.took, res.cpu = time.Since(start), cpuTime()-cpu0
		if err != nil {
			return err
		}
		res.blocks, res.stopped = bf.Blocks, bf.Stopped
		n.Stop()
		return nil
	})
	return res, err
}

// cpuTime is the process's CPU time so far (user + system, all threads).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
