//go:build unix

package progressui

import (
	"os"

	"golang.org/x/sys/unix"
)

// ttyColumns returns f's terminal width, or 0 if f is not a terminal.
func ttyColumns(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}
