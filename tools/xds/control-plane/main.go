// Command control-plane is the xDS control plane wasmproxy's tests (and conformance runs)
// drive proxies with: go-control-plane's server and snapshot cache, serving ADS and the
// per-type discovery services (CDS, EDS, LDS, RDS; state of the world and delta) on a
// loopback port, with a small HTTP API for the tests:
//
//	PUT  /snapshot?node=ID   body {"version": "v1", "resources": [Any as proto JSON, ...]}
//	GET  /requests           every discovery request received so far, as JSON lines
//	GET  /streams            how many ADS streams are open now
//
// It prints "xds=PORT api=PORT" on its first line of output once it listens.
//
// A NACK is not answered with the same snapshot again (go-control-plane's cache would, and
// the proxy would NACK it again, for ever): the watch waits for the next snapshot, as
// Istio's and Contour's control planes do.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// Every type a resource's Any may hold must be linked in for protojson to read it.
	_ "github.com/cncf/xds/go/udpa/type/v1"
	_ "github.com/cncf/xds/go/xds/type/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/wasm/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	_ "google.golang.org/protobuf/types/known/structpb"
	_ "google.golang.org/protobuf/types/known/wrapperspb"
)

// A discovery request as the tests read it back.
type request struct {
	Delta         bool     `json:"delta"`
	Node          string   `json:"node,omitempty"`
	TypeURL       string   `json:"type_url"`
	VersionInfo   string   `json:"version_info"`
	ResponseNonce string   `json:"response_nonce"`
	ResourceNames []string `json:"resource_names"`
	Unsubscribe   []string `json:"unsubscribe,omitempty"`
	// Delta: the versions held, on a stream's first request of a type.
	InitialVersions map[string]string `json:"initial_versions,omitempty"`
	ErrorDetail     string            `json:"error_detail,omitempty"`
}

type recorder struct {
	mu       sync.Mutex
	requests []request
	open     atomic.Int64
}

func (r *recorder) add(q request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, q)
}

func (r *recorder) callbacks() server.CallbackFuncs {
	return server.CallbackFuncs{
		StreamOpenFunc: func(context.Context, int64, string) error { r.open.Add(1); return nil },
		StreamClosedFunc: func(int64, *core.Node) {
			r.open.Add(-1)
		},
		StreamRequestFunc: func(_ int64, q *discovery.DiscoveryRequest) error {
			q2 := request{TypeURL: q.GetTypeUrl(), VersionInfo: q.GetVersionInfo(),
				ResponseNonce: q.GetResponseNonce(), ResourceNames: q.GetResourceNames(), Node: q.GetNode().GetId()}
			if q.GetErrorDetail() != nil {
				q2.ErrorDetail = q.GetErrorDetail().GetMessage()
			}
			r.add(q2)
			return nil
		},
		DeltaStreamOpenFunc: func(context.Context, int64, string) error { r.open.Add(1); return nil },
		DeltaStreamClosedFunc: func(int64, *core.Node) {
			r.open.Add(-1)
		},
		StreamDeltaRequestFunc: func(_ int64, q *discovery.DeltaDiscoveryRequest) error {
			q2 := request{Delta: true, TypeURL: q.GetTypeUrl(), ResponseNonce: q.GetResponseNonce(),
				ResourceNames: q.GetResourceNamesSubscribe(), Unsubscribe: q.GetResourceNamesUnsubscribe(),
				InitialVersions: q.GetInitialResourceVersions(), Node: q.GetNode().GetId()}
			if q.GetErrorDetail() != nil {
				q2.ErrorDetail = q.GetErrorDetail().GetMessage()
			}
			r.add(q2)
			return nil
		},
	}
}

// logs is go-control-plane's logger on a standard one (nil: silent).
type logs struct{ *log.Logger }

func (l logs) Debugf(format string, args ...any) { l.printf(format, args...) }
func (l logs) Infof(format string, args ...any)  { l.printf(format, args...) }
func (l logs) Warnf(format string, args ...any)  { l.printf(format, args...) }
func (l logs) Errorf(format string, args ...any) { l.printf(format, args...) }

func (l logs) printf(format string, args ...any) {
	if l.Logger != nil {
		l.Logger.Printf(format, args...)
	}
}

// parkingCache answers a NACK only when the snapshot changes.
type parkingCache struct {
	cache.SnapshotCache
}

func (c parkingCache) CreateWatch(q *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	if q.GetErrorDetail() != nil {
		if snapshot, err := c.GetSnapshot(q.GetNode().GetId()); err == nil {
			q = proto.Clone(q).(*cache.Request)
			q.VersionInfo = snapshot.GetVersion(q.GetTypeUrl())
		}
	}
	return c.SnapshotCache.CreateWatch(q, sub, out)
}

type snapshotBody struct {
	Version   string            `json:"version"`
	Resources []json.RawMessage `json:"resources"`
}

func main() {
	xdsPort := flag.Int("xds-port", 0, "the port ADS listens on (0: any)")
	verbose := flag.Bool("v", false, "log what the cache does, on stderr")
	flag.Parse()
	var logger logs
	if *verbose {
		logger = logs{log.New(os.Stderr, "", log.Lmicroseconds)}
	}
	snapshots := cache.NewSnapshotCache(true, cache.IDHash{}, logger)
	rec := &recorder{}
	srv := server.NewServer(context.Background(), parkingCache{snapshots}, rec.callbacks())
	grpcServer := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	discovery.RegisterAggregatedDiscoveryServiceServer(grpcServer, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(grpcServer, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(grpcServer, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(grpcServer, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(grpcServer, srv)
	xdsListener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *xdsPort))
	if err != nil {
		log.Fatal(err)
	}
	apiListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /snapshot", func(w http.ResponseWriter, q *http.Request) {
		if err := setSnapshot(snapshots, q.URL.Query().Get("node"), q.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /requests", func(w http.ResponseWriter, _ *http.Request) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		enc := json.NewEncoder(w)
		for _, q := range rec.requests {
			_ = enc.Encode(q)
		}
	})
	mux.HandleFunc("GET /streams", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%d\n", rec.open.Load())
	})
	go func() { log.Fatal(http.Serve(apiListener, mux)) }()
	fmt.Printf("xds=%d api=%d\n", xdsListener.Addr().(*net.TCPAddr).Port, apiListener.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	log.Fatal(grpcServer.Serve(xdsListener))
}

// setSnapshot reads a snapshot body and serves it to the node.
func setSnapshot(snapshots cache.SnapshotCache, node string, body io.Reader) error {
	var parsed snapshotBody
	if err := json.NewDecoder(body).Decode(&parsed); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	byType := map[resource.Type][]types.Resource{}
	for i, raw := range parsed.Resources {
		var any anypb.Any
		if err := protojson.Unmarshal(raw, &any); err != nil {
			return fmt.Errorf("resources[%d]: %w", i, err)
		}
		message, err := any.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("resources[%d]: %w", i, err)
		}
		byType[any.GetTypeUrl()] = append(byType[any.GetTypeUrl()], message)
	}
	snapshot, err := cache.NewSnapshot(parsed.Version, byType)
	if err != nil {
		return err
	}
	return snapshots.SetSnapshot(context.Background(), node, snapshot)
}
