//go:build !unix

package progressui

import "os"

// ttyColumns is not implemented here: TermWidth falls back to $COLUMNS or
// DefaultWidth.
func ttyColumns(*os.File) int { return 0 }
