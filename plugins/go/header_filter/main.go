// header_filter: a Proxy-Wasm HTTP filter built by the standard Go toolchain
// as a WASI reactor (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared).
//
// Plugin configuration (buffer PLUGIN_CONFIGURATION=7), JSON:
//
//	{"request_header": "x-user",
//	 "response_headers": [["x-wasm-filter", "go"], ["x-greeting", "hello"]]}
//
// Empty (or whitespace-only) configuration, or an absent field: request_header
// "user-agent", response_headers [["x-wasm-filter","go"],["x-greeting","hello"]].
// Invalid JSON, an unknown field, a wrong type, a null, or a pair that is not
// [name, value] makes proxy_on_configure log at ERROR
// "header_filter: bad configuration: <err>" and return 0 (plugins/rust/header_filter
// behaves the same, except that it says "rust" in x-wasm-filter).
//
// On request headers it reads the configured header ('-' if absent), counts
// the request in counter header_filter_requests and logs at DEBUG
// "header_filter: <header>=<value>". On response headers it adds the
// configured headers and "x-request-header: <value>".
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

type pluginConfig struct {
	RequestHeader   string
	ResponseHeaders [][2]string
	requestsMetric  uint32
}

func defaultConfig() *pluginConfig {
	return &pluginConfig{
		RequestHeader:   "user-agent",
		ResponseHeaders: [][2]string{{"x-wasm-filter", "go"}, {"x-greeting", "hello"}},
	}
}

// rawConfig is the JSON form. Pointers tell an absent field (default) from a
// present one; like serde (used by the Rust header_filter), null is rejected
// for a field, a pair or a pair element, and unknown fields are rejected.
type rawConfig struct {
	RequestHeader   json.RawMessage `json:"request_header"`
	ResponseHeaders json.RawMessage `json:"response_headers"`
}

func parseConfig(data []byte) (*pluginConfig, error) {
	cfg := defaultConfig()
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return cfg, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var raw *rawConfig
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("want a JSON object, got null")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the JSON object")
	}
	if raw.RequestHeader != nil {
		var name *string
		if err := json.Unmarshal(raw.RequestHeader, &name); err != nil {
			return nil, fmt.Errorf("request_header: %v", err)
		}
		if name == nil {
			return nil, fmt.Errorf("request_header: want a string, got null")
		}
		cfg.RequestHeader = *name
	}
	if raw.ResponseHeaders != nil {
		var pairs *[][]*string
		if err := json.Unmarshal(raw.ResponseHeaders, &pairs); err != nil {
			return nil, fmt.Errorf("response_headers: %v", err)
		}
		if pairs == nil {
			return nil, fmt.Errorf("response_headers: want a list, got null")
		}
		cfg.ResponseHeaders = make([][2]string, 0, len(*pairs))
		for i, pair := range *pairs {
			if len(pair) != 2 || pair[0] == nil || pair[1] == nil {
				return nil, fmt.Errorf("response_headers[%d]: want [name, value] (two strings)", i)
			}
			cfg.ResponseHeaders = append(cfg.ResponseHeaders, [2]string{*pair[0], *pair[1]})
		}
	}
	return cfg, nil
}

const requestsMetricName = "header_filter_requests"

var (
	// parentOf maps every live context id to its parent (0 for root contexts).
	parentOf = map[int32]int32{}
	// configs holds the configuration of each root context (set by on_configure).
	configs = map[int32]*pluginConfig{}
	// requestValue remembers, per HTTP context, the value read in on_request_headers.
	requestValue = map[int32]string{}
)

// configFor returns the configuration of the root context owning ctx.
func configFor(ctx int32) *pluginConfig {
	if cfg, ok := configs[parentOf[ctx]]; ok {
		return cfg
	}
	if cfg, ok := configs[ctx]; ok {
		return cfg
	}
	return defaultConfig()
}

//go:wasmexport proxy_abi_version_0_2_0
func proxyABIVersion0_2_0() {}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(ctx, parent int32) {
	parentOf[ctx] = parent
}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(ctx, vmConfigSize int32) int32 {
	logf(logInfo, "header_filter: go plugin started")
	return 1
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(ctx, size int32) int32 {
	var data []byte
	if size > 0 {
		b, st := getBufferBytes(bufferPluginConfiguration, 0, size)
		// NOT_FOUND (no plugin configuration) means defaults, as in the Rust SDK.
		if st != statusOK && st != statusNotFound {
			logf(logError, fmt.Sprintf("header_filter: cannot read configuration: status %d", st))
			return 0
		}
		data = b
	}
	cfg, err := parseConfig(data)
	if err != nil {
		logf(logError, "header_filter: bad configuration: "+err.Error())
		return 0
	}
	id, st := defineMetric(metricCounter, requestsMetricName)
	if st != statusOK {
		logf(logError, fmt.Sprintf("header_filter: cannot define metric %s: status %d", requestsMetricName, st))
		return 0
	}
	cfg.requestsMetric = id
	configs[ctx] = cfg
	return 1
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(ctx, numHeaders, endOfStream int32) int32 {
	cfg := configFor(ctx)
	value, st := getHeaderMapValue(mapHTTPRequestHeaders, cfg.RequestHeader)
	switch st {
	case statusOK:
	case statusNotFound:
		value = "-"
	default:
		logf(logWarn, fmt.Sprintf("header_filter: cannot read %s: status %d", cfg.RequestHeader, st))
		value = "-"
	}
	requestValue[ctx] = value
	if cfg, ok := configs[parentOf[ctx]]; ok {
		if st := incrementMetric(cfg.requestsMetric, 1); st != statusOK {
			logf(logWarn, fmt.Sprintf("header_filter: cannot increment %s: status %d", requestsMetricName, st))
		}
	}
	logf(logDebug, "header_filter: "+cfg.RequestHeader+"="+value)
	return actionContinue
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(ctx, numHeaders, endOfStream int32) int32 {
	cfg := configFor(ctx)
	for _, h := range cfg.ResponseHeaders {
		addHeaderMapValue(mapHTTPResponseHeaders, h[0], h[1])
	}
	value, ok := requestValue[ctx]
	if !ok {
		value = "-"
	}
	addHeaderMapValue(mapHTTPResponseHeaders, "x-request-header", value)
	return actionContinue
}

//go:wasmexport proxy_on_log
func proxyOnLog(ctx int32) {}

//go:wasmexport proxy_on_done
func proxyOnDone(ctx int32) int32 {
	return 1
}

//go:wasmexport proxy_on_delete
func proxyOnDelete(ctx int32) {
	delete(requestValue, ctx)
	delete(configs, ctx)
	delete(parentOf, ctx)
}

// main must exist for package main but does nothing: with -buildmode=c-shared
// the module is a WASI reactor; the host calls _initialize (runtime start-up,
// package init) and then the exported proxy_on_* callbacks.
func main() {}
