// Package e2e proves the cosmos module on a real Cosmos SDK v0.55 network:
// the example chain's validators run as child processes on loopback (built
// once by TestMain), and fresh nodes join them through this library or
// through CometBFT's built-in state sync. The package imports no SDK code:
// it drives the binaries, CometBFT's RPC and the SDK's gRPC over the wire.
package e2e
