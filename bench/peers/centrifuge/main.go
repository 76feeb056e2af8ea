// Command centrifuge-peer is a benchmark peer for confab-bench: a minimal WebSocket
// server built on the Centrifuge library 0.15 (the library inside Centrifugo v2), from
// Debian's golang-github-centrifugal-centrifuge-dev and its packaged dependencies, built
// in GOPATH mode by bench/peers/peers.sh (no sources fetched).
//
//	centrifuge-peer -addr 127.0.0.1:8711 -cert server.pem -key server.key
//
// It serves Centrifuge's client protocol v1 (JSON by default, ?format=protobuf for
// protobuf) over TLS at /connection/websocket, with:
//   - the in-memory broker and presence manager (the default engine): nothing is durable,
//     history lives in process memory only and is lost on restart;
//   - anonymous connections: every connect is accepted, with user ID "anon-N", or
//     "presence-N" when the connect command's data is {"join_leave":true};
//   - subscriptions to any channel, with presence and history/recovery on: each channel
//     keeps its last 1000 publications for 5 minutes (history meta for 10 minutes), and a
//     subscribe with "recover":true replays what was missed; join/leave pushes are off,
//     except for the subscriptions of "presence-N" users: their subscribe and disconnect
//     are pushed to every subscriber of the channel (Centrifuge's presence events, what
//     confab-bench presence --target centrifuge counts);
//   - client publishes to any channel accepted (subscribed or not), stored in that
//     history; publications carry no client info unless -client-info is given.
//
// See bench/peers/README.md for the wire protocol.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/centrifugal/centrifuge"
)

// joinLeavePrefix marks the users whose subscriptions announce themselves.
const joinLeavePrefix = "presence-"

const (
	historySize = 1000
	historyTTL  = 5 * time.Minute
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8711", "TLS listen address")
	cert := flag.String("cert", "server.pem", "PEM certificate chain of the server")
	key := flag.String("key", "server.key", "PEM private key of the server")
	clientInfo := flag.Bool("client-info", false, "attach the publisher's client info to publications")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()

	cfg := centrifuge.DefaultConfig
	cfg.Name = "confab-bench-peer"
	cfg.Version = "centrifuge-0.15"
	cfg.LogLevel = centrifuge.LogLevelInfo
	if *verbose {
		cfg.LogLevel = centrifuge.LogLevelDebug
	}
	cfg.LogHandler = func(e centrifuge.LogEntry) { log.Printf("%s: %v", e.Message, e.Fields) }
	// No per-client channel cap beyond what a benchmark could need.
	cfg.ClientChannelLimit = 1024

	node, err := centrifuge.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	broker, err := centrifuge.NewMemoryBroker(node, centrifuge.MemoryBrokerConfig{
		HistoryMetaTTL: 10 * time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	node.SetBroker(broker)

	var users uint64
	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		id := atomic.AddUint64(&users, 1)
		prefix := "anon-"
		var data struct {
			JoinLeave bool `json:"join_leave"`
		}
		if len(e.Data) > 0 && json.Unmarshal(e.Data, &data) == nil && data.JoinLeave {
			prefix = joinLeavePrefix
		}
		return centrifuge.ConnectReply{
			Credentials: &centrifuge.Credentials{UserID: prefix + strconv.FormatUint(id, 10)},
		}, nil
	})

	node.OnConnect(func(client *centrifuge.Client) {
		client.OnSubscribe(func(e centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			cb(centrifuge.SubscribeReply{Options: centrifuge.SubscribeOptions{
				Presence:  true,
				Recover:   true,
				JoinLeave: strings.HasPrefix(client.UserID(), joinLeavePrefix),
			}}, nil)
		})
		client.OnPublish(func(e centrifuge.PublishEvent, cb centrifuge.PublishCallback) {
			opts := centrifuge.PublishOptions{HistorySize: historySize, HistoryTTL: historyTTL}
			if *clientInfo {
				opts.ClientInfo = e.ClientInfo
			}
			// A nil Result makes the library publish with these options and reply {}.
			cb(centrifuge.PublishReply{Options: opts}, nil)
		})
		client.OnPresence(func(e centrifuge.PresenceEvent, cb centrifuge.PresenceCallback) {
			cb(centrifuge.PresenceReply{}, nil)
		})
		client.OnPresenceStats(func(e centrifuge.PresenceStatsEvent, cb centrifuge.PresenceStatsCallback) {
			cb(centrifuge.PresenceStatsReply{}, nil)
		})
		client.OnHistory(func(e centrifuge.HistoryEvent, cb centrifuge.HistoryCallback) {
			cb(centrifuge.HistoryReply{}, nil)
		})
	})

	if err := node.Run(); err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{
		ReadBufferSize:     1024,
		UseWriteBufferPool: true,
		// Benchmark clients send no Origin; accept any anyway.
		CheckOrigin: func(*http.Request) bool { return true },
	}))
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })

	srv := &http.Server{
		Addr:      *addr,
		Handler:   mux,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		// HTTP/1.1 only: WebSocket upgrades need it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}

	sigCh := make(chan os.Signal, 1)
	signal.Notify(sigCh, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigCh
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
		_ = srv.Shutdown(ctx)
	}()

	log.Printf("centrifuge 0.15 peer listening on https://%s/connection/websocket", *addr)
	if err := srv.ListenAndServeTLS(*cert, *key); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
	log.Print("bye")
}
