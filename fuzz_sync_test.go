package statesync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cosmos/gogoproto/proto"
	"go.uber.org/goleak"

	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
	ssproto "github.com/statesync/statesync/proto"
)

// FuzzSyncOverRouter runs a whole Sync of a real Reactor, verifying over
// P2P with CometBFT's light client, against two honest peers and up to two
// attackers on an in-memory router (p2ptest.MemRouter), while the input
// connects, disconnects and reconnects the attackers, sets their links'
// delay and loss, chooses how each answers (chunks right, corrupt,
// duplicated, "missing" or not at all; light blocks honest, with forged
// proposer priorities, empty or none; params honest, forged in hashed or
// unhashed fields, or none; snapshots honest, bogus or none) and injects
// unsolicited messages of every kind. Invariants:
//
//   - an outcome within a bound: Sync returns before the hang deadline,
//     with the chain's state and app (progress) or an error wrapping a
//     documented sentinel; with no attacker at all it succeeds;
//   - nothing unverified installed: a returned state has the chain's
//     app hash, validators (priorities included) and params, and the app
//     was restored to the source's hash;
//   - no unsolicited data used: every snapshot offered to the app was
//     advertised by a peer after the node asked it;
//   - honest peers are never punished;
//   - memory and disk within budget: the dispatcher never holds records
//     for more peers than are connected, none once every peer is gone,
//     and a Sync that ended leaves no spool behind; no goroutine is left
//     once the Reactor stopped.
//
// The waits of a Sync are real time, so an execution costs what the
// timeouts it runs into cost: an input without attackers (no wait but the
// discovery time) gets generous timeouts, which only a starved machine
// would reach, so that the "no attacker, it succeeds" check cannot fail on
// timing; an input with attackers, which may fail with a documented error
// anyway, gets timeouts of 10 to 50 ms (see syncFuzzTimeouts). Most
// executions take 10 to 200 ms.
func FuzzSyncOverRouter(f *testing.F) {
	// Operations: 0/1 id modes snaps delay drop: connect an attacker (modes:
	// chunk %5, light >>3 %4, params >>5 %4); 2 id: disconnect it; 3/4 id
	// kind arg: inject; 5 id ms: pause (the first starts the Sync).
	for _, seed := range [][]byte{
		{},
		{0, 0, 1, 0, 0, 0, 5, 0},             // corrupt chunks
		{0, 0, 2, 0, 0, 0, 5, 0},             // duplicated chunks
		{0, 0, 3, 0, 0, 0, 0, 1, 4, 0, 0, 0}, // "missing", and silent
		{0, 0, 8, 0, 0, 0},                   // forged priorities
		{0, 0, 8, 0, 0, 0, 0, 1, 8, 0, 0, 0}, // two priority forgers: no majority
		{0, 0, 64, 0, 0, 0},                  // params contradicting the header
		{0, 0, 32, 0, 0, 0},                  // params forged in unhashed fields
		{0, 0, 0, 0, 1, 3},                   // a lossy link
		{0, 1, 4, 2, 0, 0},                   // a bogus higher snapshot, then silence
		{0, 0, 0, 3, 0, 0, 3, 0, 0, 5, 3, 0, 1, 2, 3, 0, 2, 3, 3, 0, 3, 4, 3, 0, 4, 1}, // unsolicited
		{0, 0, 0, 0, 0, 0, 5, 0, 2, 0, 5, 1, 0, 0, 1, 1, 0, 0, 5, 2, 2, 0},             // churn
	} {
		f.Add(seed)
	}
	fx := newSyncFuzzFixture(f)
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 64 {
			prog = prog[:64]
		}
		fx.run(t, prog)
	})
}

// syncFuzzFixture is what every execution shares: the chain, the source
// app's snapshot and chunks, and the honest and forged answers.
type syncFuzzFixture struct {
	chain   *chaingen.Chain
	height  int64
	srcHash []byte
	ad      *ssproto.SnapshotsResponse
	bogus   *ssproto.SnapshotsResponse // a higher snapshot nobody can restore
	chunks  [][]byte
	light   map[int64]*cmtproto.LightBlock
	forged  map[int64]*cmtproto.LightBlock // proposer priorities shifted
	params  cmtproto.ConsensusParams
	unhashP cmtproto.ConsensusParams // differs in a field no header commits to
	hashP   cmtproto.ConsensusParams // contradicts the header's ConsensusHash
}

func newSyncFuzzFixture(tb testing.TB) *syncFuzzFixture {
	const height = 6
	appOpts := kvapp.Options{Keys: 12, ValueSize: 8, ChunkSize: 96, Height: height}
	src := kvapp.New(appOpts)
	fx := &syncFuzzFixture{height: height, srcHash: src.AppHash(), light: map[int64]*cmtproto.LightBlock{},
		forged: map[int64]*cmtproto.LightBlock{}}
	chain, err := chaingen.New(chaingen.Options{ChainID: "fuzz-sync", Height: height + 3, Validators: 2,
		StartTime: time.Now().Add(-time.Hour),
		AppHash: func(h int64) []byte {
			if h == height+1 {
				return fx.srcHash
			}
			return nil
		}})
	if err != nil {
		tb.Fatal(err)
	}
	fx.chain = chain
	ctx := context.Background()
	list, err := src.ListSnapshots(ctx, &abci.RequestListSnapshots{})
	if err != nil || len(list.Snapshots) != 1 {
		tb.Fatalf("source snapshots: %v %v", list, err)
	}
	s := list.Snapshots[0]
	fx.ad = &ssproto.SnapshotsResponse{Height: s.Height, Format: s.Format, Chunks: s.Chunks, Hash: s.Hash,
		Metadata: s.Metadata}
	fx.bogus = &ssproto.SnapshotsResponse{Height: s.Height + 1, Format: s.Format, Chunks: 2, Hash: []byte("bogus"),
		Metadata: s.Metadata}
	for i := range s.Chunks {
		c, err := src.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{Height: s.Height, Format: s.Format,
			Chunk: i})
		if err != nil {
			tb.Fatal(err)
		}
		fx.chunks = append(fx.chunks, c.Chunk)
	}
	for h := int64(1); h <= chain.Height(); h++ {
		lb := chain.LightBlock(h)
		pb, err := lb.ToProto()
		if err != nil {
			tb.Fatal(err)
		}
		fx.light[h] = pb
		shiftPriorities(lb.ValidatorSet)
		if pb, err = lb.ToProto(); err != nil {
			tb.Fatal(err)
		}
		fx.forged[h] = pb
	}
	honest := chain.Params()
	fx.params = honest.ToProto()
	unhashed, hashed := chain.Params(), chain.Params()
	unhashed.Evidence.MaxAgeNumBlocks += 7
	hashed.Block.MaxGas += 7
	fx.unhashP, fx.hashP = unhashed.ToProto(), hashed.ToProto()
	return fx
}

// fuzzPeer is how one peer (connection) answers; modes come from the
// input. The zero value is an honest peer.
type fuzzPeer struct {
	chunk, light, params, snaps byte
	mtx                         sync.Mutex
	asked                       bool // the node asked it for snapshots
}

func (p *fuzzPeer) wasAsked() bool {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	return p.asked
}

// script answers the node's requests as p's modes say.
func (fx *syncFuzzFixture) script(p *fuzzPeer) p2ptest.Script {
	return func(ch byte, msg proto.Message) []p2ptest.Msg {
		one := func(ch byte, m proto.Message) []p2ptest.Msg { return []p2ptest.Msg{{Ch: ch, Msg: m}} }
		switch m := msg.(type) {
		case *ssproto.SnapshotsRequest:
			p.mtx.Lock()
			p.asked = true
			p.mtx.Unlock()
			switch p.snaps % 4 {
			case 0:
				return one(SnapshotChannel, fx.ad)
			case 1:
				return one(SnapshotChannel, fx.bogus)
			case 2:
				return append(one(SnapshotChannel, fx.bogus), one(SnapshotChannel, fx.ad)...)
			}
		case *ssproto.ChunkRequest:
			return fx.chunkAnswer(p.chunk%5, m)
		case *ssproto.LightBlockRequest:
			h := int64(m.Height)
			switch p.light % 4 {
			case 0:
				return one(LightBlockChannel, &ssproto.LightBlockResponse{LightBlock: fx.light[h]})
			case 1:
				return one(LightBlockChannel, &ssproto.LightBlockResponse{LightBlock: fx.forged[h]})
			case 2:
				return one(LightBlockChannel, &ssproto.LightBlockResponse{})
			}
		case *ssproto.ParamsRequest:
			params := map[byte]cmtproto.ConsensusParams{0: fx.params, 1: fx.unhashP, 2: fx.hashP}
			if cp, ok := params[p.params%4]; ok {
				return one(ParamsChannel, &ssproto.ParamsResponse{Height: m.Height, ConsensusParams: cp})
			}
		}
		return nil
	}
}

// chunkAnswer: 0 right, 1 corrupt, 2 duplicated, 3 "missing", 4 none.
func (fx *syncFuzzFixture) chunkAnswer(mode byte, m *ssproto.ChunkRequest) []p2ptest.Msg {
	resp := &ssproto.ChunkResponse{Height: m.Height, Format: m.Format, Index: m.Index}
	if m.Height != fx.ad.Height || m.Format != fx.ad.Format || int(m.Index) >= len(fx.chunks) {
		resp.Missing = true
		return []p2ptest.Msg{{Ch: ChunkChannel, Msg: resp}}
	}
	resp.Chunk = fx.chunks[m.Index]
	switch mode {
	case 1:
		bad := append([]byte(nil), resp.Chunk...)
		bad[len(bad)/2] ^= 0xff
		resp.Chunk = bad
	case 2:
		return []p2ptest.Msg{{Ch: ChunkChannel, Msg: resp}, {Ch: ChunkChannel, Msg: resp}}
	case 3:
		resp.Chunk, resp.Missing = nil, true
	case 4:
		return nil
	}
	return []p2ptest.Msg{{Ch: ChunkChannel, Msg: resp}}
}

// fuzzEndpoint stands between the router and the Reactor and records the
// snapshots advertised by peers that had been asked.
type fuzzEndpoint struct {
	*Reactor
	mtx       sync.Mutex
	conns     map[p2p.ID]*fuzzPeer
	solicited map[string]bool // snapshot hashes advertised after a request
}

func (e *fuzzEndpoint) Deliver(peer p2p.ID, ch byte, msg proto.Message) {
	if m, ok := msg.(*ssproto.SnapshotsResponse); ok {
		e.mtx.Lock()
		if c := e.conns[peer]; c != nil && c.wasAsked() {
			e.solicited[string(m.Hash)] = true
		}
		e.mtx.Unlock()
	}
	e.Reactor.Deliver(peer, ch, msg)
}

// offerRecorder records the snapshots offered to the app.
type offerRecorder struct {
	proxy.AppConnSnapshot
	mtx     sync.Mutex
	offered [][]byte
}

func (o *offerRecorder) OfferSnapshot(ctx context.Context, req *abci.RequestOfferSnapshot) (*abci.ResponseOfferSnapshot, error) {
	o.mtx.Lock()
	o.offered = append(o.offered, req.Snapshot.Hash)
	o.mtx.Unlock()
	return o.AppConnSnapshot.OfferSnapshot(ctx, req)
}

// syncFuzzRun is one execution.
type syncFuzzRun struct {
	fx     *syncFuzzFixture
	r      *Reactor
	rt     *p2ptest.MemRouter
	ep     *fuzzEndpoint
	app    *kvapp.App
	offers *offerRecorder
	// attacked: the input connected an attacker or injected a message.
	attacked bool
	// short: the input attacks (programAttacks), so Sync ran with the
	// short timeouts, even if it ended before the attack was applied.
	short bool
	steps int
	// violation is an invariant the driver saw broken while Sync ran.
	violation string
	stopApp   func()
}

func (fx *syncFuzzFixture) run(t *testing.T, prog []byte) {
	leakOpt := goleak.IgnoreCurrent()
	run := fx.newRun(t, prog)
	// The bound on an outcome; below the 10 s after which the fuzzing
	// engine kills a worker ("deadlocked!"), so that a hang is reported
	// as this invariant.
	ctx, cancel := context.WithTimeout(context.Background(), syncFuzzBound)
	defer cancel()
	done := make(chan struct{})
	in := &opReader{prog}
	run.drive(in, nil) // up to the first pause: before Sync starts
	var drv sync.WaitGroup
	drv.Add(1)
	go func() {
		defer drv.Done()
		run.drive(in, done) // the rest: while Sync runs
	}()
	state, err := run.r.Sync(ctx)
	close(done)
	drv.Wait()
	if run.violation != "" {
		t.Fatal(run.violation)
	}
	run.check(t, state, err, ctx)
	if left, _ := os.ReadDir(run.r.cfg.TempDir); len(left) != 0 {
		t.Fatalf("Sync ended (not cancelled) and left %d entries in its temp dir, e.g. %s", len(left),
			left[0].Name())
	}
	run.rt.Close()
	if n := run.r.dispatcher.records(); n != 0 {
		t.Fatalf("every peer left; the dispatcher still holds records for %d peers", n)
	}
	if err := run.r.Stop(); err != nil {
		t.Fatal(err)
	}
	run.stopApp()
	if err := goleak.Find(leakOpt); err != nil {
		t.Fatalf("goroutines left after the Reactor stopped: %v", err)
	}
}

func (fx *syncFuzzFixture) newRun(t *testing.T, prog []byte) *syncFuzzRun {
	app := kvapp.New(kvapp.Options{})
	conns := proxy.NewAppConns(proxy.NewLocalClientCreator(app), proxy.NopMetrics())
	if err := conns.Start(); err != nil {
		t.Fatal(err)
	}
	trust := fx.chain.TrustOptions(1, 24*time.Hour)
	cfg := testConfig()
	cfg.UseP2P, cfg.RPCServers, cfg.Backfill = true, nil, false
	cfg.TrustHeight, cfg.TrustHash, cfg.TrustPeriod = trust.Height, fmt.Sprintf("%X", trust.Hash), trust.Period
	cfg.TempDir = t.TempDir()
	cfg.DiscoveryTime = 2 * time.Millisecond
	short := programAttacks(prog)
	syncFuzzTimeouts(&cfg, short)
	offers := &offerRecorder{AppConnSnapshot: conns.Snapshot()}
	r, err := NewReactor(cfg, Deps{Snapshots: offers, Query: conns.Query(),
		StateStore: sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{}), BlockStore: store.NewBlockStore(dbm.NewMemDB()),
		Genesis: fx.chain.GenesisState(), Logger: log.NewNopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ep := &fuzzEndpoint{Reactor: r, conns: map[p2p.ID]*fuzzPeer{}, solicited: map[string]bool{}}
	seed := uint64(len(prog))
	for _, b := range prog {
		seed = seed*131 + uint64(b)
	}
	rt := p2ptest.NewMemRouter(ep, seed)
	r.AttachRouter(rt)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	run := &syncFuzzRun{fx: fx, r: r, rt: rt, ep: ep, app: app, offers: offers, short: short}
	run.stopApp = func() { _ = conns.Stop() }
	for _, id := range []p2p.ID{"honest0", "honest1"} {
		run.connect(id, &fuzzPeer{}, p2ptest.Link{})
	}
	return run
}

// maxSyncFuzzSteps bounds the operations of one input.
const maxSyncFuzzSteps = 32

// syncFuzzBound bounds one Sync of FuzzSyncOverRouter.
const syncFuzzBound = 8 * time.Second

// syncFuzzTimeouts sets cfg's timeouts for an execution: short ones when
// attackers take part (what they withhold is waited for), generous ones
// otherwise (honest peers answer at once; nothing is waited for).
func syncFuzzTimeouts(cfg *Config, attacked bool) {
	if !attacked {
		cfg.DiscoveryTimeout = 2 * time.Second
		cfg.ChunkRequestTimeout = time.Second
		cfg.LightBlockTimeout = time.Second
		cfg.VerifyTimeout = 2 * time.Second
		return
	}
	cfg.DiscoveryTimeout = 50 * time.Millisecond
	cfg.ChunkRequestTimeout = 25 * time.Millisecond
	cfg.LightBlockTimeout = 10 * time.Millisecond
	cfg.VerifyTimeout = 50 * time.Millisecond
}

// programAttacks reports whether prog, read as drive reads it, connects
// an attacker or injects a message (drive sets syncFuzzRun.attacked).
func programAttacks(prog []byte) bool {
	in := &opReader{prog}
	for steps := 0; in.more() && steps < maxSyncFuzzSteps; steps++ {
		op := in.byte() % 6
		in.byte() // the attacker
		switch op {
		case 0, 1, 3, 4:
			return true
		case 5:
			in.byte()
		}
	}
	return false
}

func (run *syncFuzzRun) connect(id p2p.ID, p *fuzzPeer, link p2ptest.Link) {
	run.ep.mtx.Lock()
	run.ep.conns[id] = p
	run.ep.mtx.Unlock()
	run.rt.Connect(id, allChannels, run.fx.script(p), link)
}

// drive applies the input's operations until it ends or Sync returns
// (done closed); with done nil, until the first pause.
func (run *syncFuzzRun) drive(in *opReader, done <-chan struct{}) {
	attackers := []p2p.ID{"attacker0", "attacker1"}
	for in.more() && run.steps < maxSyncFuzzSteps {
		run.steps++
		op, id := in.byte()%6, attackers[in.byte()%2]
		switch op {
		case 0, 1: // connect (or reconnect) with modes and a link
			modes := in.byte()
			p := &fuzzPeer{chunk: modes % 5, light: modes >> 3 % 4, params: modes >> 5 % 4, snaps: in.byte() % 4}
			link := p2ptest.Link{Delay: time.Duration(in.byte()%4) * time.Millisecond,
				DropPercent: []int{0, 0, 10, 50}[in.byte()%4]}
			run.attacked = true
			run.connect(id, p, link)
		case 2:
			run.rt.Disconnect(id)
		case 3, 4: // inject an unsolicited message
			run.attacked = true
			run.rt.Inject(id, run.fx.unsolicited(in.byte(), in.byte()))
		case 5: // let the sync run a little
			if done == nil {
				in.byte()
				return
			}
			t := time.NewTimer(time.Duration(in.byte()%8) * time.Millisecond)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return
			}
		}
		// The dispatcher holds a record per connected peer at most.
		if n := run.r.dispatcher.records(); n > 4 && run.violation == "" {
			run.violation = fmt.Sprintf("the dispatcher holds records for %d peers, at most 4 are connected", n)
		}
		select {
		case <-done:
			return
		default:
		}
	}
}

// unsolicited is a message nobody asked for, chosen by kind and arg.
func (fx *syncFuzzFixture) unsolicited(kind, arg byte) p2ptest.Msg {
	switch kind % 5 {
	case 0:
		ad := *fx.bogus
		ad.Height += uint64(arg)
		ad.Hash = []byte{'u', arg}
		return p2ptest.Msg{Ch: SnapshotChannel, Msg: &ad}
	case 1:
		idx := uint32(arg) % uint32(len(fx.chunks))
		return p2ptest.Msg{Ch: ChunkChannel, Msg: &ssproto.ChunkResponse{Height: fx.ad.Height, Format: fx.ad.Format,
			Index: idx, Chunk: fx.chunks[idx]}}
	case 2:
		h := int64(arg)%fx.chain.Height() + 1
		return p2ptest.Msg{Ch: LightBlockChannel, Msg: &ssproto.LightBlockResponse{LightBlock: fx.forged[h]}}
	case 3:
		return p2ptest.Msg{Ch: ParamsChannel, Msg: &ssproto.ParamsResponse{Height: uint64(arg) + 1,
			ConsensusParams: fx.unhashP}}
	default: // a request, which the node serves (or not)
		return p2ptest.Msg{Ch: ChunkChannel, Msg: &ssproto.ChunkRequest{Height: uint64(arg), Format: 1}}
	}
}

// check asserts the invariants on Sync's outcome.
func (run *syncFuzzRun) check(t *testing.T, state sm.State, err error, ctx context.Context) {
	fx := run.fx
	t.Logf("attacked=%v err=%v punished=%v", run.attacked, err, run.rt.Punished())
	if ctx.Err() != nil {
		t.Fatalf("Sync gave no outcome within the bound: %v", err)
	}
	for id, why := range run.rt.Punished() {
		if id == "honest0" || id == "honest1" {
			t.Fatalf("honest peer %s punished: %v", id, why)
		}
	}
	run.offers.mtx.Lock()
	offered := run.offers.offered
	run.offers.mtx.Unlock()
	run.ep.mtx.Lock()
	for _, h := range offered {
		if !run.ep.solicited[string(h)] {
			t.Fatalf("snapshot %X offered to the app, but no peer advertised it after being asked", h)
		}
	}
	run.ep.mtx.Unlock()
	if err != nil {
		documented := []error{ErrAllSnapshotsRejected, ErrNoSnapshots, ErrNotEnoughPeers, ErrProviderTransient}
		ok := false
		for _, s := range documented {
			ok = ok || errors.Is(err, s)
		}
		if !ok {
			t.Fatalf("Sync failed with an undocumented error: %v", err)
		}
		// With no attack it succeeds; unless the timeouts were the short
		// ones (the input's attack came after Sync ended): a starved
		// machine may make an honest peer miss those.
		if !run.attacked && !run.short {
			t.Fatalf("Sync failed with honest peers only: %v", err)
		}
		return
	}
	want := fx.chain.State(fx.height)
	switch {
	case string(state.AppHash) != string(fx.srcHash), state.LastBlockHeight != fx.height:
		t.Fatalf("Sync installed a state that is not the chain's: height %d app hash %X", state.LastBlockHeight,
			state.AppHash)
	case string(state.Validators.ProposerPriorityHash()) != string(want.Validators.ProposerPriorityHash()),
		string(state.NextValidators.ProposerPriorityHash()) != string(want.NextValidators.ProposerPriorityHash()):
		t.Fatal("Sync installed validator sets (priorities) that are not the chain's")
	case state.ConsensusParams.Evidence != want.ConsensusParams.Evidence ||
		state.ConsensusParams.ABCI != want.ConsensusParams.ABCI || state.ConsensusParams.Block != want.ConsensusParams.Block:
		t.Fatal("Sync installed consensus params that are not the chain's")
	case string(run.app.AppHash()) != string(fx.srcHash):
		t.Fatal("the restored app is not the source's")
	}
}
