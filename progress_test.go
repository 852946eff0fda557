package statesync

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A subscriber that does not read loses chunk-level updates but never a
// phase change.
func TestProgressNeverDropsPhaseChanges(t *testing.T) {
	h := newProgressHub()
	sub, cancel := h.subscribe()
	defer cancel()
	h.update(func(p *Progress) { p.Phase = PhaseRestore })
	for i := 0; i < 1000; i++ {
		h.update(func(p *Progress) { p.ChunksFetched++ })
	}
	h.update(func(p *Progress) { p.Phase = PhaseBootstrap })
	h.update(func(p *Progress) { p.Phase = PhaseDone })
	var phases []Phase
	for len(sub) > 0 {
		p := <-sub
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}
	require.Equal(t, []Phase{PhaseIdle, PhaseRestore, PhaseBootstrap, PhaseDone}, phases)
	require.Equal(t, uint32(1000), h.current().ChunksFetched)
}
