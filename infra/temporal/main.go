// Command temporal is Fleetflow's build of the Temporal dev server: `temporal server start-dev`
// with SQLite persistence, the subset of the `temporal` CLI that Fleetflow's tooling runs
// (control_plane/processes.py). See devserver.go for why it is not the CLI itself, and
// infra/scripts/temporal.py for how it is built and cached.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version names what this binary embeds; infra/scripts/temporal.py caches builds by it.
const version = "fleetflow-temporal-dev 1 (go.temporal.io/server, CLI v1.9.1 dev-server defaults)"

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	args := os.Args[1:]
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-v" || args[0] == "version") {
		fmt.Println(version)
		return
	}
	if len(args) < 2 || args[0] != "server" || args[1] != "start-dev" {
		fmt.Fprintln(os.Stderr, "usage: temporal server start-dev [--ip IP] [--port N] "+
			"[--db-filename FILE] [--namespace NS]... [--headless] [--log-level LEVEL]")
		os.Exit(2)
	}
	if err := startDev(args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "temporal: %v\n", err)
		os.Exit(1)
	}
}

func startDev(args []string) error {
	fs := flag.NewFlagSet("temporal server start-dev", flag.ContinueOnError)
	var namespaces, pragmas, dynamic repeated
	ip := fs.String("ip", localhost, "IP address the frontend binds")
	port := fs.Int("port", 7233, "frontend gRPC port")
	fs.IntVar(port, "p", 7233, "shorthand for --port")
	httpPort := fs.Int("http-port", 0, "frontend HTTP API port (default: a free port)")
	metricsPort := fs.Int("metrics-port", 0, "Prometheus metrics port (default: none)")
	dbFile := fs.String("db-filename", "", "SQLite file to persist to (default: in memory)")
	fs.StringVar(dbFile, "f", "", "shorthand for --db-filename")
	logLevel := fs.String("log-level", "warn", "debug, info, warn, error or never")
	fs.Var(&namespaces, "namespace", "another namespace to register (repeatable)")
	fs.Var(&namespaces, "n", "shorthand for --namespace")
	fs.Var(&pragmas, "sqlite-pragma", "KEY=VALUE SQLite pragma (repeatable)")
	fs.Var(&dynamic, "dynamic-config-value", "KEY=JSON dynamic config value (repeatable)")
	// Accepted for compatibility with the CLI; this build has no web UI.
	fs.Bool("headless", true, "no web UI (this build never serves one)")
	fs.Int("ui-port", 0, "ignored: no web UI in this build")
	fs.String("ui-ip", "", "ignored: no web UI in this build")
	fs.String("log-format", "text", "ignored: logs are text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *ip == "localhost" {
		*ip = localhost
	}

	opts := startOptions{
		FrontendIP:             *ip,
		FrontendPort:           *port,
		FrontendHTTPPort:       *httpPort,
		MetricsPort:            *metricsPort,
		Namespaces:             append([]string{"default"}, namespaces...),
		ClusterID:              randomID(),
		MasterClusterName:      "active",
		CurrentClusterName:     "active",
		InitialFailoverVersion: 1,
		DatabaseFile:           *dbFile,
		SqlitePragmas:          map[string]string{},
		DynamicConfigValues:    map[string]any{},
	}
	if *logLevel == "never" {
		opts.LogLevel = 100
	} else if err := opts.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("invalid log level %q: %w", *logLevel, err)
	}
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: opts.LogLevel}))
	for _, p := range pragmas {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("invalid pragma %q: want KEY=VALUE", p)
		}
		opts.SqlitePragmas[k] = v
	}
	for _, d := range dynamic {
		k, raw, ok := strings.Cut(d, "=")
		if !ok {
			return fmt.Errorf("invalid dynamic config value %q: want KEY=JSON", d)
		}
		value, err := parseJSONValue(raw)
		if err != nil {
			return fmt.Errorf("invalid dynamic config value for %q: %w", k, err)
		}
		opts.DynamicConfigValues[k] = value
	}
	for k, v := range defaultDynamicConfigValues {
		if _, ok := opts.DynamicConfigValues[k]; !ok {
			opts.DynamicConfigValues[k] = v
		}
	}
	if err := checkPortFree(opts.FrontendIP, opts.FrontendPort); err != nil {
		return fmt.Errorf("can't use frontend port %d: %w", opts.FrontendPort, err)
	}

	server, err := startServer(opts)
	if err != nil {
		return fmt.Errorf("failed starting server: %w", err)
	}
	persistence := "in-memory"
	if *dbFile != "" {
		persistence = *dbFile
	}
	fmt.Printf("%s\n%-21s %v:%v\n%-21s %v\n", version, "Temporal Server:", *ip, *port,
		"Temporal Persistence:", persistence)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Stop()
	return nil
}

// parseJSONValue decodes a dynamic config value; whole numbers become int, which is what the
// server's dynamic config expects.
func parseJSONValue(raw string) (any, error) {
	decoder := json.NewDecoder(strings.NewReader(raw))
	decoder.UseNumber()
	var value any
	if err := decoder.Decode(&value); err != nil {
		return nil, err
	}
	if number, ok := value.(json.Number); ok {
		if i, err := number.Int64(); err == nil {
			return int(i), nil
		}
		return number.Float64()
	}
	return value, nil
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
