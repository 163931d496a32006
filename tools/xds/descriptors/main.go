// Command descriptors writes the protobuf descriptors of the Envoy API types wasmproxy reads
// from xDS (and every file they import) as one gzipped FileDescriptorSet, taken from
// go-control-plane's generated code, so wasmproxy decodes resources as Envoy 1.40 defines them.
// Only what decoding needs is kept (no options but map entries', no services, no comments).
//
// Usage: go run ./descriptors OUT.bin.gz
package main

import (
	"compress/gzip"
	"fmt"
	"os"

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

// The types whose files are written, with everything they import: the resources, and
// the types a resource's Any may hold that wasmproxy reads.
var roots = []protoreflect.FullName{
	"envoy.config.listener.v3.Listener",
	"envoy.config.cluster.v3.Cluster",
	"envoy.config.route.v3.RouteConfiguration",
	"envoy.config.endpoint.v3.ClusterLoadAssignment",
	"envoy.config.core.v3.TypedExtensionConfig",
	"envoy.service.discovery.v3.DiscoveryResponse",
	"envoy.extensions.access_loggers.file.v3.FileAccessLog",
	"envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
	"envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
	"envoy.extensions.access_loggers.wasm.v3.WasmAccessLog",
	"envoy.extensions.filters.http.router.v3.Router",
	"envoy.extensions.filters.http.wasm.v3.Wasm",
	"envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
	"envoy.extensions.filters.network.wasm.v3.Wasm",
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	"envoy.extensions.transport_sockets.tls.v3.Secret",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
	"envoy.extensions.wasm.v3.WasmService",
	"udpa.type.v1.TypedStruct",
	"xds.type.v3.TypedStruct",
	"google.protobuf.Struct",
	"google.protobuf.StringValue",
	"google.protobuf.Empty",
}

// strip drops what decoding does not need (validation rules, annotations, comments, the
// services), keeping the one option that changes decoding: a map entry's.
func strip(f *descriptorpb.FileDescriptorProto) *descriptorpb.FileDescriptorProto {
	f.Options = nil
	f.SourceCodeInfo = nil
	f.Service = nil
	for _, m := range f.MessageType {
		stripMessage(m)
	}
	for _, e := range f.EnumType {
		stripEnum(e)
	}
	return f
}

func stripMessage(m *descriptorpb.DescriptorProto) {
	mapEntry := m.GetOptions().GetMapEntry()
	m.Options = nil
	if mapEntry {
		m.Options = &descriptorpb.MessageOptions{MapEntry: &mapEntry}
	}
	for _, f := range m.Field {
		f.Options = nil
	}
	for _, o := range m.OneofDecl {
		o.Options = nil
	}
	for _, n := range m.NestedType {
		stripMessage(n)
	}
	for _, e := range m.EnumType {
		stripEnum(e)
	}
}

func stripEnum(e *descriptorpb.EnumDescriptorProto) {
	e.Options = nil
	for _, v := range e.Value {
		v.Options = nil
	}
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
	for _, root := range roots {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(root)
		if err != nil {
			panic(fmt.Sprintf("%s: %v", root, err))
		}
		add(d.ParentFile())
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, f := range files {
		set.File = append(set.File, strip(protodesc.ToFileDescriptorProto(f)))
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
