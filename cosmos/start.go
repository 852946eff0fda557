package cosmos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cosmos/cosmos-sdk/client"
	"github.com/cosmos/cosmos-sdk/server"
	serverconfig "github.com/cosmos/cosmos-sdk/server/config"
	servertypes "github.com/cosmos/cosmos-sdk/server/types"
	"github.com/cosmos/cosmos-sdk/telemetry"
	"golang.org/x/sync/errgroup"

	"github.com/statesync/statesync/node"
)

// Errors returned by the start command handler.
var (
	// ErrUnsupportedMode: a start mode the handler does not reproduce
	// (--with-comet=false, --grpc-only, in-place testnet); the message says
	// what to use instead.
	ErrUnsupportedMode = errors.New("cosmos: start mode not supported with the statesync start handler")
	// ErrConfig: app.toml or config.toml is invalid; wraps the cause.
	ErrConfig = errors.New("cosmos: invalid configuration")
)

// flagGRPCOnly is the SDK's (unexported) name of the --grpc-only flag.
const flagGRPCOnly = "grpc-only"

// Options customise the handler. The zero value is what a chain needs.
type Options struct {
	// Context, if set, ends the node and the servers when done, as
	// SIGINT/SIGTERM do (for programs that run the start command in
	// process, such as the demo). Default: context.Background().
	Context context.Context
	// Started, if set, is called once the node has started, before the
	// gRPC and API servers (e.g. to follow Node.Reactor().Subscribe()). It
	// must not block.
	Started func(n *node.Node)
}

// StartCmdOptions returns the SDK start command options that run the node
// with this library's state sync. Pass them to
// server.AddCommandsWithStartCmdOptions or server.StartCmdWithOptions.
func StartCmdOptions() server.StartCmdOptions {
	return server.StartCmdOptions{StartCommandHandler: NewStartCommandHandler(Options{})}
}

// StartCommandHandler is the handler with default Options; see
// NewStartCommandHandler.
func StartCommandHandler(svrCtx *server.Context, clientCtx client.Context, appCreator servertypes.AppCreator,
	withComet bool, opts server.StartCmdOptions,
) error {
	return NewStartCommandHandler(Options{})(svrCtx, clientCtx, appCreator, withComet, opts)
}

// NewStartCommandHandler returns a server.StartCmdOptions.StartCommandHandler:
// it creates the app, runs it under a CometBFT node built by package node
// (our Reactor, Sync at boot, handover to block sync), starts the SDK's
// gRPC and API servers as app.toml asks, and returns when SIGINT/SIGTERM
// arrives, or when the node stops itself (a failed state sync: the error is
// returned) or a server fails.
func NewStartCommandHandler(o Options) func(*server.Context, client.Context, servertypes.AppCreator, bool,
	server.StartCmdOptions) error {
	return func(svrCtx *server.Context, clientCtx client.Context, appCreator servertypes.AppCreator,
		withComet bool, opts server.StartCmdOptions,
	) error {
		if err := checkMode(svrCtx, withComet); err != nil {
			return err
		}
		svrCfg, err := serverconfig.GetConfig(svrCtx.Viper)
		if err == nil {
			err = svrCfg.ValidateBasic()
		}
		if err != nil {
			return fmt.Errorf("%w: app.toml: %w", ErrConfig, err)
		}
		otelFile := filepath.Join(clientCtx.HomeDir, "config", telemetry.OtelFileName)
		if err := telemetry.InitializeOpenTelemetry(otelFile); err != nil {
			return fmt.Errorf("initializing OpenTelemetry: %w", err)
		}
		defer shutdownTelemetry(svrCtx)

		app, err := openApp(svrCtx, appCreator, opts)
		if err != nil {
			return err
		}
		defer func() {
			if err := app.Close(); err != nil {
				svrCtx.Logger.Error("closing the app", "err", err)
			}
		}()
		return run(svrCtx, svrCfg, clientCtx, app, opts, o)
	}
}

func checkMode(svrCtx *server.Context, withComet bool) error {
	switch {
	case !withComet:
		return fmt.Errorf("%w: --with-comet=false (the app as an ABCI server): run the SDK's stock start "+
			"that way and statesyncd start --proxy_app <address> as the node", ErrUnsupportedMode)
	case svrCtx.Viper.GetBool(flagGRPCOnly):
		return fmt.Errorf("%w: --%s: use the SDK's stock start command", ErrUnsupportedMode, flagGRPCOnly)
	}
	if isTestnet, ok := svrCtx.Viper.Get(server.KeyIsTestnet).(bool); ok && isTestnet {
		return fmt.Errorf("%w: in-place testnet: use the SDK's in-place-testnet command", ErrUnsupportedMode)
	}
	return nil
}

// openApp opens the app's DB and creates the app, as the SDK's startApp.
func openApp(svrCtx *server.Context, appCreator servertypes.AppCreator, opts server.StartCmdOptions) (servertypes.Application, error) {
	if opts.DBOpener == nil {
		return nil, fmt.Errorf("%w: StartCmdOptions.DBOpener is nil (use server.StartCmdWithOptions, which sets it)", ErrConfig)
	}
	db, err := opts.DBOpener(svrCtx.Config.RootDir, server.GetAppDBBackend(svrCtx.Viper))
	if err != nil {
		return nil, fmt.Errorf("opening the app DB: %w", err)
	}
	return appCreator(svrCtx.Logger, db, svrCtx.Viper), nil
}

func shutdownTelemetry(svrCtx *server.Context) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := telemetry.Shutdown(ctx); err != nil {
		svrCtx.Logger.Error("shutting down telemetry", "err", err)
	}
}

// run starts the node and the servers and waits for the end.
func run(svrCtx *server.Context, svrCfg serverconfig.Config, clientCtx client.Context, app servertypes.Application,
	opts server.StartCmdOptions, o Options,
) error {
	metrics, err := telemetry.New(svrCfg.Telemetry) //nolint:staticcheck // as the SDK's start does
	if err != nil {
		return fmt.Errorf("starting telemetry: %w", err)
	}
	parent := o.Context
	if parent == nil {
		parent = context.Background()
	}
	sigCtx, stopSignals := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	g, ctx := errgroup.WithContext(sigCtx)

	svrCtx.Logger.Info("starting node with ABCI CometBFT in-process and the statesync library's state sync")
	n, err := newNode(svrCtx, app)
	if err != nil {
		return err
	}
	if err := n.Start(); err != nil {
		return fmt.Errorf("starting the node: %w", err)
	}
	// The node's owner: stops it when the group ends, ends the group when
	// the node stops itself.
	g.Go(func() error { return superviseNode(ctx, svrCtx, n) })
	if o.Started != nil {
		o.Started(n)
	}
	if n.StateSyncing() {
		g.Go(func() error { logProgress(ctx, svrCtx, n); return nil })
	}

	if err := startServers(ctx, g, svrCtx, svrCfg, clientCtx, app, n, metrics, opts); err != nil {
		stopSignals() // ends the group: the node is stopped by its supervisor
		_ = g.Wait()
		return err
	}
	return g.Wait()
}

// superviseNode stops n when ctx ends, and returns n's error when n stops
// itself first (a failed state sync).
func superviseNode(ctx context.Context, svrCtx *server.Context, n *node.Node) error {
	select {
	case <-ctx.Done():
		svrCtx.Logger.Info("stopping the node")
		if err := n.Stop(); err != nil {
			svrCtx.Logger.Error("stopping the node", "err", err)
		}
		return nil
	case <-n.Done():
		if err := n.Err(); err != nil {
			return err
		}
		return errors.New("cosmos: the node stopped")
	}
}
