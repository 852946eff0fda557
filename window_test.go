package statesync

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWindowAIMD(t *testing.T) {
	w := newWindow(2, 4)
	require.False(t, w.full(1))
	require.True(t, w.full(2))
	w.grow()
	w.grow()
	w.grow()
	require.Equal(t, 4, w.size, "grows by one up to the ceiling")
	w.cut()
	require.Equal(t, 2, w.size)
	w.cut()
	w.cut()
	require.Equal(t, 1, w.size, "never below one")
	w.open()
	require.Equal(t, 4, w.size)

	require.Equal(t, 3, newWindow(0, 3).size, "no start: the ceiling")
	require.Equal(t, 3, newWindow(9, 3).size, "start above the ceiling: the ceiling")
	require.Equal(t, window{size: 1, ceiling: 1}, newWindow(5, 0), "a ceiling below one is one")
}
