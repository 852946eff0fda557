package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHelpPrintsUsage: -h prints a usage line with the program's name and
// every flag, and is not an error for main (it exits 0).
func TestHelpPrintsUsage(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var out bytes.Buffer
		_, err := parseFlags("demo", []string{arg}, &out)
		require.ErrorIs(t, err, flag.ErrHelp)
		require.True(t, strings.HasPrefix(out.String(), "Usage: demo [flags]\n"), "%q", out.String())
		for _, f := range []string{"-validators", "-full-nodes", "-size", "-chunk", "-snapshot-interval",
			"-follow", "-rate", "-plain", "-v", "-timeout"} {
			require.Contains(t, out.String(), "  "+f, "the usage does not list %s", f)
		}
		require.Contains(t, out.String(), "make demo ARGS=")
	}
}

func TestFlagsDefaultsAndValues(t *testing.T) {
	var out bytes.Buffer
	o, err := parseFlags("demo", nil, &out)
	require.NoError(t, err)
	require.Equal(t, options{validators: 3, fullNodes: 2, sizeMiB: 256, chunkKiB: 1024, interval: 10, follow: 5,
		timeout: 5 * time.Minute}, o)

	o, err = parseFlags("demo", strings.Fields("-validators 4 -full-nodes 0 -size 64 -chunk 512 "+
		"-snapshot-interval 5 -follow 2 -rate 1000000 -plain -v -timeout 90s"), &out)
	require.NoError(t, err)
	require.Equal(t, options{validators: 4, fullNodes: 0, sizeMiB: 64, chunkKiB: 512, interval: 5, follow: 2,
		rate: 1_000_000, plain: true, verbose: true, timeout: 90 * time.Second}, o)
	require.Empty(t, out.String())
}

// TestFlagsRejectBadValues: each bad command line fails, and what is
// printed names the offending flag and value, followed by the usage.
func TestFlagsRejectBadValues(t *testing.T) {
	for args, want := range map[string]string{
		"-size 0":                     "-size 0",
		"-chunk -1":                   "-chunk -1",
		"-validators 0":               "-validators 0",
		"-validators 1 -full-nodes 0": "at least 2 serving nodes",
		"-full-nodes -1":              "-full-nodes -1",
		"-snapshot-interval 0":        "-snapshot-interval 0",
		"-follow -1":                  "-follow -1",
		"-rate -5":                    "-rate -5",
		"-timeout 0s":                 "-timeout 0s",
		"-timeout 5":                  `invalid value "5" for flag -timeout`,
		"-size big":                   `invalid value "big" for flag -size`,
		"-nosuch":                     "flag provided but not defined: -nosuch",
		"-plain extra":                `unexpected arguments ["extra"]`,
	} {
		var out bytes.Buffer
		_, err := parseFlags("demo", strings.Fields(args), &out)
		require.Error(t, err, args)
		require.False(t, errors.Is(err, flag.ErrHelp), args)
		require.Contains(t, out.String(), want, args)
		require.Contains(t, out.String(), "Usage: demo [flags]", args)
	}
}
