package statesync

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cometbft/cometbft/types"
	gogoproto "github.com/cosmos/gogoproto/proto"

	"github.com/statesync/statesync/internal/chaingen"
	ssproto "github.com/statesync/statesync/proto"
)

// The fuzz targets of `make fuzz`, seeded in testdata/fuzz. Each reads its
// input as a little program of operations and checks the invariants the
// issue states. Without -fuzz they run their seeds as ordinary tests.

// opReader hands out the bytes of a fuzz input; past the end it returns 0.
type opReader struct{ b []byte }

func (r *opReader) more() bool { return len(r.b) > 0 }
func (r *opReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// FuzzSyncerInbox feeds a syncer random peer events and snapshot
// advertisements over the in-memory router. Invariants: the pool never
// holds more than its per-peer and total budgets; nothing is pooled from a
// peer that was not asked or is not connected; the inbox never holds more
// than each connected peer's credit; a departed peer leaves nothing.
func FuzzSyncerInbox(f *testing.F) {
	f.Add([]byte{0, 0, 2, 0, 3, 0, 5, 6})
	f.Add([]byte{0, 1, 3, 1, 3, 1, 3, 1, 5, 1, 1})
	n, _ := newInboxNodeTB(f)
	peers := []p2p.ID{"p0", "p1", "p2", "p3"}
	// Metadata is only held and measured, never written: every
	// advertisement shares one zeroed buffer instead of allocating up to
	// 64 KiB per message.
	zeros := make([]byte, 255<<8)
	f.Fuzz(func(t *testing.T, prog []byte) {
		s := newSyncer(n.r)
		n.r.mtx.Lock()
		n.r.syncer = s
		n.r.mtx.Unlock()
		defer func() {
			for _, id := range peers {
				n.net.remove(id)
			}
			n.r.mtx.Lock()
			n.r.syncer = nil
			n.r.mtx.Unlock()
		}()
		connected := map[p2p.ID]bool{}
		asked := map[p2p.ID]bool{}
		// An honest peer, asked at the start, answers at a point the
		// input chooses: whatever the others do, its advertisement must
		// reach the pool (progress).
		n.net.add("honest", &fakePeer{})
		s.requestSnapshots("honest")
		asked["honest"] = true
		honestAd := &ssproto.SnapshotsResponse{Height: 500, Format: 1, Chunks: 3, Hash: []byte("honest")}
		r := &opReader{prog}
		answerAt := int(r.byte())
		for steps := 0; r.more() && steps < 200; steps++ {
			if steps == answerAt {
				n.r.Deliver("honest", SnapshotChannel, honestAd)
			}
			op, id := r.byte()%7, peers[r.byte()%4]
			switch op {
			case 0:
				n.net.add(id, &fakePeer{})
				connected[id] = true
			case 1:
				n.net.remove(id)
				delete(connected, id)
				delete(asked, id)
			case 2:
				s.requestSnapshots(id)
				if connected[id] && !s.pool.isRejectedPeer(id) {
					asked[id] = true
				}
			case 3, 4:
				meta := zeros[:int(r.byte())<<8]
				n.r.Deliver(id, SnapshotChannel, &ssproto.SnapshotsResponse{Height: uint64(r.byte()) + 1,
					Format: uint32(r.byte() % 3), Chunks: uint32(r.byte()) + 1, Hash: []byte{r.byte()},
					Metadata: meta})
			case 5:
				s.handleInbox(nil, nil) // asks the peers that came up
				for id := range connected {
					if n.r.peers.connected(id) && !s.pool.isRejectedPeer(id) {
						asked[id] = true
					}
				}
			case 6: // the app rejects the best snapshot, if an attacker's
				for _, snap := range s.pool.ranked(time.Now()) {
					if !s.pool.advertises("honest", snap) {
						s.pool.reject(snap, ErrRejectSnapshot)
						break
					}
				}
			}
			checkInbox(t, s, n, asked, op == 5)
		}
		if answerAt >= 200 || !r.more() {
			n.r.Deliver("honest", SnapshotChannel, honestAd)
		}
		s.handleInbox(nil, nil)
		if !s.pool.advertises("honest", newSnapshot(honestAd)) {
			t.Fatal("the honest peer's advertisement did not reach the pool")
		}
		n.net.remove("honest")
		for id := range connected {
			n.net.remove(id)
		}
		s.handleInbox(nil, nil)
		if held, bytes := s.pool.held(); held != 0 || bytes != 0 {
			t.Fatalf("every peer left, the pool still holds %d snapshots, %d bytes", held, bytes)
		}
	})
}

func checkInbox(t *testing.T, s *syncer, n *bfNode, asked map[p2p.ID]bool, drained bool) {
	t.Helper()
	_, bytes := s.pool.held()
	if bytes > maxPoolSnapshotBytes {
		t.Fatalf("pool holds %d bytes > %d", bytes, maxPoolSnapshotBytes)
	}
	for id, b := range s.pool.peerBytes {
		if b > maxPeerSnapshotBytes {
			t.Fatalf("peer %s holds %d bytes > %d", id, b, maxPeerSnapshotBytes)
		}
		if drained && !asked[id] {
			t.Fatalf("pool holds snapshots of %s, which was not asked (or left)", id)
		}
		if drained && !n.r.peers.connected(id) {
			t.Fatalf("pool holds snapshots of %s, which is not connected", id)
		}
	}
	s.inMtx.Lock()
	defer s.inMtx.Unlock()
	perPeer := map[p2p.ID]int{}
	for _, in := range s.snapsIn {
		perPeer[in.peer]++
		if !asked[in.peer] {
			t.Fatalf("inbox holds an advertisement of %s, which was not asked", in.peer)
		}
	}
	for id, k := range perPeer {
		if k > maxSnapshotCredit {
			t.Fatalf("inbox holds %d advertisements of %s > %d", k, id, maxSnapshotCredit)
		}
	}
}

// newInboxNodeTB is newInboxNode for a testing.TB (fuzz targets).
func newInboxNodeTB(tb testing.TB) (*bfNode, *syncer) {
	chain, err := chaingen.New(chaingen.Options{Height: 4})
	if err != nil {
		tb.Fatal(err)
	}
	n := newBackfillNode(tb, chain, nil)
	return n, nil
}

// FuzzBlockQueue drives the backfill queue with random answers from four
// peers. Invariants: no height in flight twice; windows and the in-flight
// cap respected; blocks released once each, in descending contiguous
// order; unverified bytes within the budget (plus the cursor's block).
func FuzzBlockQueue(f *testing.F) {
	f.Add([]byte{10, 3, 2, 1, 5, 0, 0, 0, 0})
	f.Add([]byte{200, 8, 4, 64, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, prog []byte) {
		r := &opReader{prog}
		top := int64(r.byte()) + 2
		floor := int64(1)
		lim := queueLimits{window: int(r.byte()%8) + 1, initWindow: int(r.byte()%4) + 1,
			maxAttempts: int(r.byte()%16) + 1, maxTimeouts: int(r.byte()%4) + 1, maxAhead: int(r.byte()%64) + 1,
			maxInflight: int(r.byte()%64) + 1, maxBytes: int64(r.byte()) << 10}
		q := newBlockQueue(top, floor, floor, qTime(0), lim)
		peers := []p2p.ID{"p0", "p1", "p2", "p3"}
		for _, id := range peers {
			q.addPeer(id)
		}
		inflight := map[int64]p2p.ID{}
		next := top
		for steps := 0; steps < 5000 && !q.finished(); steps++ {
			for _, a := range q.assign() {
				if _, dup := inflight[a.height]; dup {
					t.Fatalf("height %d handed out twice", a.height)
				}
				if a.height > top || a.height < floor {
					t.Fatalf("height %d out of range", a.height)
				}
				inflight[a.height] = a.peer
			}
			if len(q.inflight) > lim.maxInflight {
				t.Fatalf("%d in flight > %d", len(q.inflight), lim.maxInflight)
			}
			for id, p := range q.peers {
				if p.inflight > lim.window {
					t.Fatalf("%s has %d in flight > window %d", id, p.inflight, lim.window)
				}
			}
			if lim.maxBytes > 0 && q.fetchedBytes > lim.maxBytes+4096 {
				t.Fatalf("%d unverified bytes > %d", q.fetchedBytes, lim.maxBytes)
			}
			if len(inflight) == 0 {
				break
			}
			var h int64
			for k := range inflight { // the lowest-keyed pick keeps runs reproducible
				if h == 0 || k < h {
					h = k
				}
			}
			if pick := int64(r.byte()); pick > 0 {
				for k := range inflight {
					if k%256 == pick%256 {
						h = k
						break
					}
				}
			}
			peer := inflight[h]
			delete(inflight, h)
			now := qEpoch.Add(time.Duration(steps) * time.Second)
			switch r.byte() % 6 {
			case 0:
				q.lacked(peer, h, time.Millisecond)
			case 1:
				q.timedOut(peer, h, now.Add(-time.Second), now, errQTest)
			case 2:
				q.gone(peer, h)
			default:
				q.gotSized(peer, h, qBlock(h), int64(r.byte())<<4, time.Millisecond)
			}
			for {
				b, ok := q.next()
				if !ok {
					break
				}
				if r.byte()%16 == 1 {
					q.reject(errQTest)
					continue
				}
				if b.lb.Height != next {
					t.Fatalf("released %d, want %d", b.lb.Height, next)
				}
				next--
				q.accept(b.lb.Time)
			}
		}
	})
}

// FuzzDispatcher starts, joins, answers, cancels and removes requests at
// random. Invariants: every started or joined request ends exactly once
// for each caller (a response, or a successful cancel); no record is left
// of a peer once removed.
func FuzzDispatcher(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 1, 1, 2, 0, 3, 1})
	f.Add([]byte{0, 1, 0, 2, 4, 1, 1, 2, 5, 0})
	// Joins: answered, the primary cancelled (hand-over), the joiner cancelled.
	f.Add([]byte{0, 0, 1, 6, 0, 1, 2, 0, 1, 0, 1, 2, 6, 1, 2, 4, 1, 2, 2, 1, 2, 0, 2, 3, 6, 2, 3, 7, 2, 3, 5, 2, 0})
	// One validator: the dispatcher decodes every response, and its
	// invariants do not depend on the block's size.
	chain, err := chaingen.New(chaingen.Options{Height: 8, Validators: 1})
	if err != nil {
		f.Fatal(err)
	}
	responses := map[int64]*ssproto.LightBlockResponse{}
	for h := int64(1); h <= 8; h++ {
		pb, err := chain.LightBlock(h).ToProto()
		if err != nil {
			f.Fatal(err)
		}
		responses[h] = &ssproto.LightBlockResponse{LightBlock: pb}
	}
	f.Fuzz(func(t *testing.T, prog []byte) {
		var mtx sync.Mutex
		live := map[p2p.ID]bool{"a": true, "b": true, "c": true}
		d := newDispatcher(func(p2p.ID, byte, gogoproto.Message) bool { return true }, log.NewNopLogger(), NopMetrics())
		d.connected = func(id p2p.ID) bool {
			mtx.Lock()
			defer mtx.Unlock()
			return live[id]
		}
		peers := []p2p.ID{"a", "b", "c"}
		// Room for every response owed: a key is pending at most once
		// (3 peers x 8 heights), and the sink is drained at every step.
		sink := make(chan response, 3*8)
		// The second caller joins pending requests (as wait does); it may
		// join one several times, and is owed one outcome per join.
		sink2 := make(chan response, 3*8*300)
		type owed struct {
			key    requestKey
			second bool
		}
		ended := map[owed]int{}
		started := map[owed]int{}
		drain := func() {
			for len(sink) > 0 {
				ended[owed{(<-sink).key, false}]++
			}
			for len(sink2) > 0 {
				ended[owed{(<-sink2).key, true}]++
			}
		}
		r := &opReader{prog}
		for steps := 0; r.more() && steps < 300; steps++ {
			op, id, h := r.byte()%8, peers[r.byte()%3], int64(r.byte()%8)+1
			key := requestKey{peer: id, kind: kindLightBlock, height: h}
			switch op {
			case 0, 1:
				if d.start(key, time.Hour, sink) == nil {
					started[owed{key, false}]++
				}
			case 2:
				_ = d.handleLightBlockResponse(id, responses[h])
			case 3:
				_ = d.handleLightBlockResponse(id, &ssproto.LightBlockResponse{})
			case 4:
				if d.cancel(key, sink) {
					ended[owed{key, false}]++
				}
			case 6:
				if d.join(key, sink2) {
					started[owed{key, true}]++
				}
			case 7:
				if d.cancel(key, sink2) {
					ended[owed{key, true}]++
				}
			case 5:
				mtx.Lock()
				live[id] = !live[id]
				gone := !live[id]
				mtx.Unlock()
				if gone {
					d.removePeer(id)
					d.mtx.Lock()
					_, kept := d.peers[id]
					d.mtx.Unlock()
					if kept {
						t.Fatalf("record of %s kept after its removal", id)
					}
				}
			}
			drain()
		}
		d.close()
		drain()
		for o, n := range started {
			if ended[o] != n {
				t.Fatalf("%s (second caller: %t) started %d times, ended %d times", o.key, o.second, n, ended[o])
			}
		}
		for o := range ended {
			if started[o] == 0 {
				t.Fatalf("%s (second caller: %t) ended without being started", o.key, o.second)
			}
		}
	})
}

// FuzzBackfillVerify changes bytes of a served light block (as it travels
// on the wire) and checks that the backfill verifier accepts nothing the
// chain does not say: an accepted block has the chain's header, its
// validator set with the chain's priorities, and a commit carrying +2/3 of
// that set for the block. A changed validator set is never accepted from
// one peer alone.
func FuzzBackfillVerify(f *testing.F) {
	chain, err := chaingen.New(chaingen.Options{ChainID: "fuzz", Height: 12, Validators: 4,
		ValSetChanges: map[int64]int{6: 5}})
	if err != nil {
		f.Fatal(err)
	}
	// Everything an execution reads of the chain, computed once (the
	// chain's accessors deep-copy through protobuf).
	type heightFacts struct {
		want       *types.LightBlock
		blockID    types.BlockID
		upper      *types.ValidatorSet // the verified set above
		commitHash []byte              // LastCommitHash of the header above
	}
	facts := map[int64]heightFacts{}
	for h := int64(2); h <= 11; h++ {
		hf := heightFacts{want: chain.LightBlock(h), blockID: chain.BlockID(h)}
		if h < 11 {
			hf.upper = chain.ValidatorSet(h + 1)
			hf.commitHash = chain.LightBlock(h + 1).LastCommitHash
		}
		facts[h] = hf
	}
	topVals := chain.State(11).LastValidators
	wire := map[int64][]byte{}
	for h := int64(1); h <= 12; h++ {
		pb, err := chain.LightBlock(h).ToProto()
		if err != nil {
			f.Fatal(err)
		}
		bz, err := pb.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		wire[h] = bz
	}
	f.Add(uint8(10), uint16(5), uint8(1))
	f.Add(uint8(10), uint16(300), uint8(0x80))
	f.Add(uint8(5), uint16(900), uint8(3))
	f.Add(uint8(9), uint16(0), uint8(0))
	f.Fuzz(func(t *testing.T, hb uint8, pos uint16, flip uint8) {
		h := int64(hb%10) + 2 // 2..11: a verified set above, the top at 11
		bz := append([]byte(nil), wire[h]...)
		bz[int(pos)%len(bz)] ^= flip
		var pb cmtproto.LightBlock
		if err := pb.Unmarshal(bz); err != nil {
			return
		}
		lb, err := ssproto.ToLightBlock(&ssproto.LightBlockResponse{LightBlock: &pb})
		if err != nil || lb == nil {
			return // refused on the wire
		}
		hf := facts[h]
		v := &backfillVerifier{chainID: chain.ChainID()}
		c := blockCheck{height: h, wantID: hf.blockID}
		if h == 11 {
			v.topVals = topVals.Copy()
		} else {
			v.upper = hf.upper.Copy()
			c.wantCommitHash = hf.commitHash
		}
		vals, _, err := v.check(c, lb, "peer")
		if err != nil {
			return
		}
		want := hf.want
		switch {
		case string(lb.Hash()) != string(want.Hash()):
			t.Fatalf("accepted header %X, the chain's is %X", lb.Hash(), want.Hash())
		case string(vals.Hash()) != string(want.ValidatorSet.Hash()):
			t.Fatal("accepted another validator set")
		case string(vals.ProposerPriorityHash()) != string(want.ValidatorSet.ProposerPriorityHash()):
			t.Fatal("accepted other proposer priorities")
		}
		if err := vals.VerifyCommitLight(chain.ChainID(), hf.blockID, h, lb.Commit); err != nil {
			t.Fatalf("accepted a commit that does not verify: %v", err)
		}
	})
}

// FuzzParamsQuorum decides on random votes: honest params, params forged
// in fields the hash does not cover, params with another hash, failures.
// Invariants: params are accepted only when every valid vote is identical,
// at least need sources agree, and they hash to the header's; a forgery
// is never accepted while an honest vote disagrees with it.
func FuzzParamsQuorum(f *testing.F) {
	honest := types.DefaultConsensusParams()
	forged := *honest
	forged.Evidence.MaxAgeNumBlocks++
	wrongHash := *honest
	wrongHash.Block.MaxGas = 12345
	want := honest.Hash()
	f.Add([]byte{0, 0}, uint8(2))
	f.Add([]byte{0, 1, 1}, uint8(2))
	f.Add([]byte{2, 0, 3}, uint8(1))
	f.Fuzz(func(t *testing.T, kinds []byte, need uint8) {
		if len(kinds) > 16 {
			kinds = kinds[:16]
		}
		var votes []paramsVote
		counts := map[int]int{}
		for i, k := range kinds {
			v := paramsVote{source: fmt.Sprintf("s%d", i)}
			switch k % 4 {
			case 0:
				v.params = *honest
			case 1:
				v.params = forged
			case 2:
				v.params = wrongHash
			case 3:
				v.err = fmt.Errorf("unavailable %d", binary.LittleEndian.Uint16([]byte{k, 0}))
			}
			counts[int(k%4)]++
			votes = append(votes, v)
		}
		n := int(need%3) + 1
		params, wrong, err := decideParams(7, want, votes, n)
		if len(wrong) != counts[2] {
			t.Fatalf("%d votes with the wrong hash, %d reported", counts[2], len(wrong))
		}
		if err != nil {
			if counts[0] >= n && counts[1] == 0 {
				t.Fatalf("refused %d identical honest votes: %v", counts[0], err)
			}
			return
		}
		switch {
		case counts[0] > 0 && counts[1] > 0:
			t.Fatal("accepted params while sources disagree")
		case string(params.Hash()) != string(want):
			t.Fatal("accepted params with another hash")
		case counts[0] < n && counts[1] < n:
			t.Fatalf("accepted with fewer than %d agreeing", n)
		}
	})
}
