// Command descriptors writes the protobuf descriptors of the Envoy API types wasmproxy reads
// from xDS (and every file they import) as one gzipped FileDescriptorSet, taken from
// go-control-plane's generated code, so wasmproxy decodes resources as Envoy 1.40 defines them.
//
// Usage: go run ./descriptors OUT.bin.gz
package main

import (
	"compress/gzip"
	"fmt"
	"os"
	"sort"

	_ "github.com/cncf/xds/go/udpa/type/v1"
	_ "github.com/cncf/xds/go/xds/type/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/wasm/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/wasm/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	_ "google.golang.org/protobuf/types/known/wrapperspb"
)

// The packages whose files are written, with everything they import.
var roots = []protoreflect.FullName{
	"envoy.config.listener.v3", "envoy.config.cluster.v3", "envoy.config.route.v3",
	"envoy.config.endpoint.v3", "envoy.service.discovery.v3",
	"envoy.extensions.access_loggers.file.v3", "envoy.extensions.access_loggers.stream.v3",
	"envoy.extensions.access_loggers.wasm.v3", "envoy.extensions.filters.http.router.v3",
	"envoy.extensions.filters.http.wasm.v3", "envoy.extensions.filters.listener.tls_inspector.v3",
	"envoy.extensions.filters.network.http_connection_manager.v3",
	"envoy.extensions.filters.network.tcp_proxy.v3", "envoy.extensions.filters.network.wasm.v3",
	"envoy.extensions.transport_sockets.tls.v3", "envoy.extensions.upstreams.http.v3",
	"envoy.extensions.wasm.v3", "udpa.type.v1", "xds.type.v3", "google.protobuf",
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: descriptors OUT.bin.gz")
		os.Exit(2)
	}
	seen := map[string]bool{}
	var files []protoreflect.FileDescriptor
	var add func(f protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		files = append(files, f)
	}
	var paths []string
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		for _, root := range roots {
			if f.Package() == root {
				paths = append(paths, f.Path())
			}
		}
		return true
	})
	sort.Strings(paths)
	for _, p := range paths {
		f, err := protoregistry.GlobalFiles.FindFileByPath(p)
		if err != nil {
			panic(err)
		}
		add(f)
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, f := range files {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	bytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		panic(err)
	}
	out, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	z, _ := gzip.NewWriterLevel(out, gzip.BestCompression)
	z.Header.ModTime = z.Header.ModTime.UTC()
	if _, err := z.Write(bytes); err != nil {
		panic(err)
	}
	if err := z.Close(); err != nil {
		panic(err)
	}
	if err := out.Close(); err != nil {
		panic(err)
	}
	fmt.Printf("%d files, %d bytes\n", len(files), len(bytes))
}
